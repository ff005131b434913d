"""A SmartOS global zone as the host commands see it: answers vmadm, imgadm, zfs and sysinfo
argument lists from an in-memory state, printing in the formats of the recorded outputs under
data/smartos/ (which follow smartos-live's man pages). Every call is recorded, so tests check
the exact argument lists the backend sends.

It is the stand-in for a machine this CI cannot boot, nothing more: it holds what vmadm would
hold (zones, their states, NICs and snapshots, installed images) and refuses what vmadm/imgadm
refuse (an unknown zone, an image file or manifest imgadm install refuses, with imgadm's error
codes and exit statuses: smartos_imgadm_fake.py; a NIC on a nic tag the node lacks, adding a
MAC the zone has, removing or updating one it lacks, ``stop -t`` for a zone that is not a
docker zone, a customer or internal metadata value that is not a
string) and exits as
they document (``imgadm get`` of an image not installed: exit 3, "ImageNotInstalled").

Its zones behave as VM.js makes them (smartos-live commit 009dfe43): ``start`` of a running
zone and ``stop`` of one not running exit 0 and change nothing (vmadm.js's EALREADYRUNNING /
ENOTRUNNING); ``rollback-snapshot`` stops a zone that is not stopped, rolls back and always
boots it; ``boot_timestamp`` and snapshots' ``created_at`` are whole seconds (``.000Z``), a
snapshot carries its ``size`` (ZFS 'written') and ``vmadm get`` lists the newest first. A
zone may be 'provisioning' for a while (``create_seconds``, :meth:`FakeSmartOS.provisioning`);
deleting it meanwhile, or deleting a zone left mounted, is refused: not vmadm's words, the
fake's way of making those races fail a test. The fake's zones never boot twice in one second
(a real reboot takes longer), so a reboot always moves ``boot_timestamp``.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import Completed, Streaming
from tests.support.zfs_stream import zfs_stream
from tests.unit.agents.smartos_imgadm_fake import imgadm
from tests.unit.agents.smartos_zfs_fake import FakeZfs

DATA = Path(__file__).parent / "data" / "smartos"
POOL_SIZE = 3752005959680 + 85899345920


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def node_nic_tags() -> set[str]:
    """The nic tags of the recorded node: its links' "NIC Names" and its underlay VNIC's
    "Overlay Nic Tags"."""
    node = json.loads(recorded("sysinfo.json"))
    tags = {tag for link in node["Network Interfaces"].values() for tag in link["NIC Names"]}
    return tags | {tag for vnic in node["Virtual Network Interfaces"].values()
                   for tag in vnic.get("Overlay Nic Tags", [])}


class ToolExit(LookupError):
    """A refusal with the tool's exit status (LookupError alone: exit 1)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


#: the vmadm update payload keys the fake applies (vmadm(8) update); others are plain values
MAP_KINDS = ("customer_metadata", "internal_metadata", "tags", "routes")


