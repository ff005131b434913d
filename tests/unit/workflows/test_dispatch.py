"""The Celery side of the job queue, on the real Redis of the test fixtures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.support.net import free_port
from workflows.celery_app import make_app
from workflows.dispatch import CeleryJobQueue


def test_backlog_counts_the_messages_waiting_for_the_worker(settings: Any) -> None:
    queue = CeleryJobQueue(make_app(settings))
    assert queue.backlog() == 0
    for n in range(3):  # no worker runs here: they stay queued
        queue.enqueue(f"job-{n}")
    assert queue.backlog() == 3


def test_an_unreachable_broker_is_an_unknown_backlog(settings: Any) -> None:
    away = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    queue = CeleryJobQueue(make_app(away))
    queue.transport.app.conf.broker_connection_timeout = 1
    queue.transport.app.conf.broker_transport_options = {"max_retries": 0}
    assert queue.backlog() == 0
