"""What a node tells the head node without being asked: it is alive, who it is, what it runs.

Two threads serve every node the process hosts, however many: the heartbeater writes one
``HSET sdc:heartbeats`` with a field per node each tick, and the reporter registers the nodes
(sysinfo) and sends a node's status when it changed or has not been sent for a while. Both
survive a Redis restart: a failed tick logs one line per outage and the next tick tries again;
after an outage every node registers again, since the head node may have lost its messages.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from agents import tasks
from agents.backends.base import NodeBackend
from schemas.agent import HEARTBEAT_KEY
from sdccommon import signing

log = logging.getLogger(__name__)

#: what a failed send or write looks like while Redis is away
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    OperationalError,
    ConnectionError,
    OSError,
)


def redis_client(url: str, timeout: float = 5.0) -> redis.Redis:
    """A client that fails at once when Redis is away: the tick loop is the retry, and a
    client retrying inside a tick would only delay the next heartbeat."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0))


class _Ticker:
    """A daemon thread calling ``tick()`` every ``interval`` seconds until stopped."""

    name = "ticker"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.guarded_tick()
            self._stop.wait(self.interval)

    def guarded_tick(self) -> bool:
        """One tick; True if it reached Redis. Logs once when Redis goes away and comes back."""
        try:
            self.tick()
        except CONNECTION_ERRORS as exc:
            if not self._down:
                log.warning("%s: Redis unreachable, retrying every %.1fs: %s",
                            self.name, self.interval, exc)
            self._down = True
            return False
        except Exception:
            log.exception("%s: unexpected failure, retrying next tick", self.name)
            return False
        if self._down:
            log.info("%s: Redis reachable again", self.name)
            self._down = False
            self.reconnected()
        return True

    def tick(self) -> None:
        raise NotImplementedError

    def reconnected(self) -> None:
        """Called on the first good tick after an outage."""


class Heartbeater(_Ticker):
    name = "heartbeater"

    def __init__(
        self,
        client: redis.Redis,
        server_uuids: Iterable[str],
        interval: float = 5.0,
        on_reconnect: Callable[[], None] | None = None,
        keys: Mapping[str, bytes] | None = None,
    ) -> None:
        super().__init__(interval)
        self.client = client
        self.server_uuids = list(server_uuids)
        self.on_reconnect = on_reconnect
        #: the nodes' keys: a beat the head node can check (without them, a bare time)
        self.keys = keys

    def tick(self) -> None:
        now = time.time()
        beats: dict[Any, Any]  # redis-py types its mapping keys invariantly
        if self.keys is None:
            beats = dict.fromkeys(self.server_uuids, str(now))
        else:
            beats = {uuid: signing.beat(self.keys[uuid], uuid, now)
                     for uuid in self.server_uuids}
        self.client.hset(HEARTBEAT_KEY, mapping=beats)

    def reconnected(self) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect()


def status_fingerprint(status: Mapping[str, Any]) -> Any:
    """What makes two status reports different, the report's timestamp aside."""
    return {key: value for key, value in status.items() if key != "timestamp"}


