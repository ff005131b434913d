"""SmartOS ``vmadm``: zones by UUID (payloads as JSON on stdin, ``list -p`` for states)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agents.backends.host.cmd import HostCommandError, run

VMADM = "vmadm"
#: VM.js's own limit on a provision: the zone's 'provisioning' transition (zone creation,
#: install, first boot and its scripts) expires after it and the VM goes 'failed'
#: (``PROVISION_TIMEOUT`` in smartos-live src/vm/node_modules/VM.js, commit 009dfe43)
PROVISION_TIMEOUT = 300.0
#: how long the agent waits for ``vmadm create`` (and for a provision in progress to end):
#: past VM.js's limit, so vmadm is the one that gives up, not the agent; the head node's
#: create step waits longer still (workflows.machines.CREATE_TIMEOUT)
CREATE_TIMEOUT = PROVISION_TIMEOUT + 120.0


def create(payload: dict[str, Any]) -> str:
    """Create from a JSON payload on stdin; returns what vmadm printed."""
    return run([VMADM, "create"], input=json.dumps(payload), timeout=CREATE_TIMEOUT)


def start(uuid: str) -> None:
    """Exits 0 on a zone already running too (vmadm.js treats VM.js's EALREADYRUNNING as
    done and prints its message on stderr)."""
    run([VMADM, "start", uuid])


def stop(uuid: str, *, force: bool = False, timeout: int | None = None) -> None:
    """Exits 0 on a zone already not running (VM.js's ENOTRUNNING, as for start). ``-t``
    (seconds between SIGTERM to init and the halt) is for docker and HVM VMs only: vmadm(8)
    refuses it for other zones."""
    run([VMADM, "stop", uuid, *(["-F"] if force else []),
         *(["-t", str(timeout)] if timeout is not None else [])])


def reboot(uuid: str) -> None:
    run([VMADM, "reboot", uuid])


def update(uuid: str, payload: dict[str, Any]) -> None:
    run([VMADM, "update", uuid], input=json.dumps(payload))


def delete(uuid: str) -> None:
    run([VMADM, "delete", uuid])


def get(uuid: str) -> dict[str, Any] | None:
    """``vmadm get`` as a dict; None when there is no such VM."""
    try:
        out = run([VMADM, "get", uuid])
    except HostCommandError as exc:
        if "No such zone" in exc.stderr or "not found" in exc.stderr.lower():
            return None
        raise
    vm: dict[str, Any] = json.loads(out)
    return vm


def list_vms(fields: Sequence[str], filters: dict[str, str] | None = None) -> list[dict[str, str]]:
    """``vmadm list -p -o FIELDS``: colon-separated rows, no header. Empty values stay ""."""
    argv = [VMADM, "list", "-p", "-o", ",".join(fields)]
    argv += [f"{key}={value}" for key, value in (filters or {}).items()]
    return parse_list(run(argv), fields)


def lookup(fields: Sequence[str], filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``vmadm lookup -j -o FIELDS``: the matching VMs as JSON objects holding only FIELDS
    (for properties ``list -p`` cannot print whole, such as ``nics``)."""
    argv = [VMADM, "lookup", "-j", "-o", ",".join(fields)]
    argv += [f"{key}={value}" for key, value in (filters or {}).items()]
    vms: list[dict[str, Any]] = json.loads(run(argv) or "[]")
    return vms


def parse_list(out: str, fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for line in out.splitlines():
        if not line.strip():
            continue
        # the last field may itself contain ':' (an alias, a timestamp): split only n-1 times
        values = line.split(":", len(fields) - 1)
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def create_snapshot(uuid: str, name: str) -> None:
    run([VMADM, "create-snapshot", uuid, name])


def rollback_snapshot(uuid: str, name: str) -> None:
    """VM.js stops a zone that is not stopped (forced), runs ``zfs rollback -r`` on
    ``zones/UUID@vmsnap-NAME`` (newer snapshots go) and then always starts the zone: the
    command line never passes its ``do_not_start`` option."""
    run([VMADM, "rollback-snapshot", uuid, name])


def delete_snapshot(uuid: str, name: str) -> None:
    run([VMADM, "delete-snapshot", uuid, name])