def _iso(ts: float) -> str:
    """ZFS creation times and zone boot times are whole seconds: ISO 8601 with ``.000Z``."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


#: a fake snapshot's ZFS 'written' (its size in vmadm get)
SNAPSHOT_WRITTEN = 65536


@dataclass
class FakeSmartOS:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], bytes | None]] = field(default_factory=list)
    #: how long a ``vmadm create`` stays 'provisioning' before it returns
    create_seconds: float = 0.0
    #: the datasets' snapshots, properties and streams (smartos_zfs_fake.py)
    zfs: FakeZfs = field(default_factory=FakeZfs)

    def __call__(self, argv: Sequence[str], input: bytes | None, timeout: float,
                 output: Path | None) -> Completed:
        argv = tuple(argv)
        self.calls.append((argv, input))
        handler = getattr(self, f"_{argv[0]}", None)
        if handler is None:
            return Completed(argv, 127, "", f"{argv[0]}: not found")
        try:
            out = handler(list(argv[1:]), input, output)
        except LookupError as exc:
            return Completed(argv, getattr(exc, "returncode", 1), "", str(exc.args[0]))
        stdout, stderr = out if isinstance(out, tuple) else (out, "")
        return Completed(argv, 0, stdout, stderr)

    def stream(self, argv: Sequence[str], pipe_stdin: bool, pipe_stdout: bool) -> Streaming:
        """The streaming seam (``use_streamer``): zfs send and receive."""
        argv = tuple(argv)
        self.calls.append((argv, None))
        if argv[0] != "zfs":
            raise FileNotFoundError(argv[0])
        try:
            return self.zfs.start(list(argv[1:]), pipe_stdin, pipe_stdout)
        except LookupError as exc:
            return _FailedStream(argv, str(exc.args[0]))

    def argvs(self, tool: str) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls if argv[0] == tool]

    # -- sysinfo ---------------------------------------------------------------------------

    def _sysinfo(self, args: list[str], _in: bytes | None, _out: Path | None) -> str:
        return recorded("sysinfo.json")

    # -- imgadm ------------------------------------------------------------------------------

    def _imgadm(self, args: list[str], _in: bytes | None, _out: Path | None) -> str:
        return imgadm(self.images, args)  # its checks and errors: smartos_imgadm_fake.py

    # -- vmadm ---------------------------------------------------------------------------------

    def _vm(self, uuid: str) -> dict[str, Any]:
        if uuid not in self.vms:
            raise LookupError(f"vmadm: error: Failed to load {uuid}: No such zone configured")
        return self.vms[uuid]

    def provisioning(self, payload: dict[str, Any], seconds: float) -> None:
        """A zone some earlier ``vmadm create`` left provisioning: it runs after ``seconds``."""
        self.vms[payload["uuid"]] = {"nics": [], "snapshots": [], **payload,
                                     "state": "provisioning", "boot_timestamp": None,
                                     "provisioned_at": time.monotonic() + seconds}

    def _settle(self) -> None:
        """VM.js's provisioning transition ends: the zone boots, unless it was created with
        ``autoboot: false`` (then it is installed, which vmadm lists as stopped)."""
        for vm in list(self.vms.values()):
            if vm.get("provisioned_at", math.inf) <= time.monotonic():
                del vm["provisioned_at"]
                if vm.get("autoboot", True):
                    self._boot(vm)
                else:
                    vm["state"] = "stopped"

    @staticmethod
    def _boot(vm: dict[str, Any]) -> None:
        last = vm.get("booted", 0)
        vm["booted"] = max(int(time.time()), last + 1)
        vm.update(state="running", boot_timestamp=_iso(vm["booted"]))

    def _vmadm(self, args: list[str], stdin: bytes | None,
               _out: Path | None) -> str | tuple[str, str]:
        self._settle()
        command = args[0]
        if command == "create":
            payload = json.loads(stdin or b"{}")
            if payload["image_uuid"] not in self.images:
                raise LookupError(f"vmadm: error: image {payload['image_uuid']} not found")
            self._check_nic_tags(payload.get("nics", []))
            self._check_metadata_strings(payload, ("customer_metadata", "internal_metadata"))
            self.provisioning(payload, self.create_seconds)
            time.sleep(self.create_seconds)
            self._settle()
            return "", f"Successfully created VM {payload['uuid']}\n"
        if command in ("list", "lookup"):
            fields = args[args.index("-o") + 1].split(",")
            filters = dict(a.split("=", 1) for a in args[args.index("-o") + 2:])
            rows = [vm for vm in self.vms.values()
                    if all(str(vm.get(k)) == v for k, v in filters.items())]
            if command == "lookup":
                return json.dumps([{f: vm[f] for f in fields if f in vm} for vm in rows])
            return "".join(":".join(_listed(vm.get(f)) for f in fields) + "\n" for vm in rows)
        vm = self._vm(args[1])
        if command == "get":
            template = json.loads(recorded("vmadm-get.json"))
            template.update({k: v for k, v in vm.items()
                             if k not in ("snapshots", "booted", "mounted", "provisioned_at")})
            template.update(zonename=vm["uuid"], zonepath=f"/zones/{vm['uuid']}",
                            snapshots=[{"name": s["name"], "created_at": _iso(s["created"]),
                                        "size": SNAPSHOT_WRITTEN}
                                       for s in reversed(vm["snapshots"])])
            return json.dumps(template)
        if command == "start":
            if vm["state"] == "running":
                return "", f"Unable to start VM {vm['uuid']}: VM is already running\n"
            self._boot(vm)
        elif command == "stop":
            if "-t" in args and not vm.get("docker"):
                raise ToolExit("vmadm: error: -t is only supported for docker and HVM VMs", 2)
            if vm["state"] != "running":
                return "", (f"VM {vm['uuid']} is already not 'running' "
                            f"(currently: {vm['state']})\n")
            vm.update(state="stopped", boot_timestamp=None)
        elif command == "reboot":
            self._boot(vm)
        elif command == "delete":
            if vm["state"] == "provisioning" or vm.get("mounted"):
                raise LookupError(f"fake vmadm: refusing to delete {vm['uuid']}: "
                                  f"{'mounted' if vm.get('mounted') else 'provisioning'}")
            del self.vms[vm["uuid"]]
            self.zfs.snapshots.pop(f"zones/{vm['uuid']}", None)
            self.zfs.partial.pop(f"zones/{vm['uuid']}", None)
        elif command == "update":
            self._update(vm, json.loads(stdin or b"{}"))
        elif command == "create-snapshot":
            vm["snapshots"].append({"name": args[2], "created": time.time()})
        elif command == "rollback-snapshot":
            if args[2] not in [s["name"] for s in vm["snapshots"]]:
                raise LookupError(f'No snapshot named "{args[2]}" for {vm["uuid"]}')
            vm.update(state="stopped", boot_timestamp=None)
            self._rollback(vm, args[2])
            self._boot(vm)  # the CLI never passes VM.js's do_not_start
        elif command == "delete-snapshot":
            vm["snapshots"] = [s for s in vm["snapshots"] if s["name"] != args[2]]
        else:
            raise LookupError(f"vmadm: unknown command {command}")
        return ""

    @staticmethod
    def _rollback(vm: dict[str, Any], name: str) -> None:
        """``zfs rollback -r``: the snapshots newer than the target go."""
        names = [s["name"] for s in vm["snapshots"]]
        del vm["snapshots"][names.index(name) + 1:]

    def _zoneadm(self, args: list[str], _in: bytes | None, _out: Path | None) -> str:
        vm = self._vm(args[1])
        if args[2:] != ["unmount"]:
            raise LookupError(f"zoneadm: unknown command {args}")
        if not vm.get("mounted"):
            raise LookupError(f"zoneadm: zone '{vm['uuid']}': not mounted")
        vm["mounted"] = False
        return ""

    @staticmethod
    def _check_nic_tags(nics: list[dict[str, Any]]) -> None:
        tags = node_nic_tags()
        for nic in nics:
            if nic["nic_tag"] not in tags:
                raise LookupError(f"vmadm: error: Invalid nic tag \"{nic['nic_tag']}\"")

    @staticmethod
    def _check_metadata_strings(payload: dict[str, Any], keys: tuple[str, ...]) -> None:
        """vmadm(8): metadata maps hold key=value pairs of simple string values."""
        for key in keys:
            for name, value in (payload.get(key) or {}).items():
                if not isinstance(value, str):
                    raise LookupError(f"vmadm: error: Invalid value for {key}.{name}: "
                                      "not a string")

    def _update(self, vm: dict[str, Any], payload: dict[str, Any]) -> None:
        """vmadm(8) update: set_X / remove_X change the X map, add_nics / remove_nics /
        update_nics change the NICs (keyed by mac), other keys replace values."""
        self._check_metadata_strings(payload, ("set_customer_metadata", "set_internal_metadata"))
        self._update_nics(vm, payload.pop("add_nics", []), payload.pop("remove_nics", []),
                          payload.pop("update_nics", []))
        for kind in MAP_KINDS:
            values = dict(vm.get(kind) or {})
            for key in payload.pop(f"remove_{kind}", []):
                values.pop(key, None)
            values.update(payload.pop(f"set_{kind}", {}))
            vm[kind] = values
        vm.update(payload)

    # -- zfs ---------------------------------------------------------------------------------------

    def _zfs(self, args: list[str], _in: bytes | None, output: Path | None) -> str:
        if args[0] == "list":
            fields = args[args.index("-o") + 1].split(",")
            kind = args[args.index("-t") + 1]
            name = args[-1]
            rows: list[tuple[Any, ...]]
            if kind == "all":
                there = self.zfs.exists(name) if "@" in name else \
                    name.removeprefix("zones/") in self.vms and name not in self.zfs.gone
                if not there:
                    raise LookupError(f"cannot open '{name}': dataset does not exist")
                rows = [(name,)]
            elif kind == "snapshot":
                uuid = name.split("/", 1)[1]
                if uuid not in self.vms:
                    raise LookupError(f"cannot open '{name}': dataset does not exist")
                rows = [(f"{name}@vmsnap-{s['name']}", 65536)
                        for s in self._vm(uuid)["snapshots"]]
                rows += [(f"{name}@{snap}", 65536) for snap in self.zfs.snapshots.get(name, [])]
            elif name == "zones" and "-r" not in args:
                used = sum(vm["quota"] for vm in self.vms.values()) * 2 ** 20
                rows = [("zones", used, POOL_SIZE - used)]
            else:
                rows = [(f"zones/{u}", 1048576 * 3) for u in self.vms]
            return "".join("\t".join(str(v) for v in row[:len(fields)]) + "\n" for row in rows)
        if args[:3] == ["send", "-n", "-P"]:
            return self.zfs.dry_run(args[3:])
        if args[0] == "get":
            return self.zfs.get(args)
        if args[0] == "set":
            return self.zfs.set(args[1:])
        if args[:2] == ["receive", "-A"]:
            return self.zfs.abort_receive(args[2])
        if args[0] == "send" and output is not None:
            output.write_bytes(zfs_stream(args[1]))  # what a send begins with, at least
            return ""
        if args[:2] == ["rollback", "-r"] and "@vmsnap-" in args[2]:
            dataset, name = args[2].split("@vmsnap-")
            vm = self._vm(dataset.removeprefix("zones/"))
            if name not in [s["name"] for s in vm["snapshots"]]:
                raise LookupError(f"cannot open '{args[2]}': dataset does not exist")
            self._rollback(vm, name)
            return ""
        if args[0] == "snapshot":
            self.zfs.snapshot(args[1])
            return ""
        if args[0] == "destroy":
            self.zfs.destroy(args[-1])
            return ""
        raise LookupError(f"zfs: unknown command {args}")

    def _update_nics(self, vm: dict[str, Any], add: list[dict[str, Any]], remove: list[str],
                     update: list[dict[str, Any]]) -> None:
        by_mac = {nic["mac"]: nic for nic in vm["nics"]}
        for mac in [*remove, *(change["mac"] for change in update)]:
            if mac not in by_mac:
                raise LookupError(f"vmadm: error: VM has no NIC with MAC {mac}")
        for nic in add:
            if nic["mac"] in by_mac:
                raise LookupError(f"vmadm: error: VM already has a NIC with MAC {nic['mac']}")
        self._check_nic_tags(add)
        for change in update:
            by_mac[change["mac"]].update(change)
        vm["nics"] = [nic for nic in vm["nics"] if nic["mac"] not in remove] + list(add)


def _listed(value: Any) -> str:
    """A value as ``vmadm list -p`` prints it: JavaScript's (true, not True), "" for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _FailedStream:
    """A streaming command that fails at once, saying ``said`` (zfs send of a snapshot that
    does not exist)."""

    def __init__(self, argv: tuple[str, ...], said: str) -> None:
        self._argv, self._said = argv, said
        self.stdout: Any = io.BytesIO()
        self.stdin: Any = io.BytesIO()

    def wait(self, timeout: float) -> Completed:
        return Completed(self._argv, 1, "", self._said)

    def kill(self) -> None:
        pass
