"""A simulated compute node: real bookkeeping of CPUs, memory and pool, no real machines.

The mock cloud runs hundreds of these in one process, and head-node tests use them to drive
every workflow without a hypervisor. Capacity is enforced like a real node would (a machine
that does not fit the node's memory or pool is refused), operations can be slowed down or made
to fail on demand, and the state can be kept in a JSON file so a restarted agent still has its
machines.

By concern: networking as bookkeeping (``simnet``), what fits the node (``simroom``), fault
injection (``simfaults``), snapshots (``sim_snapshots``), images of machines (``sim_images``),
migrations between nodes (``sim_migration``), NICs and the overlay (``sim_nics``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents import tasks
from agents.backends import sim_images, sim_snapshots, simnet, transfer
from agents.backends import simroom as room
from agents.backends.base import (
    BackendError,
    InsufficientResources,
    MachineNotFound,
)
from agents.backends.jsonfile import write_json
from agents.backends.migration_progress import ProgressSink
from agents.backends.sim_migration import MIGRATION_OPS, SimMigrations
from agents.backends.sim_nics import SimNics
from agents.backends.simfaults import Faults
from agents.config import AgentSettings, parse_nic_tags, parse_traits, resolve_hostname
from agents.version import agent_version
from schemas.agent import apply_metadata_change
from schemas.ops import IMAGE_OSES, IMAGE_TYPES

#: an image whose manifest does not say how big it is still takes room in a real pool
DEFAULT_IMAGE_SIZE_MB = 100
#: the installed sdc distribution's version (a rolling upgrade waits for it)
AGENT_VERSION = agent_version()
SIM_OPS = (
    "image_ensure_present",
    "machine_create",
    "machine_start",
    "machine_stop",
    "machine_reboot",
    "machine_destroy",
    "machine_load",
    "machine_update",
    "machine_update_metadata",
    "snapshot_create",
    "snapshot_list",
    "snapshot_rollback",
    "snapshot_delete",
    "image_create_from_machine",
    "machine_add_nics",
    "machine_remove_nics",
    "machine_update_nics",
    "node_set_overlay_peers",
    *MIGRATION_OPS,
)


class SimBackend(SimNics, SimMigrations):
    def __init__(
        self,
        server_uuid: str,
        hostname: str,
        *,
        ram_mb: int = 65536,
        cpus: int = 16,
        pool_size_mb: int = 1024 * 1024,
        latency_ms: int = 0,
        traits: Mapping[str, Any] | None = None,
        state_path: Path | None = None,
        nic_tags: Mapping[str, str | None] | None = None,
        image_store_url: str = "",
        image_store_ca: str = "",
        migration_fill: float = 0.1,
        transfer_mbps: float = 200.0,
        migration_progress: ProgressSink | None = None,
    ) -> None:
        self.server_uuid = server_uuid
        #: the head node's image store (SDC_IMAGE_STORE_URL): uploads go there only
        self.image_store = transfer.ImageStoreLink(image_store_url, image_store_ca)
        self.hostname = hostname
        self.ram_mb = ram_mb
        self.cpus = cpus
        self.pool_size_mb = pool_size_mb
        self.traits = dict(traits or {})
        #: nic tag -> the (pretend) link that carries it, None for a host-local tag
        self.nic_tags = dict(simnet.DEFAULT_NIC_TAGS if nic_tags is None else nic_tags)
        self.boot_time = time.time()
        self._state_path = state_path
        self._lock = threading.RLock()
        self._images: dict[str, dict[str, Any]] = {}
        self._machines: dict[str, dict[str, Any]] = {}
        #: machine uuid -> its snapshots, oldest first
        self._snapshots: dict[str, list[dict[str, Any]]] = {}
        #: machine uuid -> {"tags": {...}, "customer_metadata": {...}}
        self._meta: dict[str, dict[str, dict[str, Any]]] = {}
        #: machine uuid -> its NICs (NicSpecSchema dicts) in interface order
        self._nics: dict[str, list[dict[str, Any]]] = {}
        #: the overlay directory last applied: {"version", "peers"}
        self._overlay: dict[str, Any] = {"version": "", "peers": {}}
        #: machine uuid -> its migration bookkeeping (sim_migration)
        self._migrations: dict[str, dict[str, Any]] = {}
        #: a migration stream's size: this share of the machine's disk; its rate in MB/s
        self.migration_fill = migration_fill
        self.transfer_mbps = transfer_mbps
        #: where migration progress events go (None: nowhere)
        self._progress = migration_progress
        self._faults = Faults(latency_ms)
        self._load_state()

    # -- node facts ---------------------------------------------------------------------------

    def sysinfo(self) -> dict[str, Any]:
        return {
            "uuid": self.server_uuid,
            "hostname": self.hostname,
            "backend": "sim",
            "system_type": "Virtual",
            "cpus": self.cpus,
            "ram_mb": self.ram_mb,
            "pool_size_mb": self.pool_size_mb,
            "boot_time": self.boot_time,
            "nic_tags": list(self.nic_tags),
            "nic_tag_uplinks": simnet.uplinks(self.server_uuid, self.nic_tags),
            "traits": dict(self.traits),
            "kernel": "sim",
            "agent_version": AGENT_VERSION,
            # a simulated node pretends to run every image
            "runs": {"os": list(IMAGE_OSES), "type": list(IMAGE_TYPES)},
        }

    def status(self) -> dict[str, Any]:
        self._faults.fail_if_asked("status")  # a drill: the node's reports are lost
        with self._lock:
            return {
                "server_uuid": self.server_uuid,
                "machines": self._shown_machines(),
                "images": sorted(self._images),
                "pool_size_mb": self.pool_size_mb,
                "pool_used_mb": room.pool_used_mb(self._images, self._machines),
                "ram_mb": self.ram_mb,
                "ram_free_mb": self.ram_mb - room.ram_in_use_mb(self._machines),
                "timestamp": time.time(),
                "overlay_version": self._overlay["version"],
                # nothing real is made, so nothing can be left over
                "leftovers": [],
            }

    def list_machines(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._shown_machines()

    # -- fault injection ----------------------------------------------------------------------

    def configure_faults(
        self,
        fail: Mapping[str, str] | None = None,
        latency_ms: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        return self._faults.configure(fail, latency_ms)

    def faults(self) -> dict[str, Any]:
        return self._faults.describe()

    # -- images -------------------------------------------------------------------------------

    def image_ensure_present(self, image: dict[str, Any]) -> dict[str, Any]:
        self._faults.begin("image_ensure_present")
        with self._lock:
            present = self._images.get(image["uuid"])
            if present is not None:
                return dict(present)
            size_mb = int(image.get("size_mb") or 0) or DEFAULT_IMAGE_SIZE_MB
            free_mb = self.pool_size_mb - room.pool_used_mb(self._images, self._machines)
            if size_mb > free_mb:
                raise InsufficientResources(
                    f"image {image['uuid']} needs {size_mb} MiB, pool has {free_mb} MiB free"
                )
            record = {
                "uuid": image["uuid"],
                "name": image.get("name", ""),
                "version": image.get("version", ""),
                "size_mb": size_mb,
            }
            self._images[image["uuid"]] = record
            self._save_state()
            return dict(record)

    # -- machines -----------------------------------------------------------------------------

    def machine_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._faults.fail_if_asked("machine_create")
        with self._lock:
            existing = self._machines.get(spec["uuid"])
            if existing is not None:
                return dict(existing)
            room.check_fits(spec, self._images, self._machines, self.ram_mb,
                             self.pool_size_mb)
            self._add_machine(spec, "provisioning")
        # The machine is visibly provisioning while the simulated work takes its time, and the
        # lock is not held so the node's other operations and status reports go on meanwhile.
        self._faults.sleep("machine_create")
        with self._lock:
            machine = self._get(spec["uuid"])
            if machine["state"] == "provisioning":
                machine.update(state="running", boot_time=time.time())
                self._save_state()
            return dict(machine)

    def machine_start(self, uuid: str) -> dict[str, Any]:
        self._faults.begin("machine_start")
        with self._lock:
            machine = self._get(uuid)
            if machine["state"] != "running":
                self._require_not_provisioning(machine, "start")
                self._require_shown(uuid, "start")
                room.check_ram_to_boot(machine, self._machines, self.ram_mb)
                machine.update(state="running", boot_time=time.time())
                self._save_state()
            return dict(machine)

    def machine_stop(self, uuid: str) -> dict[str, Any]:
        self._faults.begin("machine_stop")
        with self._lock:
            machine = self._get(uuid)
            if machine["state"] != "stopped":
                self._require_not_provisioning(machine, "stop")
                machine.update(state="stopped", boot_time=None)
                self._save_state()
            return dict(machine)

    def machine_reboot(self, uuid: str) -> dict[str, Any]:
        self._faults.begin("machine_reboot")
        with self._lock:
            machine = self._get(uuid)
            self._require_not_provisioning(machine, "reboot")
            self._require_shown(uuid, "reboot")
            if machine["state"] != "running":
                room.check_ram_to_boot(machine, self._machines, self.ram_mb)
            # time.time() can repeat within the clock's resolution; a reboot must be visible
            boot_time = max(time.time(), (machine["boot_time"] or 0.0) + 1e-6)
            machine.update(state="running", boot_time=boot_time)
            self._save_state()
            return dict(machine)

    def machine_destroy(self, uuid: str) -> dict[str, Any]:
        self._faults.begin("machine_destroy")
        with self._lock:
            machine = self._machines.pop(uuid, None)
            self._snapshots.pop(uuid, None)
            self._meta.pop(uuid, None)
            self._nics.pop(uuid, None)
            self._migrations.pop(uuid, None)
            if machine is None:
                return _destroyed({"uuid": uuid})
            self._save_state()
            return _destroyed(machine)

    def machine_load(self, uuid: str) -> dict[str, Any]:
        self._faults.begin("machine_load")
        with self._lock:
            return dict(self._get(uuid))

    def machine_update(self, params: dict[str, Any]) -> dict[str, Any]:
        """Resize and/or rename; growth must fit the node as a new machine would."""
        self._faults.begin("machine_update")
        with self._lock:
            machine = self._get(params["uuid"])
            ram = params.get("ram_mb")
            if ram is not None and ram > machine["ram_mb"]:
                reserved = sum(m["ram_mb"] for m in self._machines.values())
                if ram - machine["ram_mb"] > self.ram_mb - reserved:
                    raise InsufficientResources(
                        f"machine needs {ram - machine['ram_mb']} MiB more memory, node has "
                        f"{self.ram_mb - reserved} MiB unreserved")
            disk = params.get("disk_mb")
            free_disk = self.pool_size_mb - room.pool_used_mb(self._images, self._machines)
            if disk is not None and disk - machine["disk_mb"] > free_disk:
                raise InsufficientResources(
                    f"machine needs {disk - machine['disk_mb']} MiB more disk, pool has "
                    f"{free_disk} MiB free")
            for key in ("alias", "ram_mb", "disk_mb"):
                if params.get(key) is not None:
                    machine[key] = params[key]
            self._save_state()
            return dict(machine)

    def machine_update_metadata(self, params: dict[str, Any]) -> dict[str, Any]:
        self._faults.begin("machine_update_metadata")
        with self._lock:
            self._get(params["uuid"])
            meta = self._meta.setdefault(params["uuid"], {"tags": {}, "customer_metadata": {}})
            for kind in ("tags", "customer_metadata"):
                meta[kind] = apply_metadata_change(meta[kind],
                                                   params.get(f"remove_{kind}") or [],
                                                   params.get(f"set_{kind}") or {})
            self._save_state()
            return {kind: dict(values) for kind, values in meta.items()}

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_create(self, uuid: str, name: str) -> dict[str, Any]:
        self._faults.begin("snapshot_create")
        with self._lock:
            self._get(uuid)
            snapshot, new = sim_snapshots.take(self._snapshots.setdefault(uuid, []), name)
            if new:
                self._save_state()
            return dict(snapshot)

    def snapshot_list(self, uuid: str) -> list[dict[str, Any]]:
        self._faults.begin("snapshot_list")
        with self._lock:
            self._get(uuid)
            return [dict(s) for s in self._snapshots.get(uuid, [])]

    def snapshot_rollback(self, uuid: str, name: str) -> dict[str, Any]:
        self._faults.begin("snapshot_rollback")
        with self._lock:
            machine = self._get(uuid)
            sim_snapshots.roll_back(self._snapshots.get(uuid, []), machine, name)
            self._save_state()
            return dict(machine)

    def snapshot_delete(self, uuid: str, name: str) -> str:
        self._faults.begin("snapshot_delete")
        with self._lock:
            self._get(uuid)
            sim_snapshots.delete(self._snapshots.get(uuid, []), name)
            self._save_state()
            return name

    # -- images from machines -------------------------------------------------------------------

    def image_create_from_machine(
        self, uuid: str, image: dict[str, Any], upload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self._faults.begin("image_create_from_machine")
        if upload:
            self.image_store.check(upload["url"], "upload.url")
        with self._lock:
            machine = dict(self._get(uuid))
        return sim_images.image_from_machine(machine, image, upload, self.image_store)

    # -- accounting ---------------------------------------------------------------------------

    def _add_machine(self, spec: Mapping[str, Any], state: str) -> dict[str, Any]:
        """The record of a new machine of ``spec`` (its NICs checked), saved; room is the
        caller's to check."""
        nics = simnet.added(self.server_uuid, self.nic_tags, [], list(spec.get("nics") or []))
        machine = self._machines[spec["uuid"]] = {
            "uuid": spec["uuid"],
            "alias": spec.get("alias", ""),
            "state": state,
            "image_uuid": spec["image_uuid"],
            "ram_mb": int(spec["ram_mb"]),
            "disk_mb": int(spec["disk_mb"]),
            "disk_used_mb": 0,
            "boot_time": None,
            "nics": simnet.summary(nics),
        }
        self._nics[spec["uuid"]] = nics
        self._meta[spec["uuid"]] = {"tags": dict(spec.get("tags") or {}),
                                    "customer_metadata": dict(spec.get("metadata") or {})}
        self._save_state()
        return machine

    def _get(self, uuid: str) -> dict[str, Any]:
        machine = self._machines.get(uuid)
        if machine is None:
            raise MachineNotFound(f"machine {uuid} does not exist on server {self.server_uuid}")
        return machine

    @staticmethod
    def _require_not_provisioning(machine: Mapping[str, Any], action: str) -> None:
        if machine["state"] == "provisioning":
            raise BackendError(
                "MachineNotReady", f"cannot {action} machine {machine['uuid']}: still provisioning"
            )

    # -- persistence --------------------------------------------------------------------------

    def _load_state(self) -> None:
        if self._state_path is None or not self._state_path.exists():
            return
        saved = json.loads(self._state_path.read_text())
        self._images = saved.get("images", {})
        self._machines = saved.get("machines", {})
        self._snapshots = saved.get("snapshots", {})
        self._meta = saved.get("meta", {})
        self._nics = saved.get("nics", {})
        self._overlay = saved.get("overlay", self._overlay)
        self._migrations = saved.get("migrations", {})
        for machine in self._machines.values():
            # a state file from before NICs were kept
            machine.setdefault("nics", simnet.summary(self._nics.get(machine["uuid"], [])))
            # The process died while creating it; the resources were already taken, so the
            # simulated create is complete (a redelivered machine_create then sees it running).
            if machine["state"] == "provisioning":
                machine.update(state="running", boot_time=time.time())
            # a hidden copy is never booted by a node's start
            if self._hidden(machine["uuid"]):
                machine.update(state="stopped", boot_time=None)

    def _save_state(self) -> None:
        if self._state_path is None:
            return
        write_json(self._state_path, {
            "images": self._images, "machines": self._machines, "snapshots": self._snapshots,
            "meta": self._meta, "nics": self._nics, "overlay": self._overlay,
            "migrations": self._migrations})


