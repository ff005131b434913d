"""The 200-into-150 concurrency test (test_placement_scale.py) 10 times in a row, each on a
fresh cloud, while two busy processes load both cores: no answer is a 5xx (slow: run by
``make bench``, not in CI).

Requests go out as plain HTTP so a 503 cannot hide behind the ``sdc`` client's retries; only
a 429 (admission control: nothing was done) is sent again after its Retry-After. Ends with
one ``FIGURES`` line on the terminal (``make bench`` shows it).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import AGENT_COUNT
from tests.integration.test_database_faults import post_all, retried
from tests.integration.test_placement_scale import (
    CLIENTS,
    PACKAGE_RAM_MB,
    PER_SERVER,
    PROVISIONS,
    RESERVATION_RATIO,
)
from tests.support.procs import ProcessGroup

pytestmark = pytest.mark.slow

ROUNDS = 10
#: one busy process per core of this 2-core machine
LOADERS = 2
BUSY = "while True: pass"

TOTALS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[None]:
    group = ProcessGroup(Path(tmp_path_factory.mktemp("load")))
    for i in range(LOADERS):
        group.spawn(f"busy{i}", [sys.executable, "-c", BUSY])
    try:
        yield
    finally:
        group.stop_all()
        say(request.config,
            f"FIGURES concurrency under load: {TOTALS['rounds']} rounds x {PROVISIONS} "
            f"provisions into room for {AGENT_COUNT * PER_SERVER}, {LOADERS} busy "
            f"processes: answers 202={TOTALS['202']} 409={TOTALS['409']} "
            f"5xx={TOTALS['5xx']} other={TOTALS['other']}; transactions retried after a "
            f"deadlock: {TOTALS['retried']}; {TOTALS['seconds']:.0f} s of provisions and jobs")


def say(config: pytest.Config, line: str) -> None:
    """A line on the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line)


@pytest.mark.parametrize("cloud", range(ROUNDS), indirect=True)  # a fresh cloud per round
def test_fill_the_fleet_exactly_under_load(load: None, cloud: Any) -> None:
    cloud.seed()
    cloud.api.post("/ops/packages", {"name": "slice", "memory": PACKAGE_RAM_MB, "disk": 1024})
    started = time.monotonic()
    answers = post_all(cloud, [{"owner": "alice", "package": "slice", "image": "base-64",
                                "alias": f"m{i}"} for i in range(PROVISIONS)], clients=CLIENTS)
    statuses = Counter(status for status, _, _ in answers)
    TOTALS.update({"rounds": 1, "202": statuses[202], "409": statuses[409],
                   "5xx": sum(n for s, n in statuses.items() if s >= 500),
                   "other": sum(n for s, n in statuses.items() if s not in (202, 409)
                                and s < 500)})
    assert not [s for s in statuses if s >= 500], answers
    created = [body for status, body, _ in answers if status == 202]
    assert len(created) == AGENT_COUNT * PER_SERVER, statuses
    assert {body["code"] for status, body, _ in answers if status != 202} == {
        "InsufficientCapacity"}
    jobs = [cloud.wait_job(m["job_uuid"], timeout=300) for m in created]
    assert {j["execution"] for j in jobs} == {"succeeded"}
    TOTALS["seconds"] += time.monotonic() - started
    TOTALS["retried"] += retried(cloud)
    for server_uuid in cloud.agents.values():
        server = cloud.server(server_uuid)
        assert server["machine_count"] == PER_SERVER and server["ram_inflight_mb"] == 0
        assert server["ram_committed_mb"] <= server["ram_mb"] * (1 - RESERVATION_RATIO)
