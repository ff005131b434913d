"""While the database cannot be reached, both APIs answer 503 ServiceUnavailable with
Retry-After (never 500), and the ``sdc`` client waits and sends the request again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from headnode.api.app import create_app
from headnode.cli.client import ApiError, OpsClient
from headnode.config import get_settings
from headnode.services.retry import RETRY_AFTER
from tests.support.jobqueue import RecordingJobQueue
from tests.support.net import free_port
from tests.support.wsgi import served

TOKEN = "test-token"
#: an MD5 key fingerprint (of no key: the lookup fails before it could tell)
FINGERPRINT = ":".join(["5e"] * 16)
BODY = {"owner": "alice", "package": "small", "image": "base-64"}


@pytest.fixture
def no_database(tmp_path: Path, clean_redis: str) -> Flask:
    """The app on a PostgreSQL URL where nothing listens (a database that is down)."""
    settings = get_settings(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/sdc",
        redis_url=clean_redis, data_dir=tmp_path / "data", operator_token=TOKEN)
    return create_app(settings, jobs=RecordingJobQueue())


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/ops/machines"), ("get", "/ops/machines"), ("get", "/ops/servers"),
])
def test_operator_api_answers_503_with_retry_after(no_database: Flask, method: str,
                                                   path: str) -> None:
    with no_database.test_client() as client:
        kwargs: dict[str, Any] = {"json": BODY} if method == "post" else {}
        resp = getattr(client, method)(path, headers={"Authorization": f"Bearer {TOKEN}"},
                                       **kwargs)
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["code"] == "ServiceUnavailable"
    assert resp.headers["Retry-After"] == str(RETRY_AFTER)


def test_tenant_api_answers_503_with_retry_after(no_database: Flask) -> None:
    # The signature's key is looked up in the database first.
    with no_database.test_client() as client:
        resp = client.get("/alice/machines", headers={
            "Date": formatdate(usegmt=True),
            "Authorization": f'Signature keyId="/alice/keys/{FINGERPRINT}",algorithm="rsa-sha256",'
                             'headers="date",signature="c2ln"'})
    assert resp.status_code == 503, resp.get_json()
    assert resp.get_json()["code"] == "ServiceUnavailable"
    assert resp.headers["Retry-After"] == str(RETRY_AFTER)


@pytest.fixture
def live_no_database(no_database: Flask) -> Iterator[str]:
    with served(no_database) as url:
        yield url


def test_client_waits_out_503_within_its_budget(live_no_database: str) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        OpsClient(live_no_database, TOKEN, throttled_wait=2 * RETRY_AFTER).post(
            "/ops/machines", BODY)
    # sent three times: at once, then after each of two waits of Retry-After
    assert time.monotonic() - started >= 2 * RETRY_AFTER
    assert (raised.value.status, raised.value.code) == (503, "ServiceUnavailable")
    assert raised.value.retry_after == RETRY_AFTER


def test_client_without_budget_raises_the_503_at_once(live_no_database: str) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        OpsClient(live_no_database, TOKEN, throttled_wait=0).get("/ops/servers")
    assert time.monotonic() - started < RETRY_AFTER
    assert raised.value.status == 503
