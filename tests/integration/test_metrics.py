"""/metrics of a served head node (issue 14, item 8): the operator token only, and one
answer for all the gunicorn workers (each answered for itself before: a scrape saw the
counts of whichever worker took it)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api_server import TOKEN, ServedApi, serve_api
from tests.support.wait import wait_until

PING = {"method": "GET", "endpoint": "/ops/ping", "status": "200"}
BATCH = 40
MAX_BATCHES = 25


@pytest.fixture
def two_workers(procs: Any, postgres_server: Any, redis_server: Any,
                tmp_path: Path) -> ServedApi:
    api = serve_api(procs, postgres_server, redis_server, tmp_path,
                    env={"SDC_API_WORKERS": "2"})
    wait_until(lambda: len(workers(api)) == 2, timeout=30, message="two gunicorn workers")
    return api


def workers(api: ServedApi) -> list[psutil.Process]:
    return psutil.Process(api.proc.pid).children()


def pings_per_worker(api: ServedApi) -> dict[int, float]:
    """What each worker counted, read from its own file of the multiprocess directory
    (each worker keeps counter_<pid>.db open)."""
    counts: dict[int, float] = {}
    for worker in workers(api):
        files = {f.path for f in worker.open_files() if Path(f.path).name.startswith("counter_")}
        counts[worker.pid] = sum(
            value for file in files
            for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(file)
            if json.loads(key)[1] == "sdc_api_requests_total" and json.loads(key)[2] == PING)
    return counts


def ping_on_a_new_connection(url: str) -> None:
    # a connection per request: a kept-alive one would stay with one worker
    requests.get(f"{url}/ops/ping", timeout=10, headers={"Connection": "close"}
                 ).raise_for_status()


def scraped_pings(api: ServedApi) -> float:
    answer = requests.get(f"{api.url}/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"})
    assert answer.status_code == 200
    return sum(s.value for family in text_string_to_metric_families(answer.text)
               for s in family.samples
               if s.name == "sdc_api_requests_total" and s.labels == PING)


def test_metrics_add_up_every_worker(two_workers: ServedApi) -> None:
    api = two_workers
    before = scraped_pings(api)  # the pings that waited for the server to start
    assert before == sum(pings_per_worker(api).values()) > 0
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        # until both workers have answered some (the kernel picks which one accepts)
        for _ in range(MAX_BATCHES):
            list(pool.map(lambda _: ping_on_a_new_connection(api.url), range(BATCH)))
            sent += BATCH
            if all(pings_per_worker(api).values()):
                break
    per_worker = pings_per_worker(api)
    assert len(per_worker) == 2 and all(per_worker.values()), per_worker
    assert sum(per_worker.values()) == before + sent
    # every scrape, whichever worker answers it, totals all of them
    assert [scraped_pings(api) for _ in range(6)] == [before + sent] * 6

    # a worker that dies is replaced (gunicorn's child_exit hook marks it dead); what it
    # counted still counts: a counter never goes back
    dead = workers(api)[0]
    dead.kill()
    dead.wait(timeout=10)
    wait_until(lambda: len(workers(api)) == 2 and dead.pid not in {w.pid for w in workers(api)},
               timeout=30, message="gunicorn to replace the killed worker")
    assert [scraped_pings(api) for _ in range(4)] == [before + sent] * 4
    assert "Traceback" not in api.proc.log_path.read_text()


def test_metrics_without_the_operator_token_are_refused(two_workers: ServedApi) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        answer = requests.get(f"{two_workers.url}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.json()["code"] == "Unauthorized"
        assert "sdc_api_requests_total" not in answer.text
