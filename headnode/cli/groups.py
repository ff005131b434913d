"""The command groups put together from several modules: ``sdc server`` (its own commands,
exec, ssh-key, setup, upgrade-agent, rollback-agent) and ``sdc vm`` (with ``sdc vm nic``).
Each is built when the root group first loads it."""

from __future__ import annotations

import click


def server_group() -> click.Command:
    from headnode.cli.server_exec import server_exec, server_ssh_key
    from headnode.cli.server_setup import (
        server_rollback_agent,
        server_setup,
        server_upgrade_agent,
    )
    from headnode.cli.servers import server

    for command in (server_exec, server_ssh_key, server_setup, server_upgrade_agent,
                    server_rollback_agent):
        server.add_command(command)
    return server


def vm_group() -> click.Command:
    from headnode.cli.machines import vm
    from headnode.cli.nics import nic

    vm.add_command(nic)
    return vm
