"""``sdc``: the operator's command line (head-node processes and the operator API).

This module holds only the root group and where each command group lives (each in a module
of its own, imported when used); what they share is in :mod:`headnode.cli.context` and
:mod:`headnode.cli.output`. No command module imports this one."""

from __future__ import annotations

import importlib

import click

from headnode.cli.context import CliState, SdcGroup

# Every command group is imported only when it is used (or listed): `sdc vm list` does not
# pay for SQLAlchemy and paramiko, nor `sdc agent run` on a compute node for the head
# node's commands; and `sdc --help` works while one of them cannot load.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "account": ("headnode.cli.accounts", "account"),
    "agent": ("agents.cli", "agent"),
    "capacity": ("headnode.cli.placement", "capacity"),
    "config": ("headnode.cli.config", "config"),
    "doctor": ("headnode.cli.doctor", "doctor"),
    "headnode": ("headnode.cli.headnode", "headnode"),
    "image": ("headnode.cli.images", "image"),
    "job": ("headnode.cli.jobs", "job"),
    "key": ("headnode.cli.networks", "key"),
    "mockcloud": ("agents.cli", "mockcloud"),
    "network": ("headnode.cli.networks", "network"),
    "package": ("headnode.cli.packages", "package"),
    "placement": ("headnode.cli.placement", "placement"),
    "server": ("headnode.cli.groups", "server_group"),
    "up": ("headnode.cli.up", "up"),
    "vm": ("headnode.cli.groups", "vm_group"),
}


class RootGroup(SdcGroup):
    """The ``sdc`` group: every command of :data:`LAZY_COMMANDS`, loaded when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = load_lazy_command(cmd_name)
        return command


def load_lazy_command(name: str) -> click.Command:
    module_name, attr = LAZY_COMMANDS[name]
    try:
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command) and callable(command):
            command = command()  # a group put together from several modules
    except (ImportError, AttributeError) as exc:
        return unavailable_command(name, f"{module_name}.{attr}", exc)
    if not isinstance(command, click.Command):
        return unavailable_command(name, f"{module_name}.{attr}", TypeError("not a command"))
    return command


def unavailable_command(name: str, where: str, exc: Exception) -> click.Command:
    def fail() -> None:
        click.echo(f"`sdc {name}` is not available: cannot load {where} ({exc})", err=True)
        raise click.exceptions.Exit(1)

    return click.Command(name, callback=fail, short_help=f"(unavailable: {where})",
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


@click.group(cls=RootGroup, name="sdc")
@click.option("--api-url", envvar="SDC_API_URL", metavar="URL",
              help="Operator API base URL [env SDC_API_URL; default http://<SDC_API_BIND>, "
                   "https:// with SDC_TLS_CERT].")
@click.option("--token", envvar="SDC_OPERATOR_TOKEN", metavar="TOKEN",
              help="Operator bearer token [env SDC_OPERATOR_TOKEN; default the one stored "
                   "in SDC_DATA_DIR/operator-token].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.version_option(package_name="sdc", prog_name="sdc")
@click.pass_context
def main(ctx: click.Context, api_url: str | None, token: str | None, as_json: bool) -> None:
    """Run and operate a SmartDataCenter-style cloud."""
    ctx.obj = CliState(api_url=api_url, token=token, as_json=as_json)


if __name__ == "__main__":  # `python -m headnode.cli.main`, as `sdc up` starts its children
    main()
