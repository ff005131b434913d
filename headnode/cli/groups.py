"""The command groups put together from several modules: ``sdc server`` (its own commands,
exec, ssh-key, setup, upgrade-agent, rollback-agent, evacuate) and ``sdc vm`` (with ``sdc vm
nic``, ``migrate`` and ``migration``).
Each is built when the root group first loads it."""

from __future__ import annotations

import click


def server_group() -> click.Command:
    from headnode.cli.evacuate import server_evacuate
    from headnode.cli.server_exec import server_exec, server_ssh_key
    from headnode.cli.server_setup import (
        server_rollback_agent,
        server_setup,
        server_upgrade_agent,
    )
    from headnode.cli.servers import server

    for command in (server_exec, server_ssh_key, server_setup, server_upgrade_agent,
                    server_rollback_agent, server_evacuate):
        server.add_command(command)
    return server


def vm_group() -> click.Command:
    from headnode.cli.machines import vm
    from headnode.cli.migrations import migration, vm_migrate
    from headnode.cli.nics import nic

    for command in (nic, vm_migrate, migration):
        vm.add_command(command)
    return vm
