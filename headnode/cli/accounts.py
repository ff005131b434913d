"""``sdc account create|list``: tenants and operators."""

from __future__ import annotations

from typing import Any

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
