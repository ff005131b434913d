"""The Celery tasks of the head node: thin wrappers over the engine and the node handlers."""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

import redis

from headnode.config import HeadnodeSettings, get_settings
from headnode.services import capacity, doctor, node_metadata, overlay, revocation
from headnode.store.db import session_factory
from schemas.agent import HEARTBEAT_KEY, agent_queue, agent_task
from sdccommon import signing
from workflows import event_consumer as event_consumer_module
from workflows import liveness, nodes
from workflows.celery_app import app
from workflows.dispatch import CeleryTransport
from workflows.engine import Engine

log = logging.getLogger(__name__)

#: a forged heartbeat stays in the table until overwritten: said once a minute, not per pass
FORGED_BEAT_WARN_INTERVAL = 60.0
_warned = {"forged_beats": -FORGED_BEAT_WARN_INTERVAL}


@cache
def _settings() -> HeadnodeSettings:
    return get_settings()


@cache
def _engine() -> Engine:
    # Built on first use in each worker process, after the fork, so no process shares a
    # database connection with another.
    settings = _settings()
    return Engine(settings, session_factory(settings.resolved_database_url),
                  CeleryTransport(app))


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(_settings().redis_url, socket_timeout=5)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@app.task(name="workflows.run_step")
def run_step(job_uuid: str, attempt: int) -> None:
    _engine().run_step(job_uuid, attempt)


@app.task(name="workflows.cancel_job")
def cancel_job(job_uuid: str) -> None:
    _engine().cancel(job_uuid)


@app.task(name="events.task_reply")
def task_reply(reply: dict[str, Any], outcome: dict[str, Any]) -> None:
    # signing has checked that the outcome names its sender; a question's answer is checked
    # against the machine's server by apply_answer
    if reply.get("query") == nodes.MISSING_QUERY:
        with _engine().sessions() as session, session.begin():
            nodes.apply_answer(session, reply, outcome)
        return
    sender = signing.current_sender()
    _engine().on_agent_reply(reply, outcome,
                             from_server=None if sender in (None, signing.HEADNODE) else sender)


@app.task(name="events.server_sysinfo")
def server_sysinfo(sysinfo: dict[str, Any]) -> None:
    peers: list[overlay.Message] = []
    with _engine().sessions() as session, session.begin():
        # signing refuses a forgotten node's messages; this holds where signing is off too
        if revocation.is_revoked(session, str(sysinfo.get("UUID"))):
            log.warning("sysinfo of forgotten server %s ignored: its credentials are "
                        "revoked", sysinfo.get("UUID"))
            return
        server = nodes.register_server(session, sysinfo, peers)
        log.info("server %s (%s) registered", server.uuid, server.hostname)
    _send_overlay(peers)


@app.task(name="events.server_status")
def server_status(status: dict[str, Any]) -> None:
    peers: list[overlay.Message] = []
    with _engine().sessions() as session, session.begin():
        nodes.apply_status(session, status, peers)
        questions = nodes.due_questions(session, _settings().resend_interval,
                                        server_uuid=status.get("server_uuid"))
    _ask(questions)
    _send_overlay(peers)
    doctor.keep_leftovers(_redis(), status)


@app.task(name="events.machine_metadata")
def machine_metadata(change: dict[str, Any]) -> None:
    """A guest changed its metadata (mdata-put/mdata-delete): its node's map, applied if
    newer than the one applied last; a bad or stray event is logged and dropped."""
    with _engine().sessions() as session, session.begin():
        node_metadata.apply_guest_change(session, change)


def event_consumer() -> event_consumer_module.Consumer:
    """The node-event consumer of this process (``sdc headnode events``), applying with the
    same database, Redis and senders as the tasks above."""
    return event_consumer_module.Consumer(_engine().sessions, _redis(),
                                          _settings().resend_interval, _ask, _send_overlay)


def _send_overlay(messages: list[overlay.Message]) -> None:
    """Overlay peers to nodes, fire-and-forget (a lost one is sent again when the node's
    report shows the old version)."""
    if messages:
        nodes.send_overlay(messages, CeleryTransport(app).send_raw, _redis(),
                           _settings().resend_interval)


def _ask(questions: list[nodes.Question]) -> None:
    """Ask nodes about machines a report left out; the answers come as events.task_reply."""
    for question in questions:
        app.send_task(agent_task("machine_load"),
                      args=[question.server_uuid, {"uuid": question.machine_uuid},
                            question.reply()],
                      queue=agent_queue(question.server_uuid), ignore_result=True)


def _heartbeat_table() -> tuple[dict[str, float], float]:
    """The heartbeats, and since when this heartbeat table has been seen whole
    (liveness.table_since: after a Redis restart or a long outage it starts over)."""
    client = _redis()
    since = liveness.table_since(client, _settings().heartbeat_lifetime,
                                 _settings().reconcile_interval)
    beats: dict[str, float] = {}
    forged = 0
    for key, value in client.hgetall(HEARTBEAT_KEY).items():
        server_uuid = _text(key)
        at = signing.beat_time(server_uuid, _text(value))
        if at is None:
            forged += 1
        else:
            beats[server_uuid] = at
    if forged and time.monotonic() - _warned["forged_beats"] >= FORGED_BEAT_WARN_INTERVAL:
        _warned["forged_beats"] = time.monotonic()
        log.warning("ignored %d heartbeat(s) that do not prove their node wrote them (or "
                    "come from forgotten nodes)", forged)
    return beats, since


@app.task(name="workflows.reconcile")
def reconcile() -> dict[str, Any]:
    """Every few seconds: server liveness, overdue job steps, orphaned reservations."""
    settings = _settings()
    engine = _engine()
    beats, table_since = _heartbeat_table()
    with engine.sessions() as session, session.begin():
        done = liveness.reconcile(session, beats, settings.heartbeat_lifetime,
                                  table_since=table_since)
    gone, back = done.unknown, done.running
    for server_uuid in back:
        # Ask the node for its truth now rather than waiting for its next periodic report.
        app.send_task(agent_task("report_status"), args=[server_uuid, {}, None],
                      queue=agent_queue(server_uuid))
    expired = engine.sweep()
    with engine.sessions() as session, session.begin():
        orphans = capacity.release_orphans(session)
        questions = nodes.due_questions(session, settings.resend_interval)
        peers = nodes.overlay_directory_changes(session, _redis())
    _ask(questions)  # questions (or answers) lost, or left unsettled by an error: ask again
    _send_overlay(peers)
    if gone or back or expired or orphans:
        log.info("reconcile: unknown=%s running=%s expired_steps=%d orphans=%d",
                 gone, back, expired, orphans)
    return {"unknown": gone, "running": back, "expired": expired, "orphans": orphans}
