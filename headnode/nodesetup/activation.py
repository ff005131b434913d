"""Switching what runs on a node: ``activate`` a release (links, service, a restart only
when something changed) and ``restore`` the node as a job found it (``before``, its
NodeState), removing what the failed run added."""

from __future__ import annotations

from typing import Any

from headnode.nodesetup import remote, service
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.node import NodeState, inspect
from headnode.ssh.client import Connection

#: inspecting only what of the agent is there needs no backend's tools
NO_TOOLS = "sim"


def activate(conn: Connection, layout: NodeLayout, version: str) -> dict[str, Any]:
    """Make ``version`` (installed) the one that runs: ``current`` links it, ``previous``
    the one it replaces; the service is installed or refreshed; the agent is (re)started
    only when the release, the config or the unit changed, or it was not running."""
    if not remote.exists(conn, layout.marker(version)):
        raise NodeSetupError("NotInstalled", f"{conn.where}: release {version} is not "
                             "installed (or its install did not finish)")
    state = inspect(conn, layout, NO_TOOLS)
    switched = state.installed_version != version
    if switched:
        if state.installed_version:
            remote.link(conn, layout.previous, f"releases/{state.installed_version}")
        remote.link(conn, layout.current, f"releases/{version}")
    unit_changed = state.init == service.SYSTEMD and service.install_unit(conn, layout)
    restarted = _start_if_changed(conn, layout, version, state, force=switched or unit_changed)
    previous = state.installed_version if switched else state.previous_version
    return {"changed": switched or unit_changed or restarted, "version": version,
            "previous": previous, "switched": switched, "restarted": restarted,
            "init": state.init}


def _start_if_changed(conn: Connection, layout: NodeLayout, version: str, state: NodeState,
                      force: bool) -> bool:
    remote.run_ok(conn, ["mkdir", "-p", layout.data_dir], "ServiceFailed")
    wanted = _stamp(conn, layout, version)
    started_with = conn.run(["cat", layout.active_stamp], remote.SHORT).stdout.strip()
    if not force and state.agent_running and started_with == wanted.strip():
        return False
    service.start(conn, layout, state.init)
    conn.put(wanted.encode(), layout.active_stamp, 0o600)
    return True


def _stamp(conn: Connection, layout: NodeLayout, version: str) -> str:
    """What the agent runs with: its release and the digests of its config files."""
    paths = list(layout.config_files.values())
    found = remote.digests(conn, paths)
    return " ".join([version, *(found.get(p, "-") for p in paths)]) + "\n"


def restore(conn: Connection, layout: NodeLayout,
            before: NodeState | dict[str, Any]) -> dict[str, Any]:
    """Put back the release links, config files and service state ``before`` recorded,
    and remove what was added since: a node that had nothing is left with nothing."""
    if isinstance(before, dict):
        before = NodeState.from_dict(before)
    now = inspect(conn, layout, NO_TOOLS)
    if _runs_as_before(before, now):
        # what a failed run added beside (a release, wheels) goes; the agent keeps running
        _restore_release(conn, layout, before)
        for name in layout.config_files:
            remote.remove(conn, layout.backup(name))
        removed = _remove_added(conn, layout, before)
        return {"changed": bool(removed), "version": before.installed_version,
                "running": before.agent_running, "removed": removed}
    if now.agent_running:
        service.stop(conn, layout, now.init)
    _restore_release(conn, layout, before)
    config = _restore_config(conn, layout, before, now)
    if now.init == service.SYSTEMD and now.service_installed and not before.service_installed:
        service.remove_unit(conn, layout)
    remote.remove(conn, layout.active_stamp)
    if before.agent_running and before.installed_version:
        service.start(conn, layout, now.init)
        conn.put(_stamp(conn, layout, before.installed_version).encode(),
                 layout.active_stamp, 0o600)
    return {"changed": True, "version": before.installed_version, "config": config,
            "running": before.agent_running, "removed": _remove_added(conn, layout, before)}


def _remove_added(conn: Connection, layout: NodeLayout, before: NodeState) -> list[str]:
    """Remove what of ``layout.owned`` was not there before (and the parents made for it,
    if empty); the names of what went."""
    gone = [name for name, path in layout.owned.items()
            if before.existing.get(name) is False and remote.exists(conn, path)]
    remote.remove(conn, *(layout.owned[name] for name in gone))
    for name, path in layout.parents.items():
        if before.existing.get(name) is False:
            conn.run(["rmdir", path], remote.SHORT)  # only if empty: not ours alone
    return gone


def _runs_as_before(before: NodeState, now: NodeState) -> bool:
    return (now.agent_running, now.installed_version, now.previous_version, now.config,
            now.service_installed) == (before.agent_running, before.installed_version,
                                       before.previous_version, before.config,
                                       before.service_installed)


def _restore_release(conn: Connection, layout: NodeLayout, before: NodeState) -> None:
    for link, version in ((layout.current, before.installed_version),
                          (layout.previous, before.previous_version)):
        if version:
            remote.link(conn, link, f"releases/{version}")
        else:
            remote.remove(conn, link)
    added = [v for v in remote.children(conn, layout.releases_dir) if v not in before.releases]
    remote.remove(conn, f"{layout.agent_dir}/wheels", *(layout.release(v) for v in added))


def _restore_config(conn: Connection, layout: NodeLayout, before: NodeState,
                    now: NodeState) -> dict[str, str]:
    done = {}
    for name, path in layout.config_files.items():
        had, has, backup = before.config.get(name), now.config.get(name), layout.backup(name)
        if had == has:
            done[name] = "unchanged"
        elif had is None:
            remote.remove(conn, path)
            done[name] = "removed"
        elif remote.digests(conn, [backup]).get(backup, "")[:len(had)] == had:
            remote.run_ok(conn, ["mv", "-f", backup, path], "RestoreFailed")
            done[name] = "restored"
        else:
            # no copy of what was there: say so rather than guess
            done[name] = "not restored (no copy kept)"
        remote.remove(conn, backup)
    return done
