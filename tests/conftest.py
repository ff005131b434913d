"""Session fixtures: one real PostgreSQL and one real Redis per test run, started here.

Nothing is mocked at the service boundary: the store is PostgreSQL (as in production), the
broker is redis-server. Both listen on 127.0.0.1 on free ports and live in temp dirs, so a
run never touches a machine's own PostgreSQL or Redis.

Fixtures:
  redis_server      session   RedisServer: .url (with its password), .port, .password,
                              .client(), .restart(), .flushall()
  clean_redis       function  redis_server flushed, returns its url
  postgres_server   session   PostgresServer: .port, .url(dbname), .create_database(name)
  database_url      session   URL of database ``sdc_test``, migrated to head
  clean_db          function  every table truncated, returns database_url
  settings          function  HeadnodeSettings on clean_db + clean_redis, tmp data dir
  ctx               function  ServiceContext(settings, jobs=RecordingJobQueue())
  procs             function  ProcessGroup; everything it started is stopped at teardown
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.credentials import TEST_MESSAGE_KEY, sign_as_headnode
from tests.support.jobqueue import RecordingJobQueue
from tests.support.net import free_port
from tests.support.procs import ProcessGroup, pid_alive
from tests.support.services import (
    SERVER_PID_FILE,
    PostgresServer,
    RedisServer,
    postgres_bin_dir,
)

TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIR = TESTS_DIR / "integration"
TEST_DATABASE = "sdc_test"


# --------------------------------------------------------------------------- session life


def _terminate_like_ctrl_c(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    # `timeout 600 pytest` and CI runners stop a run with SIGTERM, which by default kills
    # Python without running fixture finalizers: PostgreSQL and Redis would outlive the run.
    # Treated as Ctrl-C, the session fixtures still stop them.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    # A run killed with SIGKILL cannot clean up; the next run does it for it.
    _reap_stale_servers()


OWNER_FILE = "owner.pid"




def _claim(workdir: Path) -> None:
    """Record which pytest process owns a server's temp dir (see _reap_stale_servers)."""
    (workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    (workdir / OWNER_FILE).chmod(0o644)


def _reap_stale_servers() -> None:
    """Stop servers left behind by earlier runs whose pytest process has died.

    Only directories whose owner is gone are touched, so runs in parallel (other checkouts,
    other developers on the machine) keep their servers.
    """
    tmp = Path(tempfile.gettempdir())
    for workdir in [*tmp.glob("sdc-pg-*"), *tmp.glob("sdc-redis-*")]:
        try:
            owner = int((workdir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(owner):
            continue
        try:
            if workdir.name.startswith("sdc-pg-"):
                if (workdir / "data" / "postmaster.pid").exists():
                    PostgresServer(postgres_bin_dir(), workdir, 0).stop()
            else:
                _kill_stale_redis(workdir)
        except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a test run
            print(f"could not stop the stale server in {workdir}: {exc}")
            continue
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_stale_redis(workdir: Path) -> None:
    try:
        pid = int((workdir / SERVER_PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return
    # The pid may have been reused since: kill it only if it is still that redis-server
    # (it rewrites its title, but it runs in its --dir).
    if b"redis-server" in cmdline and Path(cwd) == workdir.resolve():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- markers, reports


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A folder decides the marker, so nobody has to remember to write it on every test.
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # When a test fails, what its processes printed is usually the explanation: put the tails
    # of their logs into the failure report (as a section pytest prints with the traceback).
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when in ("setup", "call") and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, ProcessGroup) and value.procs:
                report.sections.append(("process logs (tails)", value.tails()))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(executable).exists():
        pytest.fail("redis-server is not installed: run `make deps`")
    workdir = Path(tempfile.mkdtemp(prefix="sdc-redis-"))
    _claim(workdir)
    server = RedisServer(executable, workdir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> str:
    """An empty Redis: no queued task or heartbeat from an earlier test reaches this one."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    # Not under pytest's tmp dir: that is private to root (0700) and the postgres user
    # must be able to reach the cluster's directory.
    base_dir = Path(tempfile.mkdtemp(prefix="sdc-pg-"))
    _claim(base_dir)
    server = PostgresServer(bin_dir, base_dir, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server: PostgresServer) -> str:
    from headnode.store.migrate import upgrade

    url = postgres_server.create_database(TEST_DATABASE)
    upgrade(url)
    return url


@pytest.fixture
def clean_db(database_url: str) -> str:
    """The migrated test database with every table emptied (one statement, so it is fast)."""
    from sqlalchemy import text

    from headnode.store.db import engine_for
    from headnode.store.models import Base

    engine = engine_for(database_url)
    quote = engine.dialect.identifier_preparer.quote
    tables = ", ".join(quote(t.name) for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        # A connection left mid-transaction by an earlier test would block TRUNCATE forever;
        # fail loudly instead.
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        conn.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE"))
    # A TRUNCATE is no row change the fleet snapshot could see (and no API does one): this
    # process's snapshot would show the last test's servers for up to its MAX_AGE.
    from headnode.services import fleet_cache

    fleet_cache.forget_all()
    return database_url


# --------------------------------------------------------------------------- services


@pytest.fixture
def settings(
    clean_db: str, clean_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    from headnode.config import get_settings

    # A developer's own SDC_* variables (or SDC_CONFIG) must not leak into tests.
    for name in list(os.environ):
        if name.startswith("SDC_") and name != "SDC_TEST_PG_BIN":
            monkeypatch.delenv(name)
    return get_settings(
        database_url=clean_db,
        redis_url=clean_redis,
        data_dir=tmp_path / "data",
        operator_token="test-token",
        message_key=TEST_MESSAGE_KEY,
    )


@pytest.fixture
def ctx(settings: Any) -> Any:
    from headnode.services.context import ServiceContext
    from workflows.registry import load_all

    load_all()  # as the API app does: services start jobs by workflow name
    return ServiceContext(settings, jobs=RecordingJobQueue())


@pytest.fixture(autouse=True)
def _signs_as_the_test_headnode() -> None:
    """What a test sends on Redis (an agent task, a node's event) it sends as the head node
    every test cloud runs (TEST_MESSAGE_KEY), or as a node it names; set again before each
    test, for building an app or a job queue on other settings signs with their key."""
    sign_as_headnode()


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every test head node keeps its agent bundles (SDC_AGENT_BUNDLE_DIR): the wheel
    of this checkout and its dependencies are built once per session (about 9 s), not once
    per head node."""
    return tmp_path_factory.mktemp("agent-bundles")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
