"""The metadata service of a Linux node's machines: one
:class:`~agents.backends.linux.mdata.MetadataServer` per running machine, on
``<runc_root>-mdata/<uuid>/metadata.sock``, that directory bind-mounted read-only at
``/.zonecontrol`` inside the machine (the directory, not the socket file: a server started
again by a new agent binds a new socket file, which the machine then sees).

What a machine reads comes from the node's records (:mod:`~agents.backends.linux.records`):
the read-only ``sdc:*`` keys from ``machine.json``, the customer keys from ``metadata.json``,
read at every request, so a ``machine_update_metadata`` shows at once. The guest's PUTs and
DELETEs are written to ``metadata.json`` under the machine's metadata lock, the one
``machine_update_metadata`` takes, and raise the metadata's ``serial``; after the write, a
PUT or DELETE that changed something is told with ``{server_uuid, uuid, customer_metadata,
serial}`` to :class:`~agents.backends.linux.metadata_events.MetadataEvents` (the agent sends
it as ``events.machine_metadata``; one that cannot be sent is kept and sent again). The
guest's request succeeds whether or not the news went out.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from agents.backends.linux.mdata import MetadataServer, ReadOnlyKeyError, is_read_only
from agents.backends.linux.records import MachineRecords, nic_refs
from agents.backends.names import plain_name

#: takes the news of a guest's change (a MachineMetadataEventSchema dict); never raises
Teller = Callable[[dict[str, Any]], object]
SOCKET_NAME = "metadata.sock"
#: the NIC fields ``sdc:nics`` shows, in vmadm's names
NIC_FIELDS = ("mac", "interface", "ips", "gateways", "primary", "nic_tag", "vlan_id", "mtu")


def mdata_dir(runc_root: Path) -> Path:
    """Where the machines' metadata sockets are kept: beside runc's state, as the network
    namespaces are (tmpfs in production: gone after a node reboot, as the servers are)."""
    return runc_root.with_name(f"{runc_root.name}-mdata")


class RecordsProvider:
    """One machine's metadata, as its guest sees it, from the node's records."""

    def __init__(self, records: MachineRecords, uuid: str, tell: Teller | None = None) -> None:
        self.records = records
        self.uuid = uuid
        self.tell = tell

    def get(self, key: str) -> str | None:
        if is_read_only(key):
            record = self.records.get(self.uuid)
            return internal_keys(record, self.records.server_uuid).get(key)
        value = self._customer().get(key)
        return None if value is None else _as_text(value)

    def keys(self) -> list[str]:
        return sorted(self._customer())

    def put(self, key: str, value: str) -> None:
        self._change([], {key: value}, key)

    def delete(self, key: str) -> None:
        self._change([key], {}, key)

    def _customer(self) -> dict[str, Any]:
        meta = self.records.read_metadata(self.records.get(self.uuid))
        return dict(meta.get("customer_metadata") or {})

    def _change(self, remove: list[str], set_: dict[str, str], key: str) -> None:
        if is_read_only(key):
            raise ReadOnlyKeyError(key)
        meta, changed = self.records.change_metadata(self.uuid,
                                                     {"customer_metadata": (remove, set_)})
        if changed and self.tell is not None:
            self.tell({"server_uuid": self.records.server_uuid, "uuid": self.uuid,
                       "customer_metadata": meta["customer_metadata"],
                       "serial": meta["serial"]})


def internal_keys(record: dict[str, Any], server_uuid: str) -> dict[str, str]:
    """The read-only ``sdc:*`` keys of a machine record."""
    by_mac = {n["mac"]: n for n in record.get("nics") or []}
    nics = [{f: by_mac[ref["mac"]].get(f) for f in NIC_FIELDS} for ref in nic_refs(record)]
    # SmartOS's agent shows routes as a list; a gateway here is always an address, never a
    # "nics[N]" reference, so no route is link-local
    routes = [{"linklocal": False, "dst": dst, "gateway": gw}
              for dst, gw in (record.get("routes") or {}).items()]
    return {
        "sdc:uuid": record["uuid"],
        "sdc:server_uuid": server_uuid,
        "sdc:hostname": record.get("alias", ""),
        "sdc:alias": record.get("alias", ""),
        "sdc:owner_uuid": record.get("owner_uuid", ""),
        "sdc:nics": json.dumps(nics),
        "sdc:resolvers": json.dumps(list(record.get("resolvers") or [])),
        "sdc:routes": json.dumps(routes),
    }


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class MetadataServers:
    """The metadata servers of one node's running machines."""

    #: by socket path, for the whole process: several LinuxBackends on one pool (tests, an
    #: agent restarted in-process) must never leave two servers behind for one machine
    _serving: ClassVar[dict[Path, MetadataServer]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: Path, records: MachineRecords, tell: Teller | None = None) -> None:
        self.root = root
        self.records = records
        self.tell = tell

    def machine_dir(self, uuid: str) -> Path:
        """The host directory the machine sees at ``/.zonecontrol``."""
        return self.root / plain_name(uuid, "machine uuid")

    def socket_path(self, uuid: str) -> Path:
        return self.machine_dir(uuid) / SOCKET_NAME

    def start(self, uuid: str) -> None:
        """A server for the machine, replacing any this process had for it."""
        path = self.socket_path(uuid)
        server = MetadataServer(path, RecordsProvider(self.records, uuid, self.tell))
        with self._lock:
            previous = self._serving.pop(path, None)
            if previous is not None:
                previous.stop()
            server.start()
            self._serving[path] = server

    def stop(self, uuid: str) -> None:
        """No server, no socket (the directory stays: it is the mount source of a machine
        that may still be being started or halted)."""
        path = self.socket_path(uuid)
        with self._lock:
            server = self._serving.pop(path, None)
        if server is not None:
            server.stop()
        path.unlink(missing_ok=True)

    def remove(self, uuid: str) -> None:
        """No server, no directory (destroy)."""
        self.stop(uuid)
        shutil.rmtree(self.machine_dir(uuid), ignore_errors=True)
