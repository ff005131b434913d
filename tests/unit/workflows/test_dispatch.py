"""The Celery side of the job queue, on the real Redis of the test fixtures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis

from schemas.agent import HEADNODE_QUEUE
from sdccommon.supervise import ConsumerWatchdog
from tests.support.net import free_port
from workflows.celery_app import make_app
from workflows.dispatch import CeleryJobQueue, CeleryTransport


def test_backlog_counts_the_messages_waiting_for_the_worker(settings: Any) -> None:
    queue = CeleryJobQueue(make_app(settings), backlog_ttl=0)
    assert queue.backlog() == 0
    for n in range(3):  # no worker runs here: they stay queued
        queue.enqueue(f"job-{n}")
    assert queue.backlog() == 3


def test_an_unreachable_broker_is_an_unknown_backlog(settings: Any) -> None:
    away = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    queue = CeleryJobQueue(make_app(away), backlog_ttl=0)
    queue.app.conf.broker_connection_timeout = 1
    queue.app.conf.broker_transport_options = {"max_retries": 0}
    assert queue.backlog() == 0


def test_work_in_progress_is_taken_before_a_new_job(settings: Any) -> None:
    app = make_app(settings)
    queue = CeleryJobQueue(app, backlog_ttl=0)
    queue.enqueue("new-job")  # the API starting a job
    CeleryTransport(app).send_step("running-job", 3)  # a retry of a job under way
    CeleryTransport(app).send_agent("server-1", "machine_load", {}, None)  # not ours to count
    assert queue.backlog() == 2
    with app.connection_for_read() as conn:
        taken = [conn.default_channel.basic_get(HEADNODE_QUEUE, no_ack=True).decode()[0]
                 for _ in range(2)]
    assert taken == [["running-job", 3], ["new-job", 1]]
    assert queue.backlog() == 0


def test_the_backlog_is_measured_at_most_once_per_ttl(settings: Any) -> None:
    queue = CeleryJobQueue(make_app(settings), backlog_ttl=60)
    assert queue.backlog() == 0
    queue.enqueue("job-1")
    assert queue.backlog() == 0  # the measure of a moment ago
    queue.backlog_ttl = 0
    assert queue.backlog() == 1


def test_the_workers_watchdog_sees_new_jobs_waiting(settings: Any) -> None:
    """A stalled workflow worker is found even when only new jobs (the lowest priority
    list) wait for it."""
    app = make_app(settings)
    CeleryJobQueue(app).enqueue("new-job")
    CeleryTransport(app).send_step("running-job", 3)
    dog = ConsumerWatchdog(settings.redis_url, [HEADNODE_QUEUE])
    assert dog.waiting(redis.Redis.from_url(settings.redis_url)) == 2
