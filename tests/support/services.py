"""Real PostgreSQL and Redis servers of our own, on free loopback ports, in temp dirs.

Used by the test fixtures (tests/conftest.py) and by the benchmarks under bench/.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.wait import wait_until

#: the file in a server's work dir naming its pid, so a later run can stop a leftover one
SERVER_PID_FILE = "server.pid"


def _tail_file(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class RedisServer:
    """A private redis-server with no persistence (Redis is never the system of record),
    with a password as every deployment has (``.url`` carries it)."""

    def __init__(self, executable: str, workdir: Path, port: int,
                 password: str | None = None) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = port
        self.password = password or secrets.token_hex(16)
        self.log_path = workdir / "redis.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._popen is not None, "redis-server is not running"
        return self._popen.pid

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis.from_url(self.url, **kwargs)

    def _ping(self) -> bool:
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def start(self) -> None:
        # The password goes in a file, not on the command line (which `ps` shows everyone).
        config = self.workdir / "redis.conf"
        config.write_text(f"requirepass {self.password}\n")
        config.chmod(0o600)
        argv = [
            self.executable, str(config),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]
        self._popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        popen = self._popen
        (self.workdir / SERVER_PID_FILE).write_text(f"{popen.pid}\n")

        def up() -> bool:
            if popen.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {popen.returncode}:\n{_tail_file(self.log_path)}"
                )
            return self._ping()

        wait_until(up, timeout=20, interval=0.05,
                   message=lambda: f"redis-server on port {self.port}:\n"
                                   f"{_tail_file(self.log_path)}")

    def stop(self) -> None:
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._popen = None

    def restart(self) -> None:
        """Stop and start on the same port: a broker outage for fault tests (data is lost,
        as with a production Redis that keeps nothing on disk)."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()




def postgres_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres are: SDC_TEST_PG_BIN, else Debian's newest, else PATH."""
    configured = os.environ.get("SDC_TEST_PG_BIN")
    if configured:
        return Path(configured)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit()
        else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries (initdb) not found: run `make deps`")


class PostgresServer:
    """A throwaway PostgreSQL cluster for one test session.

    We run initdb/pg_ctl ourselves rather than through pytest-postgresql: PostgreSQL refuses
    to run as root, and pytest-postgresql has no way to run the server as another user. As
    root we therefore chown the cluster's temp dir to ``postgres`` and run every server
    command through ``runuser -u postgres --``; as any other user we run them directly.
    """

    SUPERUSER = "postgres"

    def __init__(self, bin_dir: Path, base_dir: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "sock"
        self.log_path = base_dir / "postgres.log"
        self.port = port
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        # cwd: the postgres user cannot enter root's working directory.
        return subprocess.run(argv, cwd=self.base_dir, capture_output=True, text=True,
                              check=False, timeout=120)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"server log:\n{_tail_file(self.log_path)}"
            )

    def start(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._check(
            self._run("initdb", "-D", str(self.data_dir), "-U", self.SUPERUSER,
                      "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"),
            "initdb",
        )
        # Speed over durability: the cluster is thrown away at the end of the session.
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write("\n# sdc test session\n")
            fh.writelines(f"{key} = {value}\n" for key, value in conf.items())
        self._check(
            self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                      "-w", "-t", "60", "start"),
            "pg_ctl start",
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def postmaster_pid(self) -> int:
        """The server's main process (the first line of postmaster.pid)."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.SUPERUSER,
                               dbname=dbname, autocommit=True)

    def create_database(self, name: str) -> str:
        """(Re)create database ``name`` empty and return its SQLAlchemy URL."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


