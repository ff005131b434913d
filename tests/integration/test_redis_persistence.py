"""deploy/redis.conf (issue 9, item 8): redis-server accepts it, and a queued job message
survives a crash of Redis with it; without persistence (how `sdc up` and the tests run their
private Redis) the same message is gone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis
from celery import Celery

from schemas.agent import HEADNODE_QUEUE
from tests.support.net import free_port
from tests.support.wait import wait_until

CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis.conf"
#: appendfsync everysec: what was written more than a second ago is on disk
FSYNC_WAIT = 1.5
#: `sdc up` (headnode/cli/up.py) and tests/support/services.py: no persistence at all
NO_PERSISTENCE = ["--save", "", "--appendonly", "no"]


def conf_password() -> str:
    """The password deploy/redis.conf sets (its placeholder: an operator replaces it)."""
    lines = [line.split() for line in CONF.read_text().splitlines()]
    return next(words[1] for words in lines if words[:1] == ["requirepass"])


def start_redis(config: list[str], workdir: Path, port: int,
                password: str | None = None) -> subprocess.Popen[bytes]:
    argv = ["redis-server", *config, "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port, password=password, socket_timeout=1)
    wait_until(lambda: popen.poll() is None and client.ping(), timeout=20,
               message=lambda: (workdir / "redis.log").read_text(errors="replace"))
    return popen


def queued_after_a_crash(config: list[str], workdir: Path, password: str | None = None) -> int:
    """Queue one step message, kill -9 redis-server, start it again: what is left queued."""
    port = free_port()
    popen = start_redis(config, workdir, port, password)
    auth = f":{password}@" if password else ""
    try:
        sender = Celery("test-sender", broker=f"redis://{auth}127.0.0.1:{port}/0",
                        set_as_current=False)
        try:
            sender.send_task("workflows.run_step", args=["job-uuid", 1], queue=HEADNODE_QUEUE)
        finally:
            sender.close()
        time.sleep(FSYNC_WAIT)
    finally:
        popen.kill()
        popen.wait()
    popen = start_redis(config, workdir, port, password)
    try:
        client = redis.Redis(port=port, password=password)
        return sum(int(client.llen(key)) for key in client.keys(f"{HEADNODE_QUEUE}*"))
    finally:
        popen.terminate()
        popen.wait(timeout=20)


def test_redis_accepts_the_production_config(tmp_path: Path) -> None:
    port = free_port()
    popen = start_redis([str(CONF)], tmp_path, port, conf_password())
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        client = redis.Redis(port=port, password=conf_password(), decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        popen.terminate()
        popen.wait(timeout=20)


def test_a_queued_message_survives_a_redis_crash_only_with_persistence(tmp_path: Path) -> None:
    (tmp_path / "aof").mkdir()
    (tmp_path / "none").mkdir()
    assert queued_after_a_crash([str(CONF)], tmp_path / "aof", conf_password()) == 1
    assert queued_after_a_crash(NO_PERSISTENCE, tmp_path / "none") == 0
