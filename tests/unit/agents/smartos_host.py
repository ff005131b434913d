"""A SmartOS global zone as the host commands see it: answers vmadm, imgadm, zfs and sysinfo
argument lists from an in-memory state, printing in the formats of the recorded outputs under
data/smartos/ (which follow smartos-live's man pages). Every call is recorded, so tests check
the exact argument lists the backend sends.

It is the stand-in for a machine this CI cannot boot, nothing more: it holds what vmadm would
hold (zones, their states, NICs and snapshots, installed images) and refuses what vmadm/imgadm
refuse (an unknown zone, an image file whose sha1 or size differs from its manifest, a NIC on a
nic tag the node lacks, adding a MAC the zone has, removing or updating one it lacks, ``stop -t``
for a zone that is not a docker zone, a customer or internal metadata value that is not a
string) and exits as
they document (``imgadm get`` of an image not installed: exit 3, "ImageNotInstalled").
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import Completed

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
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(ts * 1000) % 1000:03d}Z"


@dataclass
class FakeSmartOS:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[tuple[str, ...], bytes | None]] = field(default_factory=list)

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
        return Completed(argv, 0, out, "")

    def argvs(self, tool: str) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls if argv[0] == tool]

    # -- sysinfo ---------------------------------------------------------------------------

    def _sysinfo(self, args: list[str], _in: bytes | None, _out: Path | None) -> str:
        return recorded("sysinfo.json")

    # -- imgadm ------------------------------------------------------------------------------

    def _imgadm(self, args: list[str], _in: bytes | None, _out: Path | None) -> str:
        if args[0] == "get":
            if args[1] not in self.images:
                raise ToolExit(f'imgadm get: error (ImageNotInstalled): image "{args[1]}" '
                               'was not found on zpool "zones"', 3)
            return json.dumps({"manifest": self.images[args[1]], "zpool": "zones"})
        if args[:2] == ["list", "-j"]:
            return json.dumps([{"manifest": m, "zpool": "zones"} for m in self.images.values()])
        if args[0] == "install":
            manifest = json.loads(Path(args[args.index("-m") + 1]).read_text())
            data = Path(args[args.index("-f") + 1]).read_bytes()
            expected = manifest["files"][0]
            if hashlib.sha1(data).hexdigest() != expected["sha1"] or \
                    len(data) != expected["size"]:
                raise LookupError("imgadm install: error (FileCheckError): sha1 or size mismatch")
            self.images[manifest["uuid"]] = manifest
            return f"Installed image {manifest['uuid']}\n"
        raise LookupError(f"imgadm: unknown command {args}")

    # -- vmadm ---------------------------------------------------------------------------------

    def _vm(self, uuid: str) -> dict[str, Any]:
        if uuid not in self.vms:
            raise LookupError(f"vmadm: error: Failed to load {uuid}: No such zone configured")
        return self.vms[uuid]

    def _vmadm(self, args: list[str], stdin: bytes | None, _out: Path | None) -> str:
        command = args[0]
        if command == "create":
            payload = json.loads(stdin or b"{}")
            if payload["image_uuid"] not in self.images:
                raise LookupError(f"vmadm: error: image {payload['image_uuid']} not found")
            self._check_nic_tags(payload.get("nics", []))
            self._check_metadata_strings(payload, ("customer_metadata", "internal_metadata"))
            self.vms[payload["uuid"]] = {**payload, "nics": payload.get("nics", []),
                                         "state": "running",
                                         "boot_timestamp": _iso(time.time()), "snapshots": []}
            return f"Successfully created VM {payload['uuid']}\n"
        if command == "list":
            fields = args[args.index("-o") + 1].split(",")
            filters = dict(a.split("=", 1) for a in args[args.index("-o") + 2:])
            rows = [vm for vm in self.vms.values()
                    if all(str(vm.get(k)) == v for k, v in filters.items())]
            return "".join(":".join("" if vm.get(f) is None else str(vm.get(f)) for f in fields)
                           + "\n" for vm in rows)
        if command == "lookup":
            fields = args[args.index("-o") + 1].split(",")
            filters = dict(a.split("=", 1) for a in args[args.index("-o") + 2:])
            return json.dumps([{f: vm[f] for f in fields if f in vm} for vm in self.vms.values()
                               if all(str(vm.get(k)) == v for k, v in filters.items())])
        vm = self._vm(args[1])
        if command == "get":
            template = json.loads(recorded("vmadm-get.json"))
            template.update({k: v for k, v in vm.items() if k != "snapshots"})
            template.update(zonename=vm["uuid"], zonepath=f"/zones/{vm['uuid']}",
                            snapshots=[{"name": s["name"], "created_at": s["created_at"]}
                                       for s in vm["snapshots"]])
            return json.dumps(template)
        if command == "start":
            vm.update(state="running", boot_timestamp=_iso(time.time()))
        elif command == "stop":
            if "-t" in args and not vm.get("docker"):
                raise ToolExit("vmadm: error: -t is only supported for docker and HVM VMs", 2)
            vm.update(state="stopped", boot_timestamp=None)
        elif command == "reboot":
            vm.update(state="running", boot_timestamp=_iso(time.time() + 0.001))
        elif command == "delete":
            del self.vms[vm["uuid"]]
        elif command == "update":
            self._update(vm, json.loads(stdin or b"{}"))
        elif command == "create-snapshot":
            vm["snapshots"].append({"name": args[2], "created_at": _iso(time.time())})
        elif command == "rollback-snapshot":
            names = [s["name"] for s in vm["snapshots"]]
            if args[2] not in names:
                raise LookupError(f"vmadm: error: snapshot {args[2]} not found")
            del vm["snapshots"][names.index(args[2]) + 1:]
            if vm["state"] == "running":
                vm["boot_timestamp"] = _iso(time.time() + 0.001)
        elif command == "delete-snapshot":
            vm["snapshots"] = [s for s in vm["snapshots"] if s["name"] != args[2]]
        else:
            raise LookupError(f"vmadm: unknown command {command}")
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
            if kind == "snapshot":
                uuid = name.split("/", 1)[1]
                rows = [(f"{name}@vmsnap-{s['name']}", 65536)
                        for s in self._vm(uuid)["snapshots"]]
            elif name == "zones" and "-r" not in args:
                used = sum(vm["quota"] for vm in self.vms.values()) * 2 ** 20
                rows = [("zones", used, POOL_SIZE - used)]
            else:
                rows = [(f"zones/{u}", 1048576 * 3) for u in self.vms]
            return "".join("\t".join(str(v) for v in row[:len(fields)]) + "\n" for row in rows)
        if args[0] == "send" and output is not None:
            output.write_bytes(b"ZFS stream of " + args[1].encode())
            return ""
        if args[0] in ("snapshot", "destroy"):
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
