"""Admission control counts the jobs' queue, not the nodes' events (issue 16): with thousands
of status reports waiting on the ``nodes`` queue a provision is admitted, and the workflow
backlog alone still refuses it. The API over the real Redis broker and PostgreSQL; no worker
runs, so every message stays where it was put."""

from __future__ import annotations

from typing import Any

import redis

from headnode.api.app import create_app
from schemas.agent import NODES_QUEUE
from sdccommon import signing
from tests.unit.headnode.api.conftest import (
    AUTH,
    make_account,
    make_image,
    make_package,
    make_server,
)
from workflows.celery_app import make_app
from workflows.dispatch import CeleryJobQueue

BODY = {"owner": "alice", "package": "small", "image": "base-64"}
WAITING_REPORTS = 5000


def fill_nodes_queue(settings: Any, server_uuid: str) -> int:
    """``WAITING_REPORTS`` status reports on the ``nodes`` queue, as agents send them (one
    sent through Celery, then copied: the broker holds them, nobody reads them here)."""
    app = make_app(settings)
    app.send_task("events.server_status", args=[{"server_uuid": server_uuid, "machines": []}],
                  queue=NODES_QUEUE, headers={signing.SENDER: server_uuid})
    client = redis.Redis.from_url(settings.redis_url)
    [raw] = client.lrange(NODES_QUEUE, 0, -1)
    with client.pipeline(transaction=False) as pipe:
        for _ in range(WAITING_REPORTS - 1):
            pipe.lpush(NODES_QUEUE, raw)
        pipe.execute()
    return int(client.llen(NODES_QUEUE))


def test_a_provision_is_admitted_while_thousands_of_reports_wait(settings: Any) -> None:
    jobs = CeleryJobQueue.for_settings(settings)
    jobs.backlog_ttl = 0
    app = create_app(settings, jobs=jobs)
    sdc = app.extensions["sdc"]
    server = make_server(sdc)
    make_package(sdc, name="small", memory=1024, disk=10240)
    make_image(sdc, name="base-64")
    make_account(sdc, login="alice")
    assert fill_nodes_queue(settings, server.uuid) == WAITING_REPORTS
    with app.test_client() as client:
        answer = client.post("/ops/machines", json=BODY, headers=AUTH)
        assert answer.status_code == 202, answer.get_json()
        assert jobs.backlog() == 1  # the provision's first step, and only that

        # the jobs' own backlog still refuses, and says how long it is
        for n in range(settings.provision_backlog_limit - 1):
            jobs.enqueue(f"job-{n}")
        answer = client.post("/ops/machines", json=BODY, headers=AUTH)
        assert answer.status_code == 429, answer.get_json()
        assert f"{settings.provision_backlog_limit} messages wait" in answer.get_json()["message"]
    assert redis.Redis.from_url(settings.redis_url).llen(NODES_QUEUE) == WAITING_REPORTS
