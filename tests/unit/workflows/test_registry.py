"""Workflows are registered by one call, never by a service importing a definition."""

from __future__ import annotations

import subprocess
import sys

from headnode.services.machine_meta import METADATA_WORKFLOWS
from headnode.services.machines import ACTIONS
from workflows.engine import REGISTRY
from workflows.registry import load_all

#: the workflows the services start by name (besides ACTIONS and METADATA_WORKFLOWS)
STARTED_BY_SERVICES = {"provision", "destroy", "resize", "rename", "create_image",
                       "snapshot_create", "snapshot_rollback", "snapshot_start",
                       "snapshot_delete", "purge_orphan", "add_nic", "remove_nic",
                       "update_nic", "server_setup", "agent_upgrade", "migrate_begin",
                       "migrate_sync", "migrate_switch", "migrate_automatic", "migrate_abort",
                       "migrate_finalize", "migrate_rollback"}


def test_importing_every_service_registers_no_workflow() -> None:
    code = ("import pkgutil, importlib, headnode.services as s\n"
            "for m in pkgutil.iter_modules(s.__path__):\n"
            "    importlib.import_module(f'headnode.services.{m.name}')\n"
            "from workflows.engine import REGISTRY\n"
            "print(sorted(REGISTRY))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_load_all_registers_every_workflow_a_service_starts() -> None:
    modules = load_all()
    assert [m.__name__ for m in modules] == [
        "workflows.machines", "workflows.snapshots", "workflows.machine_images",
        "workflows.nics", "workflows.nodes", "workflows.node_setup", "workflows.migrations"]
    wanted = STARTED_BY_SERVICES | set(ACTIONS) | set(METADATA_WORKFLOWS)
    assert wanted <= set(REGISTRY), sorted(wanted - set(REGISTRY))
    assert load_all() == modules  # a second call changes nothing
    assert wanted <= set(REGISTRY)
