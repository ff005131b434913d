"""Two ``sdc headnode beat`` processes against one Redis: one schedules, the other waits and
takes over when the first dies (killed: once its lock expires) or stops (at once).

No worker runs: the test reads the scheduled messages straight off the ``headnode`` queue,
each naming the process that sent it (Celery's ``origin`` header: ``gen<pid>@<host>``).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import redis

from schemas.agent import HEADNODE_QUEUE
from tests.integration.conftest import SDC
from tests.support.headnode_env import headnode_env
from tests.support.net import free_port
from tests.support.procs import ProcessGroup
from tests.support.wait import wait_until

LOCK_TTL = 3.0
ENV = {"SDC_RECONCILE_INTERVAL": "0.2", "SDC_BEAT_LOCK_TTL": str(LOCK_TTL)}
WAITING = "another beat"


def senders(client: redis.Redis, seconds: float) -> dict[str, int]:
    """Who sent the reconciler messages queued in the next ``seconds``: origin -> count."""
    client.delete(HEADNODE_QUEUE)
    time.sleep(seconds)
    origins: dict[str, int] = {}
    for raw in client.lrange(HEADNODE_QUEUE, 0, -1):
        headers = json.loads(raw)["headers"]
        if headers["task"] == "workflows.reconcile":
            origins[headers["origin"]] = origins.get(headers["origin"], 0) + 1
    return origins


def origin_of(pid: int) -> str:
    return f"gen{pid}@"


def sent_by(origins: dict[str, int], pid: int) -> bool:
    return list(origins) != [] and all(o.startswith(origin_of(pid)) for o in origins)


def test_a_second_beat_waits_and_takes_over(clean_db: str, clean_redis: str, tmp_path: Path,
                                            redis_server: Any) -> None:
    env = headnode_env(clean_db, clean_redis, tmp_path / "headnode", "token", free_port(),
                       **ENV)
    client = redis_server.client()
    procs = ProcessGroup(tmp_path / "logs")
    try:
        first = procs.spawn("first", [SDC, "headnode", "beat"], env=env)
        wait_until(lambda: "beat lock: taken" in procs.log("first"), timeout=30,
                   message="the first beat to take the lock")
        second = procs.spawn("second", [SDC, "headnode", "beat"], env=env)
        wait_until(lambda: WAITING in procs.log("second"), timeout=30,
                   message="the second beat to say it waits")

        # both run: only the first sends, about 5 passes a second
        origins = senders(client, 2.0)
        assert sent_by(origins, first.pid), origins
        assert sum(origins.values()) <= 2.0 / 0.2 + 2, origins

        # killed, the first renews no more: the second takes over once the lock expires
        killed_at = time.monotonic()
        procs.kill("first", signal.SIGKILL)
        wait_until(lambda: "beat lock: taken" in procs.log("second"), timeout=LOCK_TTL + 10,
                   interval=0.1, message="the second beat to take over")
        took_over = time.monotonic() - killed_at
        assert took_over >= LOCK_TTL * 0.5, took_over  # not before the lock was free
        assert sent_by(senders(client, 1.0), second.pid)
        assert procs.log("second").count(WAITING) == 1  # said once, not every tick

        # a beat started again waits; the holder stopped cleanly hands over at once
        first = procs.spawn("first", [SDC, "headnode", "beat"], env=env)
        wait_until(lambda: WAITING in procs.log("first"), timeout=30,
                   message="the restarted beat to wait")
        stopped_at = time.monotonic()
        procs.stop("second")
        wait_until(lambda: procs.log("first").count("beat lock: taken") == 2, timeout=LOCK_TTL,
                   interval=0.1, message="the waiting beat to take the released lock")
        assert time.monotonic() - stopped_at < LOCK_TTL
        assert "beat lock: released" in procs.log("second")
        assert sent_by(senders(client, 1.0), first.pid)
    except BaseException:
        print(procs.tails())
        raise
    finally:
        procs.stop_all()
