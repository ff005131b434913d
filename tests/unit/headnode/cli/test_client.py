"""The operator API client against a live API: a throttled request is sent again after the
wait the API asks for, within the client's budget, and otherwise raises with that wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from headnode.api.app import create_app
from headnode.cli.client import ApiError, OpsClient
from tests.support.jobqueue import RecordingJobQueue
from tests.support.wsgi import served
from tests.unit.headnode.api.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)

BODY = {"owner": "alice", "package": "small", "image": "base-64"}


@pytest.fixture
def busy_api(settings: Any) -> Iterator[tuple[str, RecordingJobQueue]]:
    """A live API whose workflow worker is behind (the backlog is at its limit)."""
    jobs = RecordingJobQueue(waiting=settings.provision_backlog_limit)
    app = create_app(settings, jobs=jobs)
    sdc = app.extensions["sdc"]
    make_server(sdc)
    make_package(sdc, name="small", memory=1024, disk=10240)
    make_image(sdc, name="base-64")
    make_account(sdc, login="alice")
    with served(app) as url:
        yield url, jobs


def test_a_throttled_request_is_sent_again_once_the_backlog_drains(
        busy_api: tuple[str, RecordingJobQueue], settings: Any) -> None:
    url, jobs = busy_api
    drained = threading.Timer(0.3, lambda: setattr(jobs, "waiting", 0))
    drained.start()
    started = time.monotonic()
    machine = OpsClient(url, settings.operator_token, throttled_wait=5).post(
        "/ops/machines", BODY)
    assert time.monotonic() - started >= 1.0  # it waited the Retry-After it was given
    assert jobs.enqueued == [machine["job_uuid"]]


def test_without_budget_the_429_is_raised_with_its_wait(
        busy_api: tuple[str, RecordingJobQueue], settings: Any) -> None:
    url, jobs = busy_api
    with pytest.raises(ApiError) as raised:
        OpsClient(url, settings.operator_token, throttled_wait=0).post("/ops/machines", BODY)
    assert (raised.value.status, raised.value.code) == (429, "RequestThrottled")
    assert raised.value.retry_after == 1.0
    assert jobs.enqueued == []
