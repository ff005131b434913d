"""The NIC and overlay operations of :class:`agents.backends.sim.SimBackend`, kept apart from
its machine operations: the NICs as bookkeeping (``simnet``), the overlay peers as last
applied."""

from __future__ import annotations

import threading
from typing import Any

from agents.backends import simnet
from agents.backends.simfaults import Faults


class SimNics:
    # the node's state, set up by SimBackend
    server_uuid: str
    nic_tags: dict[str, str | None]
    _lock: threading.RLock
    _nics: dict[str, list[dict[str, Any]]]
    _overlay: dict[str, Any]
    _faults: Faults

    def _get(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def _save_state(self) -> None:
        raise NotImplementedError


    def machine_add_nics(self, uuid: str, nics: list[dict[str, Any]],
                         routes: dict[str, str] | None = None) -> dict[str, Any]:
        # a simulated machine has no routing table: ``routes`` has nothing to change
        self._faults.begin("machine_add_nics")
        with self._lock:
            machine = self._get(uuid)
            have = self._nics.get(uuid, [])
            self._set_nics(machine, simnet.added(self.server_uuid, self.nic_tags, have, nics))
            return dict(machine)

    def machine_remove_nics(self, uuid: str, macs: list[str]) -> dict[str, Any]:
        self._faults.begin("machine_remove_nics")
        with self._lock:
            machine = self._get(uuid)
            gone = set(macs)
            self._set_nics(machine, [n for n in self._nics.get(uuid, []) if n["mac"] not in gone])
            return dict(machine)

    def machine_update_nics(self, uuid: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
        self._faults.begin("machine_update_nics")
        with self._lock:
            machine = self._get(uuid)
            self._set_nics(machine, simnet.changed(uuid, self._nics.get(uuid, []), changes))
            return dict(machine)

    def machine_nics(self, uuid: str) -> list[dict[str, Any]]:
        """The full NIC specs of a machine as the node keeps them (tests look at the flags)."""
        with self._lock:
            self._get(uuid)
            return [dict(nic) for nic in self._nics.get(uuid, [])]

    def set_overlay_peers(self, peers: dict[str, list[str]], version: str) -> dict[str, Any]:
        self._faults.begin("node_set_overlay_peers")
        with self._lock:
            self._overlay = {"version": version,
                             "peers": {tag: list(addresses) for tag, addresses in peers.items()}}
            self._save_state()
            return {"version": version}

    def overlay_peers(self) -> dict[str, list[str]]:
        with self._lock:
            return {tag: list(addresses) for tag, addresses in self._overlay["peers"].items()}

    def _set_nics(self, machine: dict[str, Any], nics: list[dict[str, Any]]) -> None:
        self._nics[machine["uuid"]] = nics
        machine["nics"] = simnet.summary(nics)
        self._save_state()
