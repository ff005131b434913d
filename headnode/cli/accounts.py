"""``sdc account create|list|passwd``: tenants and operators."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from headnode.cli.context import SdcGroup, client, json_option
from headnode.cli.output import console, emit, fmt_time, render_object


@click.group(cls=SdcGroup)
def account() -> None:
    """Accounts: tenants and operators."""


@account.command("create")
@click.argument("login")
@click.option("--email", required=True)
@click.option("--operator", is_flag=True, help="May use the operator API.")
@json_option
def account_create(login: str, email: str, operator: bool) -> None:
    emit(client().post("/ops/accounts", {"login": login, "email": email,
                                         "operator": operator}), render_object)


@account.command("passwd")
@click.argument("login")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (its first line) instead of "
                   "asking for it twice.")
@click.option("--remove", is_flag=True,
              help="Remove the password: the account can no longer sign in to the console.")
def account_passwd(login: str, password_stdin: bool, remove: bool) -> None:
    """Set LOGIN's console password (12 to 1024 characters)."""
    path = f"/ops/accounts/{quote(login, safe='')}/password"
    if remove:
        client().delete(path)
        click.echo(f"password of {login} removed")
        return
    client().put(path, {"password": read_password(password_stdin)})
    click.echo(f"password of {login} set")


def read_password(from_stdin: bool) -> str:
    """The new password, never echoed: the first line of stdin, else asked twice."""
    if from_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    return str(click.prompt("New password", hide_input=True, confirmation_prompt=True))


@account.command("list")
@json_option
def account_list() -> None:
    emit(client().get("/ops/accounts"), render_accounts)


def render_accounts(accounts: list[dict[str, Any]]) -> None:
    table = Table("uuid", "login", "email", "operator", "created")
    for acct in accounts:
        table.add_row(acct.get("uuid", ""), acct.get("login", ""), acct.get("email", ""),
                      "yes" if acct.get("operator") else "no", fmt_time(acct.get("created_at")))
    console().print(table)
