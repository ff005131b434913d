"""``sdc``: the operator's command line (head-node processes and the operator API).

This module holds only the root group and the registration of the command groups, each of
which lives in a module of its own; what they share is in :mod:`headnode.cli.context` and
:mod:`headnode.cli.output`. No command module imports this one."""

from __future__ import annotations

import importlib

import click

from headnode.cli.accounts import account
from headnode.cli.config import config
from headnode.cli.context import CliState, SdcGroup
from headnode.cli.doctor import doctor
from headnode.cli.headnode import headnode
from headnode.cli.images import image
from headnode.cli.jobs import job
from headnode.cli.machines import vm
from headnode.cli.networks import key, network
from headnode.cli.nics import nic
from headnode.cli.packages import package
from headnode.cli.placement import capacity, placement
from headnode.cli.server_exec import server_exec, server_ssh_key
from headnode.cli.server_setup import (
    server_rollback_agent,
    server_setup,
    server_upgrade_agent,
)
from headnode.cli.servers import server

# Commands that live in other packages: imported only when used or listed, so that
# `sdc vm list` does not pay for Celery, and `sdc --help` works while one is missing.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("headnode.cli.up", "up"),
    "agent": ("agents.cli", "agent"),
    "mockcloud": ("agents.cli", "mockcloud"),
}


class RootGroup(SdcGroup):
    """The ``sdc`` group: its own commands, and those of :data:`LAZY_COMMANDS`."""

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


for _command in (account, capacity, config, doctor, headnode, image, job, key, network,
                 package, placement, server, vm):
    main.add_command(_command)
vm.add_command(nic)  # `sdc vm nic ...`
server.add_command(server_exec)  # `sdc server exec ...`
server.add_command(server_ssh_key)
server.add_command(server_setup)  # `sdc server setup HOST|UUID`
server.add_command(server_upgrade_agent)
server.add_command(server_rollback_agent)


if __name__ == "__main__":  # `python -m headnode.cli.main`, as `sdc up` starts its children
    main()