def _destroyed(machine: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "uuid": machine["uuid"],
        "alias": machine.get("alias", ""),
        "state": "destroyed",
        "image_uuid": machine.get("image_uuid", ""),
        "ram_mb": machine.get("ram_mb", 0),
        "disk_mb": machine.get("disk_mb", 0),
        "disk_used_mb": 0,
        "boot_time": None,
        "nics": [],
    }


def from_settings(
    settings: AgentSettings, server_uuid: str, hostname: str | None = None
) -> SimBackend:
    """A sim node sized by ``settings``; its state file is ``DATA_DIR/sim/<uuid>.json`` when
    ``sim_state`` is on. Its migration progress goes to the head node (the agent's events)."""
    state_path = settings.data_dir / "sim" / f"{server_uuid}.json" if settings.sim_state else None
    return SimBackend(
        server_uuid,
        hostname or resolve_hostname(settings),
        ram_mb=settings.sim_ram_mb,
        cpus=settings.sim_cpus,
        pool_size_mb=settings.sim_disk_gb * 1024,
        latency_ms=settings.sim_latency_ms,
        traits=parse_traits(settings),
        state_path=state_path,
        nic_tags=parse_nic_tags(settings),
        image_store_url=settings.image_store_url,
        image_store_ca=settings.image_store_ca,
        migration_fill=settings.sim_migration_fill,
        transfer_mbps=settings.sim_transfer_mbps,
        migration_progress=tasks.send_migration_progress,
    )