class StatusReporter(_Ticker):
    """Registers each node, then reports its status when it changed, and at least every
    ``status_interval`` seconds.

    A report is a delta (``full: false``: only the machines that changed since the last
    report, with the node's other fields) unless a full one is due: at start and after a
    reconnect (the head node may have lost messages), every ``full_report_interval``
    seconds, and for ``full_report_interval`` seconds after a machine went from the node
    (only a full report's silence about a machine tells the head node it is gone, and that
    takes two reports with a question between them: the suspicion, then the destroy)."""

    name = "status-reporter"

    def __init__(
        self,
        backends: Iterable[NodeBackend],
        check_interval: float = 0.5,
        status_interval: float = 60.0,
        send_sysinfo: Callable[[Mapping[str, Any]], None] = tasks.send_sysinfo,
        send_status: Callable[[Mapping[str, Any]], None] = tasks.send_status,
        full_report_interval: float = 600.0,
        spread: float = 0.9,
    ) -> None:
        super().__init__(check_interval)
        #: nodes that start (or reconnect) together would otherwise send their periodic
        #: reports together, a wave of a whole fleet's reports each interval: each node's
        #: first report counts as sent up to this fraction of an interval earlier
        self.spread = spread
        self.backends = list(backends)
        self._by_uuid = {b.server_uuid: b for b in self.backends}
        self.status_interval = status_interval
        self.full_report_interval = full_report_interval
        self.send_sysinfo = send_sysinfo
        self.send_status = send_status
        self._registered: set[str] = set()
        self._last_sent: dict[str, tuple[Any, float]] = {}
        #: per node: the machines as its last report told them (uuid -> machine)
        self._told: dict[str, dict[str, Any]] = {}
        #: per node: when its last scheduled full report went
        self._full_at: dict[str, float] = {}
        #: per node: its machines when last looked at (every tick, sent or not)
        self._seen: dict[str, set[str]] = {}
        #: per node: machines gone from it (uuid -> when that was seen)
        self._gone: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def register_again(self) -> None:
        """Re-send every node's sysinfo and a full status on the next tick."""
        with self._lock:
            self._registered.clear()
            self._last_sent.clear()
            self._told.clear()
            self._full_at.clear()
            self._seen.clear()
            self._gone.clear()

    reconnected = register_again

    def acknowledge(self, server_uuid: str) -> None:
        """A task reply has just carried this node's change to the head node: take its
        current status as reported, so a burst of provisions does not also send a status
        report per machine. The forced report every ``status_interval`` still goes out."""
        backend = self._by_uuid.get(server_uuid)
        if backend is None:
            return
        try:
            status = backend.status()
        except Exception:  # noqa: BLE001 - the reply went out; the periodic report will follow
            return
        fingerprint = status_fingerprint(status)
        # a machine the reply told of is one the head node knows: if it goes before the
        # next tick, its going needs a full report too
        self._note_gone(server_uuid, {m["uuid"] for m in status["machines"]}, time.monotonic())
        with self._lock:
            last = self._last_sent.get(server_uuid)
            if last is not None:
                self._last_sent[server_uuid] = (fingerprint, last[1])

    def tick(self) -> None:
        for backend in self.backends:
            try:
                self._register(backend)
                self._report(backend)
            except CONNECTION_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - one node's failure must not silence the rest
                log.warning("%s: no report for server %s this tick: %s",
                            self.name, backend.server_uuid, exc)

    def _register(self, backend: NodeBackend) -> None:
        with self._lock:
            if backend.server_uuid in self._registered:
                return
        self.send_sysinfo(backend.sysinfo())
        with self._lock:
            self._registered.add(backend.server_uuid)

    def _report(self, backend: NodeBackend) -> None:
        status = backend.status()
        fingerprint = status_fingerprint(status)
        now = time.monotonic()
        self._note_gone(backend.server_uuid, {m["uuid"] for m in status["machines"]}, now)
        with self._lock:
            last = self._last_sent.get(backend.server_uuid)
        if last is not None and last[0] == fingerprint and now - last[1] < self.status_interval:
            return
        self.send_status(self._shaped(backend.server_uuid, status, now))
        sent_at = now if last is not None else \
            now - random.uniform(0.0, self.spread) * self.status_interval
        with self._lock:
            self._last_sent[backend.server_uuid] = (fingerprint, sent_at)
            self._told[backend.server_uuid] = {m["uuid"]: m for m in status["machines"]}

    def _shaped(self, server_uuid: str, status: Mapping[str, Any], now: float) -> dict[str, Any]:
        """The report to send: full, or a delta of the machines that changed."""
        machines = {m["uuid"]: m for m in status["machines"]}
        with self._lock:
            told = self._told.get(server_uuid)
            gone = self._gone.get(server_uuid)
            full_at = self._full_at.get(server_uuid)
            scheduled = (told is None or full_at is None
                         or now - full_at >= self.full_report_interval)
            if scheduled:
                self._full_at[server_uuid] = now
        if scheduled or told is None or gone:
            return {**status, "full": True}
        changed = [m for uuid, m in machines.items() if told.get(uuid) != m]
        return {**status, "machines": changed, "full": False}

    def _note_gone(self, server_uuid: str, present: set[str], now: float) -> None:
        """Remember the machines gone since the last look (a machine the head node heard
        of only from a task reply counts too), for ``full_report_interval`` seconds."""
        with self._lock:
            gone = self._gone.setdefault(server_uuid, {})
            for uuid in self._seen.get(server_uuid, set()) - present:
                gone.setdefault(uuid, now)
            for uuid, since in list(gone.items()):
                if now - since >= self.full_report_interval or uuid in present:
                    del gone[uuid]
            self._seen[server_uuid] = present
