"""A provision in progress on a SmartOS node, and what must wait for it to end.

``vmadm create`` returns when VM.js's provision ends: the zone runs, or it went 'failed'
because its 'provisioning' transition expired (VM.js's ``PROVISION_TIMEOUT``, 300 s). Until
then the zone exists in state 'provisioning'. Deleting it meanwhile races VM.js's install and
first boot, so, as sdc-cn-agent's machine_destroy does (it waits for its own provision marker
to go, at most 10 minutes), a destroy here first waits for the provision to end:

- in this agent, behind the machine's lock, which a create holds for as long as its
  ``vmadm create`` runs (the zone may not even exist yet in vmadm's eyes);
- on the node, while vmadm reports the zone 'provisioning' (a create of an earlier agent
  process, or one whose ``vmadm create`` the agent gave up on), polling ``vmadm list``, at most
  ``vmadm.CREATE_TIMEOUT`` (past VM.js's own limit, so the zone has ended one way or the other
  unless something is stuck; then the destroy goes ahead, as sdc-cn-agent's does).

A repeated create (the head node asks again while the first still runs) waits the same way
and answers the machine as the provision left it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from agents.backends.host import vmadm

#: vmadm states of a zone whose provision (or receive) has not ended (vmadm(8) "VM STATES")
IN_PROGRESS = ("provisioning", "configured", "incomplete", "receiving")


class ProvisionGuard:
    def __init__(self, *, poll: float = 1.0, wait: float = vmadm.CREATE_TIMEOUT) -> None:
        self.poll = poll
        self.wait = wait
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @contextlib.contextmanager
    def machine(self, uuid: str) -> Iterator[None]:
        """One create or destroy of a machine at a time in this agent."""
        with self._locks_lock:
            lock = self._locks.setdefault(uuid, threading.Lock())
        with lock:
            yield

    def forget(self, uuid: str) -> None:
        """The machine is gone: drop its lock (a later create makes a new one)."""
        with self._locks_lock:
            self._locks.pop(uuid, None)

    def settled_state(self, load_state: Callable[[], str | None]) -> str | None:
        """The zone's vmadm state once no provision is in progress (None: no such zone),
        or its state at the end of the wait."""
        deadline = time.monotonic() + self.wait
        state = load_state()
        while state in IN_PROGRESS and time.monotonic() < deadline:
            time.sleep(self.poll)
            state = load_state()
        return state
