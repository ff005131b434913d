"""``sdc config``: every SDC_* setting of the head node and the agent, with its default,
its value here and its help."""

from __future__ import annotations

import json
import os

import click
from rich.table import Table

from headnode.cli.context import state_of
from headnode.cli.output import console, redact_url
from headnode.config import HeadnodeSettings


@click.command()
def config() -> None:
    """Every SDC_* setting (head node, then agent): default, current value and help."""
    rows = settings_rows()
    if state_of(click.get_current_context()).as_json:
        click.echo(json.dumps([{"process": p, "name": n, "default": d, "value": v, "help": h}
                               for p, n, d, v, h in rows], indent=2))
        return
    table = Table("process", "variable", "default", "set to", "help")
    for process, name, default, value, text in rows:
        table.add_row(process, name, default, "" if value is None else value, text)
    console().print(table)


def settings_rows() -> list[tuple[str, str, str, str | None, str]]:
    from schemas.settings import describe

    classes: list[tuple[str, type]] = [("headnode", HeadnodeSettings)]
    try:
        from agents.config import AgentSettings

        classes.append(("agent", AgentSettings))
    except ImportError:  # the agent's settings are extra information, not a requirement
        pass
    return [(process, name, default, shown_value(name), text)
            for process, cls in classes for name, default, text in describe(cls)]


def shown_value(name: str) -> str | None:
    """The variable's value as safe to print: secrets only say that they are set."""
    value = os.environ.get(name)
    if value is None:
        return None
    if "TOKEN" in name or "PASSWORD" in name:
        return "(set)"
    return redact_url(value) if "://" in value else value
