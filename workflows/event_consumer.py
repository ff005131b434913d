"""``sdc headnode events``: node events taken from the ``nodes`` queue a batch at a time.

Why not Celery's worker: it runs one task per message, so every status report cost a
transaction of its own, and it shared the ``headnode`` queue with the jobs (admission control
counted the reports as a provision backlog). Why not celery-batches: it hands its batch
function simplified requests, and the signature check (sdccommon/signing.py) needs each
message's own headers; bending it to keep them costs more than the small kombu consumer
here, on the Celery app's own broker connection (kombu already carries every message of
ours). The messages are the agents' Celery messages, unchanged: ``events.*`` tasks, signed
as before, so an agent needs nothing new to reach either consumer.

Each batch: up to ``batch_size`` messages, or what came within ``wait`` seconds of the
first. Every message is checked exactly as :class:`signing.SignedTask` checks a task (the
same :func:`signing.check`: signed, by a node not revoked, speaking only for itself); a
refused or malformed one is logged and acknowledged (dropped). The rest apply in one
transaction (workflows/node_events.py); after the commit come the questions, the overlay
messages and the doctor's leftovers, then the acknowledgements. If the transaction fails,
each message applies again in a transaction of its own, so one bad message cannot sink the
others: one that fails alone is logged with its server and dropped (its failure is its
own; retrying the same input would fail the same way, and the node's next report brings
the news again). A database that is away fails every message: then nothing is
acknowledged and the process exits, for its supervisor to start a fresh one; the broker
gives the messages again after its visibility timeout.

A status report for a server not registered yet (its sysinfo is in another batch, or
another consumer's) is kept in Redis, as signed, for :data:`EARLY_TTL` seconds, and applied
(checked again) right after the registration commits.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu import Exchange, Queue
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from headnode.services import doctor, migration_progress, node_metadata, overlay, revocation
from headnode.store.models import Server
from schemas.agent import NODES_QUEUE, ServerStatusSchema
from schemas.migrations import EVENT_MIGRATION_PROGRESS
from sdccommon import signing
from workflows import node_events, nodes

log = logging.getLogger(__name__)

SYSINFO, STATUS, METADATA = ("events.server_sysinfo", "events.server_status",
                             "events.machine_metadata")
PROGRESS = EVENT_MIGRATION_PROGRESS
#: the tasks this consumer takes; anything else on the queue is dropped with a log
TASKS = (SYSINFO, STATUS, METADATA, PROGRESS)
#: ``<prefix><server uuid>``: a Redis list of reports that came before the registration
EARLY_KEY = "sdc:events:early:"
#: seconds an early report is kept (a node not registered by then sends a full report
#: when it registers anyway: the agent's first report after start is full)
EARLY_TTL = 600
#: early reports kept per server (the newest)
EARLY_KEEP = 4
#: made once: building a schema costs more than loading a report with it
STATUS_SCHEMA = ServerStatusSchema()


@dataclass
class Event:
    """One message as it came: what the signature covers, and how to acknowledge it."""

    task: str
    id: str
    headers: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    ack: Callable[[], None] = lambda: None
    #: the proven sender, once checked
    sender: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """What :func:`signing.check` reads of a request."""
        return self.headers.get(key, default)

    @property
    def server_uuid(self) -> str:
        first = self.args[0] if self.args and isinstance(self.args[0], dict) else {}
        return str(first.get("server_uuid") or first.get("UUID") or "?")

    def dumps(self) -> str:
        return json.dumps({"task": self.task, "id": self.id, "args": self.args,
                           "kwargs": self.kwargs,
                           "headers": {k: self.headers.get(k) for k in
                                       (signing.SENDER, signing.AUDIENCE, signing.SIGNATURE)}})

    @classmethod
    def loads(cls, text: str | bytes) -> Event:
        data = json.loads(text)
        return cls(str(data["task"]), str(data["id"]), dict(data["headers"]),
                   list(data["args"]), dict(data["kwargs"]))


def from_message(message: Any) -> Event:
    """An event of a kombu message carrying a Celery (protocol 2) task."""
    headers = dict(message.headers or {})
    args, kwargs, *_ = message.decode()
    return Event(str(headers.get("task")), str(headers.get("id")), headers, list(args),
                 dict(kwargs), ack=message.ack)


def verify(event: Event) -> bool:
    """Check the event as a signed task is checked; True if it may apply."""
    if event.task not in TASKS:
        log.warning("dropped message %s on the %s queue: %s is not a node event", event.id,
                    NODES_QUEUE, event.task)
        return False
    if not signing.enabled():
        event.sender = signing.HEADNODE
        return True
    try:
        event.sender = signing.check(event.task, event, event.args, event.kwargs)
    except signing.Refused as exc:
        log.warning("refused message %s (task %s, claimed sender %s): %s", event.id,
                    event.task, event.get(signing.SENDER) or "none", exc)
        return False
    return True


@dataclass
class Applied:
    """What a committed batch leaves to do."""

    peers: list[overlay.Message] = field(default_factory=list)
    questions: list[nodes.Question] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    early: list[Event] = field(default_factory=list)
    #: raw reports of known servers, for the doctor's leftovers
    reports: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0


class Consumer:
    """Applies batches of events; the kombu loop is :meth:`run`."""

    def __init__(self, sessions: Callable[[], Session], client: redis.Redis,
                 resend_interval: float, ask: Callable[[list[nodes.Question]], None],
                 send_overlay: Callable[[list[overlay.Message]], None]) -> None:
        self.sessions = sessions
        self.client = client
        self.resend_interval = resend_interval
        self.ask = ask
        self.send_overlay = send_overlay

    # -- a batch ---------------------------------------------------------------------------

    def handle(self, events: Sequence[Event], follow_early: bool = True) -> int:
        """Check, apply and acknowledge ``events``; returns how many applied. Raises (and
        acknowledges nothing) only when the database is away."""
        good = [e for e in events if verify(e)]
        done = self._apply(good)
        log.debug("batch of %d: %d applied, %d early, %d questions", len(events),
                  done.applied, len(done.early), len(done.questions))
        self._after(done, follow_early)
        for event in events:
            event.ack()
        return done.applied

    def _apply(self, events: list[Event]) -> Applied:
        if not events:
            return Applied()
        try:
            return self._transaction(events)
        except DBAPIError as exc:
            if exc.connection_invalidated or _database_away(exc):
                raise
            log.warning("a batch of %d node events failed (%s); applying each alone",
                        len(events), exc.__class__.__name__)
        except Exception as exc:  # noqa: BLE001 - one bad message must not sink the batch
            log.warning("a batch of %d node events failed (%s: %s); applying each alone",
                        len(events), exc.__class__.__name__, exc)
        done = Applied()
        for event in events:
            try:
                one = self._transaction([event])
            except DBAPIError as exc:
                if exc.connection_invalidated or _database_away(exc):
                    raise
                log.error("dropped %s of server %s (message %s): %s", event.task,
                          event.server_uuid, event.id, exc)
                continue
            except Exception:
                log.exception("dropped %s of server %s (message %s)", event.task,
                              event.server_uuid, event.id)
                continue
            done = _merge(done, one)
        return done

    def _transaction(self, events: list[Event]) -> Applied:
        done = Applied()
        statuses: list[dict[str, Any]] = []
        by_uuid: dict[str, list[Event]] = {}
        for event in events:
            if event.task == STATUS:
                try:
                    status = STATUS_SCHEMA.load(event.args[0], unknown="exclude")
                except (ValidationError, IndexError, TypeError) as exc:
                    log.warning("dropped status report %s of server %s: %s", event.id,
                                event.server_uuid, getattr(exc, "messages", exc))
                    continue
                statuses.append(status)
                by_uuid.setdefault(status["server_uuid"], []).append(event)
        with self.sessions() as session, session.begin():
            sysinfos = [e for e in events if e.task == SYSINFO]
            # signing refuses a forgotten node's messages; this holds where signing is off
            # too (one read for the batch, before any registration is flushed)
            revoked = revocation.revoked_among(
                session, [str(e.args[0].get("UUID")) for e in sysinfos])
            for event in sysinfos:
                self._register(session, event, done, revoked)
            result = node_events.apply_reports(session, statuses, done.peers)
            progress = 0
            for event in events:
                if event.task == METADATA:
                    node_metadata.apply_guest_change(session, event.args[0])
                elif event.task == PROGRESS and event.args:
                    progress += migration_progress.apply_progress(session, event.args[0],
                                                                  event.sender)
            if result.servers:
                done.questions = nodes.due_questions(session, self.resend_interval,
                                                     server_uuids=result.servers)
        early = {s["server_uuid"] for s in result.early}
        done.early = [e for uuid in sorted(early) for e in by_uuid[uuid]]
        done.reports = [e.args[0] for uuid, evs in by_uuid.items() if uuid not in early
                        for e in evs]
        done.applied = result.applied + len(done.registered) + progress + sum(
            e.task == METADATA for e in events)
        return done

    def _register(self, session: Session, event: Event, done: Applied,
                  revoked: set[str]) -> None:
        sysinfo = event.args[0]
        if str(sysinfo.get("UUID")) in revoked:
            log.warning("sysinfo of forgotten server %s ignored: its credentials are "
                        "revoked", sysinfo.get("UUID"))
            return
        server = nodes.register_server(session, sysinfo, done.peers)
        done.registered.append(server.uuid)
        log.info("server %s (%s) registered", server.uuid, server.hostname)

    def _after(self, done: Applied, follow_early: bool) -> None:
        """What a committed batch sends and keeps; then the early reports now due."""
        self.ask(done.questions)
        self.send_overlay(done.peers)
        if done.reports:
            with self.client.pipeline(transaction=False) as pipe:
                for report in done.reports:
                    doctor.keep_leftovers(pipe, report)  # type: ignore[arg-type]
                pipe.execute()
        due = set(done.registered)
        if done.early:
            keep_early(self.client, done.early)
            # A registration may have committed, and looked for early reports, between
            # our read and our keeping them: look once more, now that they are kept.
            due |= self._registered({e.server_uuid for e in done.early})
        if due and follow_early:
            early = take_early(self.client, due)
            if early:
                self.handle(early, follow_early=False)

    def _registered(self, uuids: Iterable[str]) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Server.uuid).where(Server.uuid.in_(sorted(uuids)))))

    # -- the queue -------------------------------------------------------------------------

    def run(self, connection: Any, batch_size: int, wait: float,
            stop: threading.Event) -> None:
        """Take batches from the ``nodes`` queue until ``stop`` is set."""
        queue = Queue(NODES_QUEUE, Exchange(NODES_QUEUE, "direct"), routing_key=NODES_QUEUE)
        pending: list[Any] = []
        with connection.Consumer([queue], callbacks=[lambda _b, m: pending.append(m)],
                                 accept=["json"], prefetch_count=batch_size):
            while not stop.is_set():
                _fill(connection, pending, batch_size, wait, stop)
                if pending:
                    events = [_event_or_drop(m) for m in pending]
                    pending.clear()
                    self.handle([e for e in events if e is not None])


def _fill(connection: Any, pending: list[Any], batch_size: int, wait: float,
          stop: threading.Event) -> None:
    """Wait for a first message (up to ``wait``), then take more for at most ``wait``."""
    deadline = time.monotonic() + wait
    while len(pending) < batch_size and not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if pending:
                return
            deadline, remaining = time.monotonic() + wait, wait
        try:
            connection.drain_events(timeout=remaining)
        except TimeoutError:
            continue


def _event_or_drop(message: Any) -> Event | None:
    try:
        return from_message(message)
    except Exception as exc:  # noqa: BLE001 - a message we cannot read is dropped, and said
        log.warning("dropped an unreadable message on the %s queue: %s", NODES_QUEUE, exc)
        message.ack()
        return None


def _database_away(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


def _merge(into: Applied, one: Applied) -> Applied:
    into.peers += one.peers
    into.questions += one.questions
    into.registered += one.registered
    into.early += one.early
    into.reports += one.reports
    into.applied += one.applied
    return into


def keep_early(client: redis.Redis, events: Iterable[Event]) -> None:
    """Keep reports of servers not registered yet, as they came (signed)."""
    with client.pipeline(transaction=False) as pipe:
        for event in events:
            key = EARLY_KEY + event.server_uuid
            pipe.rpush(key, event.dumps())
            pipe.ltrim(key, -EARLY_KEEP, -1)
            pipe.expire(key, EARLY_TTL)
        pipe.execute()


def take_early(client: redis.Redis, server_uuids: Iterable[str]) -> list[Event]:
    """The kept reports of ``server_uuids``, removed from Redis (to be checked again: anyone
    who reaches Redis could have written them)."""
    uuids = sorted(server_uuids)
    with client.pipeline(transaction=True) as pipe:
        for uuid in uuids:
            pipe.lrange(EARLY_KEY + uuid, 0, -1)
            pipe.delete(EARLY_KEY + uuid)
        replies = pipe.execute()
    events = []
    for items in replies[0::2]:
        for item in items:
            try:
                events.append(Event.loads(item))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("dropped an unreadable kept report: %s", exc)
    return events


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the batch in hand finishes, then the loop ends."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop
