"""A real Linux compute node: machines are runc containers on copy-on-write clones of images.

Storage is a :class:`~agents.backends.linux.storage.Storage` driver (btrfs by default,
OpenZFS where the node has it; see that module for the pool layout). Each machine also has a
directory ``<state_dir>/machines/<uuid>/`` with its runc bundle (``config.json``, rebuilt
before every start so a rename or resize applies at the next boot), its record and metadata
(:mod:`~agents.backends.linux.records`) and ``console.log`` (the container's stdout and
stderr). Images: :mod:`~agents.backends.linux.images`; containers and the truth about a
machine's state: :mod:`~agents.backends.linux.runtime`.

Networking is :class:`~agents.backends.linux.network.NodeNetwork`'s: every machine has a
network namespace of its own, made (with its NICs, from ``machine.json``'s ``nics`` and
``routes``) before ``runc run`` and deleted with its NICs' veths and filter chains when the
machine stops, is destroyed or fails to boot. A machine with no NIC gets an empty namespace
(loopback only). An agent restart changes nothing (the namespaces of running machines are
still there); after a node reboot the namespaces are gone with the containers, and a start
makes them afresh.

Every running machine has a metadata server (:mod:`~agents.backends.linux.metadata`), started
before ``runc run``, stopped with the machine, and started again for each running machine by a
new agent. A guest's own metadata changes go to ``metadata_listener`` (the agent sends them to
the head node); one it could not take is offered again at the status checks
(:mod:`~agents.backends.linux.metadata_events`).

A machine runs its image's init (``machine.json``'s ``init``, from the spec; none: the node's
default, :data:`agents.backends.oci.DEFAULT_INIT`). A stop sends it the init's
``stop_signal`` and waits ``stop_timeout`` (no init: SIGTERM and the node's stop_timeout)
before SIGKILL. A machine whose init exits by itself is stopped (runc says so); its
container, namespace with its NICs, and metadata server are cleaned up at the next status
check (:meth:`LinuxBackend.status`, every 0.5 s in the agent), or at its next start or stop
if none ran.

Moving machines to and from other nodes: :mod:`~agents.backends.linux.migration` (hidden
records are left out of :meth:`LinuxBackend.list_machines` and never booted).

Node memory in status reports is what the machines are promised (``ram_mb`` minus the RAM of
running machines), as the head node's capacity counts it, not the kernel's free memory.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from agents.backends import oci, transfer
from agents.backends.base import BackendError, ImageNotFound
from agents.backends.host import ip, runc, tar
from agents.backends.linux import nodeinfo
from agents.backends.linux.images import ImageStore
from agents.backends.linux.metadata import MetadataServers, mdata_dir
from agents.backends.linux.metadata_events import MetadataEvents, MetadataListener
from agents.backends.linux.migration import LinuxMigrations
from agents.backends.linux.network import NodeNetwork
from agents.backends.linux.records import (
    MachineRecords,
    describe,
    destroyed,
    machine_record,
    new_nics,
    nic_macs,
    updated_nics,
    write_json,
)
from agents.backends.linux.runtime import Runtime, boot_time, netns_dir, running
from agents.backends.linux.storage import Snapshot, Storage
from agents.backends.linux.usage import CachedList, UsageCache
from agents.backends.migration_progress import ProgressSink
from agents.backends.names import plain_name
from schemas.image_manifest import TAR

MIB = 1024 * 1024
#: limits of a machine, as stored in machine.json and changed by machine_update
LIMIT_FIELDS = ("ram_mb", "disk_mb", "cpu_cap", "vcpus", "max_lwps")
#: the nic tags of a node built without a NodeNetwork (tests): host-local, no machine on them
#: unless a test asks for it
DEFAULT_NIC_TAGS: dict[str, str | None] = {"admin": None}


class LinuxBackend(LinuxMigrations):
    def __init__(
        self,
        server_uuid: str,
        hostname: str,
        storage: Storage,
        *,
        runc_root: Path,
        stop_timeout: float = 10.0,
        usage_ttl: float = 5.0,
        traits: dict[str, Any] | None = None,
        network: NodeNetwork | None = None,
        metadata_listener: MetadataListener | None = None,
        image_store_url: str = "",
        image_store_ca: str = "",
        migration_progress: ProgressSink | None = None,
    ) -> None:
        self.server_uuid = server_uuid
        self.hostname = hostname
        self.storage = storage
        self.runc_root = runc_root
        self.traits = dict(traits or {})
        self.migration_progress = migration_progress
        storage.prepare()
        self.machines_dir = storage.state_dir / "machines"
        self.tmp_dir = storage.state_dir / "tmp"
        self.images = ImageStore(storage, storage.state_dir / "images", self.tmp_dir,
                                 transfer.ImageStoreLink(image_store_url, image_store_ca))
        self.records = MachineRecords(self.machines_dir, server_uuid)
        self.drop_unfinished_receives()
        self.runtime = Runtime(runc_root, stop_timeout=stop_timeout, ttl=usage_ttl)
        self.usage = UsageCache(storage, usage_ttl)
        self.network = network or NodeNetwork(DEFAULT_NIC_TAGS, "auto", storage.state_dir,
                                              netns_dir(runc_root))
        self._leftovers = CachedList(usage_ttl)
        self.metadata_events = MetadataEvents(metadata_listener)
        self.metadata = MetadataServers(mdata_dir(runc_root), self.records,
                                        self.metadata_events.tell)
        # an agent restart: the running machines' guests need their servers again
        for uuid, container in self.runtime.containers().items():
            if running(container) and self.records.find(uuid) is not None:
                self.metadata.start(uuid)

    # -- node facts ---------------------------------------------------------------------------

    def sysinfo(self) -> dict[str, Any]:
        size, _ = self.storage.pool_usage()
        uplinks = self.network.nic_tag_uplinks()
        return {
            "uuid": self.server_uuid,
            "hostname": self.hostname,
            "backend": "linux",
            "system_type": nodeinfo.system_type(),
            "cpus": os.cpu_count() or 1,
            "ram_mb": nodeinfo.meminfo_mb("MemTotal"),
            "pool_size_mb": size // MIB,
            "boot_time": nodeinfo.boot_time(),
            "nic_tags": list(uplinks),
            "nic_tag_uplinks": uplinks,
            "traits": dict(self.traits),
            "kernel": platform.release(),
            "agent_version": nodeinfo.AGENT_VERSION,
            "runs": {"os": list(nodeinfo.RUNS_OSES), "type": list(nodeinfo.RUNS_TYPES),
                     "format": dict(nodeinfo.RUNS_FORMATS)},
        }

    def status(self) -> dict[str, Any]:
        self._clean_up_exited()
        self.metadata_events.resend()
        machines = self.list_machines()
        size, used = self.usage.pool()
        ram_mb = nodeinfo.meminfo_mb("MemTotal")
        promised = sum(m["ram_mb"] for m in machines if m["state"] in ("running", "provisioning"))
        return {
            "server_uuid": self.server_uuid,
            "machines": machines,
            "images": self.storage.image_ids(),
            "pool_size_mb": size // MIB,
            "pool_used_mb": used // MIB,
            "ram_mb": ram_mb,
            "ram_free_mb": max(0, ram_mb - promised),
            "timestamp": time.time(),
            "overlay_version": self.network.overlay_version(),
            "leftovers": self._leftovers.get(self._find_leftovers),
        }

    def list_machines(self) -> list[dict[str, Any]]:
        containers = self.runtime.containers()
        usage = self.usage.machines()
        provisioning = self.records.provisioning()
        return [self._describe(r, containers.get(r["uuid"]), usage, r["uuid"] in provisioning)
                for r in self.shown(self.records.all())]

    def _find_leftovers(self) -> list[str]:
        return self.network.leftovers({r["uuid"]: [n["mac"] for n in r.get("nics") or []]
                                       for r in self.records.all()})

    # -- images -------------------------------------------------------------------------------

    def image_ensure_present(self, image: dict[str, Any]) -> dict[str, Any]:
        present = self.storage.image_present(image["uuid"])
        record = self.images.ensure_present(image)
        if not present:
            self.usage.invalidate()
        return record

    # -- machines -----------------------------------------------------------------------------

    def machine_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        uuid = spec["uuid"]
        with self.records.machine(uuid):
            record = self.records.find(uuid)
            if record is not None and record.get("complete"):
                return self._load(uuid)
            if not self.storage.image_present(spec["image_uuid"]):
                raise ImageNotFound(f"image {spec['image_uuid']} is not in the pool of this node")
            record = machine_record(spec)
            with self.records.provisioning_of(uuid):
                self.records.save_new(record, spec)
                self.storage.machine_clone(spec["image_uuid"], uuid, spec["disk_mb"] * MIB)
                self._boot(record)
                record["complete"] = True
                self.records.save(record)
            self._invalidate_usage()
            return self._load(uuid)

    def machine_start(self, uuid: str) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            container = self.runtime.state(uuid)
            if not running(container):
                self.check_bootable(record)
                if container is not None:  # its init exited by itself: what it left goes
                    self._halt(record)
                self._boot(record)
            return self._load(uuid)

    def machine_stop(self, uuid: str) -> dict[str, Any]:
        with self.records.machine(uuid):
            self._halt(self.records.get(uuid))
            return self._load(uuid)

    def machine_reboot(self, uuid: str) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            self.check_bootable(record)
            self._halt(record)
            self._boot(record)
            return self._load(uuid)

    def machine_destroy(self, uuid: str) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.find(uuid) or {"uuid": uuid}
            self.runtime.remove(uuid)
            self.metadata.remove(uuid)
            self.metadata_events.forget(uuid)
            self.network.unplug(uuid, nic_macs(record))
            self.storage.machine_destroy(uuid)
            self.records.forget(uuid)
            self._invalidate_usage()
            return destroyed(record)

    def machine_load(self, uuid: str) -> dict[str, Any]:
        self.records.get(uuid)
        return self._load(uuid)

    def machine_update(self, params: dict[str, Any]) -> dict[str, Any]:
        """Resize (any limit given) and/or rename. Memory, CPU and pids apply at once to a
        running machine (``runc update``), the disk quota at once, the hostname at next boot."""
        uuid = params["uuid"]
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            changes = {k: params[k] for k in (*LIMIT_FIELDS, "alias") if params.get(k) is not None}
            record.update(changes)
            if "disk_mb" in changes:
                self.storage.set_quota(uuid, record["disk_mb"] * MIB)
            if self.runtime.is_running(uuid) and changes.keys() & {"ram_mb", "cpu_cap",
                                                                    "max_lwps"}:
                runc.update(
                    self.runc_root, uuid,
                    memory_bytes=record["ram_mb"] * MIB,
                    pids_limit=record["max_lwps"],
                    cpu_period=oci.CPU_PERIOD_US,
                    cpu_quota=oci.cpu_quota_us(record["cpu_cap"]),
                    cpu_shares=oci.cpu_shares(record["cpu_cap"]),
                )
            self._write_bundle(record)
            self.records.save(record)
            self._invalidate_usage()
            return self._load(uuid)

    def machine_update_metadata(self, params: dict[str, Any]) -> dict[str, Any]:
        """{tags, customer_metadata, serial} after the change (serial: see records)."""
        uuid = params["uuid"]
        with self.records.machine(uuid):
            meta, _ = self.records.change_metadata(uuid, {
                kind: (params.get(f"remove_{kind}") or [], params.get(f"set_{kind}") or {})
                for kind in ("tags", "customer_metadata")})
            return meta

    # -- NICs ---------------------------------------------------------------------------------

    def machine_add_nics(self, uuid: str, nics: list[dict[str, Any]],
                         routes: dict[str, str] | None = None) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            new = new_nics(record, nics)
            if not new:
                return self._load(uuid)
            routes = (record.get("routes") or {}) if routes is None else routes
            # the record first: a status report in between must not call the new veths
            # leftovers
            self.records.save({**record, "nics": [*record.get("nics", []), *new],
                               "routes": routes})
            if self.runtime.is_running(uuid):
                try:  # a failed add removes what it made itself
                    self.network.add_nics(uuid, new, routes)
                except BaseException:
                    self.records.save(record)
                    raise
            self._leftovers.invalidate()
            return self._load(uuid)

    def machine_remove_nics(self, uuid: str, macs: list[str]) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            gone = [mac for mac in nic_macs(record) if mac in macs]
            if not gone:
                return self._load(uuid)
            if ip.is_netns(self.network.machine_netns(uuid)):  # running, or died behind us
                self.network.remove_nics(uuid, gone)
            self.records.save({**record, "nics": [n for n in record["nics"]
                                                  if n["mac"] not in gone]})
            self._leftovers.invalidate()
            return self._load(uuid)

    def machine_update_nics(self, uuid: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            nics, changed = updated_nics(record, changes)
            # the chains of plugged NICs only (a stopped machine's NICs have none)
            self.network.update_filters(changed)
            self.records.save({**record, "nics": nics})
            return self._load(uuid)

    def set_overlay_peers(self, peers: dict[str, list[str]], version: str) -> dict[str, Any]:
        self.network.set_peers(peers, version)
        return {"version": self.network.overlay_version()}

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_create(self, uuid: str, name: str) -> dict[str, Any]:
        with self.records.machine(uuid):
            self.records.get(uuid)
            if self._find_snapshot(uuid, name) is None:
                self.storage.snapshot_create(uuid, name)
            snapshot = self._find_snapshot(uuid, name)
            assert snapshot is not None
            return _snapshot_dict(snapshot)

    def snapshot_list(self, uuid: str) -> list[dict[str, Any]]:
        self.records.get(uuid)
        return [_snapshot_dict(s) for s in self.storage.snapshot_list(uuid)]

    def snapshot_rollback(self, uuid: str, name: str) -> dict[str, Any]:
        """Stop the machine if it runs, replace its dataset by the snapshot's content, and
        start it again if it was running."""
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            if self._find_snapshot(uuid, name) is None:
                raise BackendError("SnapshotNotFound", f"machine {uuid} has no snapshot {name}")
            was_running = self.runtime.is_running(uuid)
            self._halt(record)
            self.storage.snapshot_rollback(uuid, name, record["disk_mb"] * MIB)
            if was_running:
                self._boot(record)
            self._invalidate_usage()
            return self._load(uuid)

    def snapshot_delete(self, uuid: str, name: str) -> str:
        with self.records.machine(uuid):
            self.records.get(uuid)
            if self._find_snapshot(uuid, name) is not None:
                self.storage.snapshot_delete(uuid, name)
            self._invalidate_usage()
            return name

    def _find_snapshot(self, uuid: str, name: str) -> Snapshot | None:
        return next((s for s in self.storage.snapshot_list(uuid) if s.name == name), None)

    # -- images from machines -------------------------------------------------------------------

    def image_create_from_machine(
        self, uuid: str, image: dict[str, Any], upload: dict[str, Any]
    ) -> dict[str, Any]:
        """Snapshot the machine, archive the snapshot (tar.gz of its root filesystem), PUT it
        to ``upload``; the temporary snapshot and archive are removed whatever happens."""
        self.images.link.check(upload["url"], "upload.url")
        image_uuid = plain_name(image["uuid"], "image uuid")
        snap = f"image-{image_uuid}"
        archive = self.tmp_dir / f"{image_uuid}.tar.gz"
        with self.records.machine(uuid):
            self.records.get(uuid)
            if self._find_snapshot(uuid, snap) is None:
                self.storage.snapshot_create(uuid, snap)
        try:
            tar.create(self.storage.snapshot_path(uuid, snap), archive, "gzip")
            size, sha256 = transfer.file_digest(archive)
            self.images.link.upload(archive, upload)
        finally:
            archive.unlink(missing_ok=True)
            with self.records.machine(uuid):
                if self._find_snapshot(uuid, snap) is not None:
                    self.storage.snapshot_delete(uuid, snap)
        return {"uuid": image["uuid"], "size": size, "sha256": sha256, "compression": "gzip",
                "format": TAR}

    # -- booting and halting ------------------------------------------------------------------

    def _boot(self, record: dict[str, Any]) -> None:
        """Plug the machine's NICs into a namespace of its own, then run its container in it;
        a boot that fails leaves neither behind."""
        uuid = record["uuid"]
        bundle = self._write_bundle(record)
        try:
            self.network.plug(uuid, record.get("nics") or [], record.get("routes") or {})
            self.metadata.start(uuid)
            self.runtime.run(uuid, bundle)
        except BaseException:
            self.metadata.stop(uuid)
            self.network.unplug(uuid, nic_macs(record))
            raise
        finally:
            self._invalidate_usage()

    def _halt(self, record: dict[str, Any]) -> None:
        uuid = record["uuid"]
        init = record.get("init") or {}
        self.runtime.halt(uuid, init.get("stop_signal") or "SIGTERM", init.get("stop_timeout"))
        self.metadata.stop(uuid)
        # no namespace, no veth either (a pair dies with its namespace): a stopped machine's
        # stop costs no network command
        if ip.is_netns(self.network.machine_netns(uuid)):
            self.network.unplug(uuid, nic_macs(record))
        self._invalidate_usage()

    def _write_bundle(self, record: dict[str, Any]) -> Path:
        uuid = record["uuid"]
        bundle = self.records.bundle(uuid)
        (bundle / oci.RESOLV_CONF).write_text(oci.resolv_conf(record.get("resolvers") or []))
        config = oci.config(record, self.storage.machine_root(uuid),
                            netns=self.network.machine_netns(uuid),
                            resolv=bundle / oci.RESOLV_CONF,
                            zonecontrol=self.metadata.machine_dir(uuid))
        write_json(bundle / "config.json", config)
        return bundle

    def _clean_up_exited(self) -> None:
        """Halt the machines whose init exited by itself (runc: ``stopped``), so their
        namespaces, veths and metadata servers do not outlive them; one busy with an
        operation is left for the next check."""
        for uuid, container in self.runtime.containers().items():
            if container["status"] != "stopped":
                continue
            with self.records.machine_if_idle(uuid) as idle:
                record = self.records.find(uuid) if idle else None
                if record is None or not record.get("complete"):
                    continue
                state = self.runtime.state(uuid)  # as it is now that no operation runs
                if state is not None and state["status"] == "stopped":
                    self._halt(record)

    # -- status of one machine ----------------------------------------------------------------

    def _load(self, uuid: str) -> dict[str, Any]:
        record = self.records.get(uuid)
        usage = self.usage.machines(refresh=False)
        return self._describe(record, self.runtime.state(uuid), usage,
                              uuid in self.records.provisioning())

    @staticmethod
    def _describe(record: dict[str, Any], container: dict[str, Any] | None,
                  usage: dict[str, int], provisioning: bool) -> dict[str, Any]:
        return describe(record, running=running(container), boot_time=boot_time(container),
                        disk_used_bytes=usage.get(record["uuid"], 0), provisioning=provisioning)

    def _invalidate_usage(self) -> None:
        self.usage.invalidate()
        self.runtime.invalidate()
        self._leftovers.invalidate()


def _snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {"name": snapshot.name, "created_at": snapshot.created_at,
            "size_mb": math.ceil(snapshot.size_bytes / MIB)}
