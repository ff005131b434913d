"""A SmartOS compute node: zones through ``vmadm``, images through ``imgadm``, usage from ``zfs``.

The node's own tools keep the truth (vmadm's zone states, imgadm's installed images), so this
backend holds no state of its own beyond short caches for the 0.5 s status checks. Image files
are fetched from the head node by the agent and installed with ``imgadm install``; that and
making an image from a zone (``zfs send``) live in :mod:`agents.backends.smartos_images`.

A zone's brand comes from the installed image's manifest (``requirements.brand``, else its
type: lx-dataset and docker -> lx, zone-dataset -> the node's joyent brand) and the image's
init becomes vmadm boot properties (``init_name``, or a docker zone for an application
entrypoint); the mapping and what it refuses are in :mod:`agents.backends.vmadm_boot`.
Customer metadata and its ``*_pw`` keys: :mod:`agents.backends.vmadm_payloads`. SmartOS keeps
no metadata serial, so metadata answers carry none.

Networking is vmadm's: a machine's NICs go into its create payload (``nics``, with the VM-level
``resolvers`` and ``routes``) and change with ``vmadm update`` (``add_nics``, ``remove_nics``,
``update_nics``); the VNICs, their VLANs and the link protection (anti-spoofing) are made by
vmadm. Overlay (VXLAN) destinations are Triton's varpd asking portolan, not this agent: the
overlay directory the head node sends is only recorded, so its version can be reported.

Migration between nodes (zfs send/receive, the hidden copy):
:mod:`agents.backends.smartos_migration`; a zone with ``do_not_inventory`` set is left out of
the node's reports.

Tested by contract only (this project's CI cannot boot SmartOS): the tests check the exact
argument lists and parse recorded outputs in the formats of smartos-live's man pages.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from agents import tasks
from agents.backends import smartos_images, smartos_snapshots, transfer
from agents.backends.base import BackendError, ImageNotFound, MachineNotFound
from agents.backends.host import imgadm, vmadm, zfs, zoneadm
from agents.backends.host.cmd import run
from agents.backends.jsonfile import write_json
from agents.backends.migration_progress import ProgressSink
from agents.backends.names import plain_name
from agents.backends.smartos_migration import SmartOSMigrations
from agents.backends.smartos_provision import IN_PROGRESS, ProvisionGuard
from agents.backends.smartos_snapshots import ZPOOL
from agents.backends.ttlcache import TtlCache
from agents.backends.vmadm_boot import boot_properties, stop_timeout, zone_brand
from agents.backends.vmadm_payloads import (
    GIB_MB,
    create_payload,
    customer_view,
    metadata_payload,
    nic_summary,
    nic_tag_uplinks,
    runs_types,
    update_payload,
    vmadm_nic,
    vmadm_nic_change,
)
from agents.config import AgentSettings, parse_traits
from agents.version import agent_version
from schemas.ops import IMAGE_OSES

log = logging.getLogger(__name__)
#: the installed sdc distribution's version (a rolling upgrade waits for it)
AGENT_VERSION = agent_version()
# boot_timestamp last: its own colons stay in the last field of ``vmadm list -p``
LIST_FIELDS = ("uuid", "alias", "state", "image_uuid", "max_physical_memory", "quota",
               "do_not_inventory", "boot_timestamp")
#: vmadm ``state`` -> the states a node reports (see vmadm(8) "VM STATES")
STATES = {
    "running": "running",
    "stopped": "stopped",
    "installed": "stopped",
    "ready": "stopped",
    "down": "stopped",
    "shutting_down": "stopped",
    "stopping": "running",
    "provisioning": "provisioning",
    "configured": "provisioning",
    "incomplete": "provisioning",
    "receiving": "provisioning",
    "failed": "failed",
}
#: where the overlay directory last received is kept (in the agent's work directory)
OVERLAY_FILE = "overlay.json"
P = ParamSpec("P")
R = TypeVar("R")


def _changes_zones(
    op: Callable[Concatenate[SmartOSBackend, P], R],
) -> Callable[Concatenate[SmartOSBackend, P], R]:
    """An operation that may change zones: the status checks' ``vmadm list`` goes at its end."""
    @functools.wraps(op)
    def run_op(self: SmartOSBackend, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return op(self, *args, **kwargs)
        finally:
            self._cache.forget("vms")
    return run_op


class SmartOSBackend(SmartOSMigrations):
    def __init__(
        self,
        server_uuid: str,
        work_dir: Path,
        *,
        hostname: str | None = None,
        brand: str = "joyent-minimal",
        usage_ttl: float = 5.0,
        traits: dict[str, Any] | None = None,
        image_store_url: str = "",
        image_store_ca: str = "",
        migration_progress: ProgressSink | None = None,
    ) -> None:
        self.server_uuid = server_uuid
        self.work_dir = work_dir
        #: the head node's image store (SDC_IMAGE_STORE_URL): image files come from and go
        #: to it only
        self.image_store = transfer.ImageStoreLink(image_store_url, image_store_ca)
        self.brand = brand
        self.usage_ttl = usage_ttl
        self.traits = dict(traits or {})
        self._hostname = hostname
        self._sysinfo: dict[str, Any] | None = None
        self._cache = TtlCache(usage_ttl)
        self.provisions = ProvisionGuard()
        #: where migration progress events go (None: nowhere)
        self._progress = migration_progress
        work_dir.mkdir(parents=True, exist_ok=True)
        self._overlay_version = _read_overlay(work_dir / OVERLAY_FILE).get("version", "")

    # -- node facts ---------------------------------------------------------------------------

    def _node(self) -> dict[str, Any]:
        if self._sysinfo is None:
            self._sysinfo = json.loads(run(["sysinfo"]))
        return self._sysinfo

    def sysinfo(self) -> dict[str, Any]:
        node = self._node()
        uplinks = nic_tag_uplinks(node)
        return {
            "uuid": self.server_uuid,
            "hostname": self._hostname or node["Hostname"],
            "backend": "smartos",
            "system_type": node.get("System Type", "SunOS"),
            "cpus": int(node["CPU Total Cores"]),
            "ram_mb": int(node["MiB of Memory"]),
            "pool_size_mb": int(node.get("Zpool Size in GiB", 0)) * GIB_MB,
            "boot_time": float(node["Boot Time"]) if node.get("Boot Time") else None,
            "nic_tags": sorted(uplinks),
            "nic_tag_uplinks": uplinks,
            "traits": dict(self.traits),
            "kernel": node.get("Live Image", ""),
            "agent_version": AGENT_VERSION,
            "runs": {"os": list(IMAGE_OSES), "type": runs_types(node),
                     "format": smartos_images.install_formats(runs_types(node))},
        }

    def status(self) -> dict[str, Any]:
        machines = self.list_machines()
        size, used = self._cache.get("pool", self._pool_usage)
        ram_mb = int(self._node()["MiB of Memory"])
        promised = sum(m["ram_mb"] for m in machines if m["state"] in ("running", "provisioning"))
        return {
            "server_uuid": self.server_uuid,
            "machines": machines,
            "images": self._cache.get("images", smartos_images.installed_ids),
            "pool_size_mb": size // (1024 * 1024),
            "pool_used_mb": used // (1024 * 1024),
            "ram_mb": ram_mb,
            "ram_free_mb": max(0, ram_mb - promised),
            "timestamp": time.time(),
            "overlay_version": self._overlay_version,
            # vmadm makes and deletes every VNIC with its zone: nothing of ours to leave over
            "leftovers": [],
        }

    def list_machines(self) -> list[dict[str, Any]]:
        """``vmadm list`` (a node process) is kept until an operation ends or ``usage_ttl``
        passes, not run at every 0.5 s status check (a zone halting by itself shows then)."""
        usage = self._cache.get("usage", self._zone_usage)
        nics = self._cache.get("nics", self._nic_map)
        rows = self._cache.get("vms", lambda: vmadm.list_vms(LIST_FIELDS))
        # a migration's hidden copy is no machine of this node's yet (or any more)
        return [self._describe(row, usage, nics) for row in rows
                if row.get("do_not_inventory") != "true"]

    # -- images -------------------------------------------------------------------------------

    def image_ensure_present(self, image: dict[str, Any]) -> dict[str, Any]:
        record = smartos_images.installed_record(image["uuid"])
        if record is None:
            record = smartos_images.install(self.work_dir, image, self.image_store)
            self._cache.forget("images", "pool")
        return record

    # -- machines -----------------------------------------------------------------------------

    @_changes_zones
    def machine_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``vmadm create``; asked again for a zone that exists, the machine once its
        provision has ended (see :mod:`agents.backends.smartos_provision`)."""
        uuid = spec["uuid"]
        with self.provisions.machine(uuid):
            if vmadm.get(uuid) is not None:
                self.provisions.settled_state(lambda: self._vmadm_state(uuid))
                return self.machine_load(uuid)
            payload = self._payload(spec)
            try:
                vmadm.create(payload)
            finally:
                self._cache.forget("usage", "pool", "nics")
        return self.machine_load(uuid)

    def _payload(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``vmadm create``'s payload for ``spec``, its brand from the installed image."""
        installed = imgadm.get(spec["image_uuid"])
        if installed is None:
            raise ImageNotFound(f"image {spec['image_uuid']} is not installed on this node")
        manifest = installed["manifest"]
        brand = zone_brand(manifest, self.brand)
        return create_payload(spec, brand, boot_properties(brand, manifest, spec.get("init"),
                                                           spec["uuid"]))

    @_changes_zones
    def machine_start(self, uuid: str) -> dict[str, Any]:
        if self._state(uuid, to_boot=True) != "running":
            vmadm.start(uuid)
        return self.machine_load(uuid)

    @_changes_zones
    def machine_stop(self, uuid: str) -> dict[str, Any]:
        """``vmadm stop``; a docker zone (an application init) with ``-t`` its image's
        stop_timeout, the wait between vmadm's SIGTERM to its init and the halt."""
        if self._state(uuid) != "stopped":
            vmadm.stop(uuid, timeout=stop_timeout(self._vm(uuid)))
        return self.machine_load(uuid)

    @_changes_zones
    def machine_reboot(self, uuid: str) -> dict[str, Any]:
        if self._state(uuid, to_boot=True) == "running":
            vmadm.reboot(uuid)
        else:
            vmadm.start(uuid)
        return self.machine_load(uuid)

    @_changes_zones
    def machine_destroy(self, uuid: str) -> dict[str, Any]:
        """As sdc-cn-agent's: a provision in progress ends first, ``zoneadm unmount`` (it
        fails on a zone not mounted, as expected), then ``vmadm delete``."""
        with self.provisions.machine(uuid):
            rows = vmadm.list_vms(LIST_FIELDS, {"uuid": uuid})
            if rows and rows[0]["state"] in IN_PROGRESS and \
                    self.provisions.settled_state(lambda: self._vmadm_state(uuid)) is None:
                rows = []
            if not rows:
                return _destroyed({"uuid": uuid})
            described = self._describe(rows[0], {}, {})
            if said := zoneadm.unmount(uuid):
                log.debug("zoneadm unmount %s before its delete: %s", uuid, said)
            try:
                vmadm.delete(uuid)
            finally:
                self._cache.forget("usage", "pool", "nics")
        self.provisions.forget(uuid)
        self._forget_migration(uuid)
        return {**described, "state": "destroyed", "disk_used_mb": 0, "boot_time": None}

    def machine_load(self, uuid: str) -> dict[str, Any]:
        return self._describe(self._row(uuid), self._cache.get("usage", self._zone_usage),
                              self._cache.get("nics", self._nic_map))

    def _row(self, uuid: str) -> dict[str, str]:
        rows = vmadm.list_vms(LIST_FIELDS, {"uuid": uuid})
        if not rows:
            raise MachineNotFound(f"machine {uuid} does not exist on server {self.server_uuid}")
        return rows[0]

    @_changes_zones
    def machine_update(self, params: dict[str, Any]) -> dict[str, Any]:
        self._state(params["uuid"])
        payload = update_payload(params)
        if payload:
            vmadm.update(params["uuid"], payload)
        self._cache.forget("usage")
        return self.machine_load(params["uuid"])

    @_changes_zones
    def machine_update_metadata(self, params: dict[str, Any]) -> dict[str, Any]:
        """One ``vmadm update`` with the change as its payload, then the zone's values (no
        ``serial``: vmadm keeps no count of metadata changes)."""
        uuid = params["uuid"]
        self._state(uuid)  # MachineNotFound (vmadm update would only say it failed)
        payload = metadata_payload(params)
        if payload:
            vmadm.update(uuid, payload)
        vm = vmadm.get(uuid)
        if vm is None:
            raise MachineNotFound(f"machine {uuid} is gone from server {self.server_uuid}")
        return {"tags": dict(vm.get("tags") or {}), "customer_metadata": customer_view(vm)}

    # -- networking ---------------------------------------------------------------------------

    @_changes_zones
    def machine_add_nics(self, uuid: str, nics: list[dict[str, Any]],
                         routes: dict[str, str] | None = None) -> dict[str, Any]:
        """``vmadm update`` with ``add_nics`` (only the MACs the zone lacks) and, when given,
        ``set_routes`` (the routes the new NICs' networks bring), then a reboot of a running
        zone, which sees a new NIC only at boot (CloudAPI's AddNic reboots too)."""
        vm = self._vm(uuid)
        have = {nic["mac"] for nic in vm.get("nics") or []}
        new: list[dict[str, Any]] = []
        for nic in nics:
            if nic["mac"] not in have:
                have.add(nic["mac"])
                new.append(vmadm_nic(nic))
        if new:
            vmadm.update(uuid, {"add_nics": new, **({"set_routes": dict(routes)}
                                                     if routes else {})})
            self._after_nic_change(vm)
        return self.machine_load(uuid)

    @_changes_zones
    def machine_remove_nics(self, uuid: str, macs: list[str]) -> dict[str, Any]:
        """``vmadm update`` with ``remove_nics`` (only the MACs the zone has), then a reboot
        of a running zone, as for adding."""
        vm = self._vm(uuid)
        have = {nic["mac"] for nic in vm.get("nics") or []}
        gone = [mac for mac in dict.fromkeys(macs) if mac in have]
        if gone:
            vmadm.update(uuid, {"remove_nics": gone})
            self._after_nic_change(vm)
        return self.machine_load(uuid)

    @_changes_zones
    def machine_update_nics(self, uuid: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """``vmadm update`` with ``update_nics``: vmadm applies the anti-spoofing flags and
        allowed_ips to a running zone's VNICs at once (link protection), so no reboot."""
        vm = self._vm(uuid)
        have = {nic["mac"] for nic in vm.get("nics") or []}
        for change in changes:
            if change["mac"] not in have:
                raise BackendError("NicNotFound", f"machine {uuid} has no NIC {change['mac']}")
        payload = [nic_change for nic_change in (vmadm_nic_change(c) for c in changes)
                   if len(nic_change) > 1]
        if payload:
            vmadm.update(uuid, {"update_nics": payload})
        return self.machine_load(uuid)

    def set_overlay_peers(self, peers: dict[str, list[str]], version: str) -> dict[str, Any]:
        """Recorded, not applied: on SmartOS an overlay device's destinations come from
        Triton's varpd, which asks portolan per destination, so the node has no peer list to
        program. Keeping the version stops the head node from resending it."""
        write_json(self.work_dir / OVERLAY_FILE, {"version": version, "peers": peers})
        self._overlay_version = version
        return {"version": version}

    def _vm(self, uuid: str) -> dict[str, Any]:
        vm = vmadm.get(uuid)
        if vm is None:
            raise MachineNotFound(f"machine {uuid} does not exist on server {self.server_uuid}")
        return vm

    def _after_nic_change(self, vm: dict[str, Any]) -> None:
        self._cache.forget("nics")
        if STATES.get(vm.get("state", "")) == "running":
            vmadm.reboot(vm["uuid"])

    def _nic_map(self) -> dict[str, list[dict[str, Any]]]:
        return {vm["uuid"]: nic_summary(vm.get("nics") or [])
                for vm in vmadm.lookup(["uuid", "nics"])}

    # -- snapshots ----------------------------------------------------------------------------

    @_changes_zones
    def snapshot_create(self, uuid: str, name: str) -> dict[str, Any]:
        found = self._snapshot(uuid, name)
        if found is None:
            vmadm.create_snapshot(uuid, name)
            found = self._snapshot(uuid, name)
        if found is None:
            raise BackendError("SnapshotFailed", f"vmadm did not list snapshot {name} of {uuid}")
        return found

    def snapshot_list(self, uuid: str) -> list[dict[str, Any]]:
        snapshots = smartos_snapshots.list_snapshots(uuid)
        if snapshots is None:
            raise MachineNotFound(f"machine {uuid} does not exist on server {self.server_uuid}")
        return snapshots

    @_changes_zones
    def snapshot_rollback(self, uuid: str, name: str) -> dict[str, Any]:
        """The machine keeps its state (StartMachineFromSnapshot: the head node starts it
        next, in the same message)."""
        if self._snapshot(uuid, name) is None:
            raise BackendError("SnapshotNotFound", f"machine {uuid} has no snapshot {name}")
        smartos_snapshots.rollback(uuid, name, stopped=self._state(uuid) == "stopped")
        self._cache.forget("usage", "pool")
        return self.machine_load(uuid)

    @_changes_zones
    def snapshot_delete(self, uuid: str, name: str) -> str:
        if self._snapshot(uuid, name) is not None:
            vmadm.delete_snapshot(uuid, name)
        return name

    def _snapshot(self, uuid: str, name: str) -> dict[str, Any] | None:
        return next((s for s in self.snapshot_list(uuid) if s["name"] == name), None)

    # -- images from machines -------------------------------------------------------------------

    def image_create_from_machine(
        self, uuid: str, image: dict[str, Any], upload: dict[str, Any]
    ) -> dict[str, Any]:
        self._state(uuid)
        return smartos_images.create_from_dataset(
            self.work_dir, f"{ZPOOL}/{plain_name(uuid, 'machine uuid')}", image, upload,
            self.image_store)

    # -- helpers ------------------------------------------------------------------------------

    def _state(self, uuid: str, *, to_boot: bool = False) -> str:
        """``to_boot``: a migration's hidden copy (do_not_inventory) is refused: the machine
        runs where the head node has it."""
        row = self._row(uuid)
        if to_boot and row.get("do_not_inventory") == "true":
            raise BackendError("InvalidState", f"cannot boot machine {uuid}: it is hidden on "
                                               f"server {self.server_uuid} (a migration's "
                                               f"other copy)")
        return str(self._describe(row, self._cache.get("usage", self._zone_usage),
                                  self._cache.get("nics", self._nic_map))["state"])

    def _vmadm_state(self, uuid: str) -> str | None:
        rows = vmadm.list_vms(("uuid", "state"), {"uuid": uuid})
        return rows[0]["state"] if rows else None

    def _describe(self, row: dict[str, str], usage: dict[str, int],
                  nics: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        state = STATES.get(row["state"], "stopped")
        boot = row.get("boot_timestamp") or ""
        return {
            "uuid": row["uuid"],
            "alias": row["alias"],
            "state": state,
            "image_uuid": row["image_uuid"],
            "ram_mb": int(row["max_physical_memory"] or 0),
            "disk_mb": int(row["quota"] or 0) * GIB_MB,
            "disk_used_mb": math.ceil(usage.get(row["uuid"], 0) / (1024 * 1024)),
            "boot_time": smartos_snapshots.iso_time(boot) if boot and state == "running" else None,
            "nics": nics.get(row["uuid"], []),
        }

    def _zone_usage(self) -> dict[str, int]:
        rows = zfs.list_datasets(["name", "used"], [ZPOOL], recursive=True, depth=1)
        prefix = ZPOOL + "/"
        return {r["name"].removeprefix(prefix): int(r["used"])
                for r in rows if r["name"].startswith(prefix)}

    def _pool_usage(self) -> tuple[int, int]:
        row = zfs.list_datasets(["name", "used", "available"], [ZPOOL])[0]
        return int(row["used"]) + int(row["available"]), int(row["used"])


def _destroyed(record: dict[str, Any]) -> dict[str, Any]:
    return {"uuid": record["uuid"], "alias": "", "state": "destroyed", "image_uuid": "",
            "ram_mb": 0, "disk_mb": 0, "disk_used_mb": 0, "boot_time": None, "nics": []}


def _read_overlay(path: Path) -> dict[str, Any]:
    try:
        saved: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return saved


def from_settings(settings: AgentSettings, server_uuid: str) -> SmartOSBackend:
    return SmartOSBackend(server_uuid, settings.data_dir / "smartos",
                          hostname=settings.hostname or None, traits=parse_traits(settings),
                          image_store_url=settings.image_store_url,
                          image_store_ca=settings.image_store_ca,
                          migration_progress=tasks.send_migration_progress)
