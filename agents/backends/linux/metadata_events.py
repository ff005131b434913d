"""The news of a guest's own metadata changes, for the head node: each change that a machine's
PUT or DELETE made (``{server_uuid, uuid, customer_metadata, serial}``,
MachineMetadataEventSchema) goes to the node's listener (the agent's
``events.machine_metadata``).

A change the listener could not take (Redis away) is kept, the newest per machine (a map of
a higher serial holds everything an older one did), and offered again by :meth:`resend`,
which the node's status check calls, at most every ``resend_interval`` seconds while it
fails. A later change of the machine that goes through replaces it. The head node applies a
map only if its serial is higher than the one it has, so a late or repeated one is harmless.
What is kept is in memory: an agent that restarts has lost it, and the head node then learns
the map with the reply to its next ``machine_update_metadata`` of that machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: called with a MachineMetadataEventSchema dict; raises when the change could not be sent
MetadataListener = Callable[[dict[str, Any]], None]


class MetadataEvents:
    def __init__(self, listener: MetadataListener | None, resend_interval: float = 5.0) -> None:
        self.listener = listener
        self.resend_interval = resend_interval
        self._lock = threading.Lock()
        self._unsent: dict[str, dict[str, Any]] = {}
        self._next_resend = 0.0

    def tell(self, change: dict[str, Any]) -> bool:
        """Send one change; never raises. True if the listener took it (or there is none)."""
        if self.listener is None:
            return True
        try:
            self.listener(change)
        except Exception:  # the guest's write stands; its news waits for a resend
            log.exception("metadata: could not tell the head node of machine %s's change "
                          "(serial %d); kept to send again", change["uuid"], change["serial"])
            with self._lock:
                self._keep(change)
                self._next_resend = time.monotonic() + self.resend_interval
            return False
        with self._lock:
            kept = self._unsent.get(change["uuid"])
            if kept is not None and kept["serial"] <= change["serial"]:
                del self._unsent[change["uuid"]]
        return True

    def resend(self) -> None:
        """Offer the kept changes again, unless a failure was too recent; stops at the first
        that fails (the broker is away for all of them)."""
        with self._lock:
            if not self._unsent or time.monotonic() < self._next_resend:
                return
            kept = list(self._unsent.values())
        for change in kept:
            if not self.tell(change):
                return

    def unsent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._unsent.values())

    def forget(self, uuid: str) -> None:
        """The machine is gone: nothing of it to send."""
        with self._lock:
            self._unsent.pop(uuid, None)

    def _keep(self, change: dict[str, Any]) -> None:
        kept = self._unsent.get(change["uuid"])
        if kept is None or kept["serial"] < change["serial"]:
            self._unsent[change["uuid"]] = change
