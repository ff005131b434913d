"""Sending messages: the Celery side of the engine's Transport and of services' JobQueue."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError

from headnode.config import HeadnodeSettings
from schemas.agent import HEADNODE_QUEUE, agent_queue, agent_task
from sdccommon import signing

RUN_STEP = "workflows.run_step"
CANCEL_JOB = "workflows.cancel_job"
#: A new job's first message waits behind every other message of the workflow worker (agent
#: replies, retries, events): on Redis, kombu keeps one list per priority and the worker pops
#: priority 0 first. Work in progress finishes before new work starts, so a busy head node
#: keeps each provision's time short instead of making every job wait twice in one queue.
NEW_JOB_PRIORITY = 9
#: seconds one measure of the workflow backlog is used for
BACKLOG_TTL = 0.1

log = logging.getLogger(__name__)


class CeleryTransport:
    """The engine's ``Transport`` over Celery."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send_step(self, job_uuid: str, attempt: int) -> None:
        self.app.send_task(RUN_STEP, args=[job_uuid, attempt], queue=HEADNODE_QUEUE)

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any],
                   reply: dict[str, Any] | None) -> None:
        # The reply carries the outcome to the engine: storing it in the result backend too
        # would only cost the node a Redis write per task.
        self.app.send_task(agent_task(op), args=[server_uuid, params, reply],
                           queue=agent_queue(server_uuid), ignore_result=reply is not None)

    def send_raw(self, queue: str, task: str, args: list[Any]) -> None:
        self.app.send_task(task, args=args, queue=queue)


class CeleryJobQueue:
    """What the API uses to start a committed job."""

    def __init__(self, app: Celery | None = None, backlog_ttl: float = BACKLOG_TTL) -> None:
        if app is None:
            from workflows.celery_app import app as default_app

            app = default_app
        self.app = app
        self.backlog_ttl = backlog_ttl
        self._backlog, self._backlog_at = 0, -backlog_ttl

    @classmethod
    def for_settings(cls, settings: HeadnodeSettings) -> CeleryJobQueue:
        """A queue on the broker these settings name (the default app reads SDC_*)."""
        from workflows.celery_app import app as default_app
        from workflows.celery_app import make_app

        same = default_app.conf.broker_url == settings.redis_url
        app = default_app if same else make_app(settings)
        # the default app was made with the settings of the process's start
        signing.serve_headnode(settings.resolved_message_key)
        return cls(app)

    def backlog(self) -> int:
        # Measured at most every ``backlog_ttl`` seconds per process: every create asks,
        # and an answer a tenth of a second old is as good for admission control.
        now = time.monotonic()
        if now - self._backlog_at >= self.backlog_ttl:
            self._backlog, self._backlog_at = self._measure_backlog(), now
        return self._backlog

    def _measure_backlog(self) -> int:
        try:
            with self.app.pool.acquire(block=True) as conn:
                declared = conn.default_channel.queue_declare(HEADNODE_QUEUE, passive=True)
                return int(declared.message_count)
        except ChannelError:
            return 0  # Redis drops an empty list: no queue is an empty queue
        except Exception as exc:  # noqa: BLE001 - an unknown backlog must not refuse work
            log.warning("cannot measure the workflow backlog now (%s)", exc)
            return 0

    def enqueue(self, job_uuid: str) -> None:
        # Attempt 1 is the first step of every new job (engine.new_job). The job is already
        # committed: if Redis cannot take the message now, the reconciler's sweep sends it
        # again once the job's grace deadline passes, so the request still succeeds.
        try:
            self.app.send_task(RUN_STEP, args=[job_uuid, 1], queue=HEADNODE_QUEUE,
                               priority=NEW_JOB_PRIORITY)
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds of connection errors
            log.warning("could not enqueue job %s now (%s); the sweep will", job_uuid, exc)

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any]) -> None:
        # Fire-and-forget, after the commit: what it carries is in the database already.
        try:
            self.app.send_task(agent_task(op), args=[server_uuid, params, None],
                               queue=agent_queue(server_uuid), ignore_result=True)
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds of connection errors
            log.warning("could not send %s to server %s now (%s)", op, server_uuid, exc)

    def cancel(self, job_uuid: str) -> None:
        # The cancel is committed on the job: if this message is lost, the sweep acts on it.
        # It has the default (highest) priority, ahead of new jobs.
        try:
            self.app.send_task(CANCEL_JOB, args=[job_uuid], queue=HEADNODE_QUEUE)
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds of connection errors
            log.warning("could not send the cancel of job %s now (%s); the sweep will",
                        job_uuid, exc)
