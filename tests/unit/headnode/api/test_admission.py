"""A busy workflow worker: new provisions are refused with 429 and Retry-After, nothing is
written, and other requests (and provisions once the backlog drains) go through."""

from __future__ import annotations

import dataclasses
from typing import Any

from headnode.api.app import create_app
from headnode.store.models import Job, Machine, Reservation
from tests.unit.headnode.api.conftest import (
    AUTH,
    count,
    make_account,
    make_image,
    make_package,
    make_server,
)

BODY = {"owner": "alice", "package": "small", "image": "base-64"}


def fleet(sdc: Any) -> None:
    make_server(sdc)
    make_package(sdc, name="small", memory=1024, disk=10240)
    make_image(sdc, name="base-64")
    make_account(sdc, login="alice")


def written(sdc: Any) -> tuple[int, int, int]:
    return count(sdc, Machine), count(sdc, Job), count(sdc, Reservation)


def test_a_provision_is_refused_while_the_worker_is_behind(api: Any, sdc: Any,
                                                           jobqueue: Any) -> None:
    fleet(sdc)
    jobqueue.waiting = sdc.settings.provision_backlog_limit
    answer = api("post", "/ops/machines", json=BODY)
    assert answer.status_code == 429, answer.get_json()
    assert answer.headers["Retry-After"] == "1"
    body = answer.get_json()
    assert body["code"] == "RequestThrottled"
    assert f"{jobqueue.waiting} messages wait" in body["message"]
    assert written(sdc) == (0, 0, 0) and jobqueue.enqueued == []
    assert api("get", "/ops/machines").status_code == 200  # reads are never refused

    jobqueue.waiting -= 1  # the backlog drains: the same request now goes through
    answer = api("post", "/ops/machines", json=BODY)
    assert answer.status_code == 202, answer.get_json()
    assert "Retry-After" not in answer.headers
    assert written(sdc) == (1, 1, 1)


def test_a_limit_of_zero_never_refuses(settings: Any, jobqueue: Any) -> None:
    app = create_app(dataclasses.replace(settings, provision_backlog_limit=0), jobs=jobqueue)
    fleet(app.extensions["sdc"])
    jobqueue.waiting = 10_000
    with app.test_client() as client:
        answer = client.post("/ops/machines", json=BODY, headers=AUTH)
    assert answer.status_code == 202, answer.get_json()
