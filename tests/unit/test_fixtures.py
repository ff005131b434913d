"""The session fixtures start real services and clean up after themselves."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import redis
from sqlalchemy import func, select, text

from tests.support.jobqueue import RecordingJobQueue
from tests.support.net import free_port, port_open
from tests.support.procs import ProcessGroup, ProcessStartError, group_alive, settings_env
from tests.support.wait import WaitTimeout, wait_until

SLEEPER = [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(600)"]


def test_postgres_is_real_and_migrated(clean_db, postgres_server):
    from alembic.script import ScriptDirectory

    from headnode.store.db import engine_for, session_factory
    from headnode.store.migrate import alembic_config
    from headnode.store.models import Account

    assert clean_db == postgres_server.url("sdc_test")
    with engine_for(clean_db).connect() as conn:
        assert conn.execute(text("select version()")).scalar_one().startswith("PostgreSQL")
        applied = conn.execute(text("select version_num from alembic_version")).scalars()
        assert sorted(applied) == sorted(ScriptDirectory.from_config(
            alembic_config(clean_db)).get_heads())

    sessions = session_factory(clean_db)
    with sessions() as session, session.begin():
        session.add(Account(login="alice", email="alice@example.com"))
    with sessions() as session:
        found = session.scalars(select(Account).where(Account.login == "alice")).one()
        assert found.uuid and found.operator is False


def test_clean_db_empties_tables_between_tests(clean_db):
    from headnode.store.db import session_factory
    from headnode.store.models import Account

    with session_factory(clean_db)() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0


def test_create_database_gives_a_separate_empty_database(postgres_server):
    from sqlalchemy import create_engine

    url = postgres_server.create_database("sdc_fixture_scratch")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select current_database()")).scalar_one() == (
                "sdc_fixture_scratch"
            )
    finally:
        engine.dispose()


def test_redis_is_real(redis_server):
    client = redis_server.client()
    assert client.ping()
    client.set("sdc:fixture", "1")
    assert client.get("sdc:fixture") == b"1"
    assert redis_server.url == (
        f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0")


def test_redis_wants_the_password(redis_server):
    # as in every deployment the README describes: nobody without it gets in
    stranger = redis.Redis(port=redis_server.port)
    try:
        with pytest.raises(redis.AuthenticationError):
            stranger.ping()
    finally:
        stranger.close()


def test_redis_restart_keeps_the_port_and_loses_the_data(redis_server):
    client = redis_server.client()
    client.set("sdc:before-restart", "1")
    redis_server.restart()
    assert client.ping()  # redis-py reconnects to the same port
    assert client.get("sdc:before-restart") is None


def test_settings_and_ctx_point_at_the_test_services(settings, ctx, redis_server, tmp_path):
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.redis_url == redis_server.url
    assert settings.operator_token == "test-token"
    assert settings.data_dir == tmp_path / "data"
    assert isinstance(ctx.jobs, RecordingJobQueue)
    ctx.jobs.enqueue("job-1")
    assert ctx.jobs.enqueued == ["job-1"]
    with ctx.read() as session:
        assert session.execute(text("select 1")).scalar_one() == 1


def test_settings_env_round_trips(settings):
    from schemas.settings import load

    env = settings_env(settings)
    assert env["SDC_OPERATOR_TOKEN"] == "test-token"
    assert load(type(settings), environ=env) == settings


def test_process_group_spawn_and_stop_leave_nothing_behind(procs):
    proc = procs.spawn("sleeper", SLEEPER, ready=lambda: "sleeping" in procs.log("sleeper"))
    assert proc.alive()
    procs.stop("sleeper")
    assert not proc.alive()
    assert not group_alive(proc.pgid)


def test_stop_kills_forked_children_too(procs):
    # The leader forks a child that ignores SIGTERM, as a stuck Celery child might.
    code = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    print('child', os.getpid(), flush=True)\n"
        "    time.sleep(600)\n"
        "else:\n"
        "    time.sleep(600)\n"
    )
    proc = procs.spawn("forker", [sys.executable, "-c", code],
                       ready=lambda: "child" in procs.log("forker"))
    child_pid = int(procs.log("forker").split()[1])
    procs.stop("forker", grace=1)
    assert not group_alive(proc.pgid)
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_kill_and_restart(procs):
    proc = procs.spawn("sleeper", SLEEPER, ready=lambda: "sleeping" in procs.log("sleeper"))
    procs.kill("sleeper", signal.SIGKILL)
    wait_until(lambda: not proc.alive(), timeout=5, message="sleeper to die")
    assert proc.popen.returncode == -signal.SIGKILL
    again = procs.restart("sleeper")
    assert again.alive() and again.pid != proc.pid


def test_spawn_reports_an_early_exit_with_the_log(procs):
    argv = [sys.executable, "-c", "print('bad config'); raise SystemExit(3)"]
    with pytest.raises(ProcessStartError, match="bad config"):
        procs.spawn("broken", argv, ready=lambda: False, timeout=10)


def test_spawn_reports_a_timeout(procs):
    with pytest.raises(ProcessStartError, match="not ready"):
        procs.spawn("slow", SLEEPER, ready=lambda: False, timeout=0.5)
    assert not procs.procs["slow"].alive()


def test_free_port_is_free_and_wait_until_times_out():
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open(port)
    with pytest.raises(WaitTimeout, match="never"):
        wait_until(lambda: False, timeout=0.1, message="never")
    assert wait_until(lambda: 42, timeout=1) == 42


def test_process_group_used_outside_fixtures_cleans_up(tmp_path):
    group = ProcessGroup(tmp_path)
    proc = group.spawn("sleeper", SLEEPER)
    group.stop_all()
    assert not group_alive(proc.pgid)
