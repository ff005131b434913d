"""``sdc up``: the whole cloud on one machine (Redis, API, worker, beat, a mock fleet).

Every part runs as a child process in its own process group, logging to
``<data dir>/logs/<name>.log``. The supervisor stops them in reverse start order on Ctrl-C
or SIGTERM, and stops them all if one dies, so nothing outlives ``sdc up``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.table import Table

from headnode.cli.client import ApiError, OpsClient
from headnode.cli.output import (
    console,
    fmt_duration,
    fmt_job_error,
    job_steps_table,
    seconds_between,
)
from headnode.config import get_settings

STOP_TIMEOUT = 10.0
START_TIMEOUT = 60.0
SUPERVISE_INTERVAL = 0.5
LOG_TAIL_LINES = 25
SDC = [sys.executable, "-m", "headnode.cli.main"]


class ShutdownRequested(Exception):
    """Ctrl-C or SIGTERM: stop everything and exit 0."""


class ChildDied(Exception):
    """A child exited while it should be running: stop everything and exit 1."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited with status {child.proc.returncode}")
        self.child = child


class StartupFailed(Exception):
    """The cloud did not come up (a timeout, a failed migration, a refused request)."""


# ---------------------------------------------------------------------------- supervisor


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def pgid(self) -> int:
        # start_new_session makes the child the leader of its own group: pgid == pid.
        return self.proc.pid

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail_file(self.log_path, lines)


def tail_file(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the group (the leader may be gone, its children not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process we cannot signal is not one we started
        return False
    return True


def signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass
class Supervisor:
    """Starts children, each in its own session and process group, and stops them all."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            # A new session per child: the terminal's Ctrl-C reaches only us, and we stop
            # the children in order instead of all at once.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        child = Child(name, argv, log_path, proc)
        self.children.append(child)
        return child

    def run_once(self, name: str, argv: list[str], timeout: float = 120.0) -> None:
        """Run a one-shot step (the migration) to completion, logging like the others."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env, timeout=timeout,
                                    check=False)
        if result.returncode != 0:
            raise StartupFailed(f"{name} failed (status {result.returncode}):\n"
                                f"{tail_file(log_path)}")

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def check(self) -> None:
        dead = self.dead_child()
        if dead is not None:
            raise ChildDied(dead)

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """SIGTERM every group in reverse start order, wait, SIGKILL what is left.

        Returns the names of the children that had to be killed.
        """
        for child in reversed(self.children):
            signal_group(child.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.05)
        # Only groups still alive: a finished group's id may already belong to someone else.
        stubborn = [c for c in reversed(self.children) if group_alive(c.pgid)]
        for child in stubborn:
            signal_group(child.pgid, signal.SIGKILL)
        killed = [c.name for c in stubborn]
        for child in self.children:
            try:
                child.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                killed.append(child.name)
        return killed

    def _alive(self) -> bool:
        alive = False
        for child in self.children:
            child.proc.poll()  # reap the leader so it stops counting as a group member
            alive = group_alive(child.pgid) or alive
        return alive


@contextmanager
def shutdown_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ShutdownRequested while the cloud runs."""

    def request(signum: int, _frame: FrameType | None) -> None:
        # Only the first signal interrupts; a second Ctrl-C during the shutdown must not
        # abandon children half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise ShutdownRequested(signal.Signals(signum).name)

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ---------------------------------------------------------------------------- ports, env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def fleet_prefix(data_dir: Path) -> str:
    """Stable per data dir, so a restarted mock fleet comes back as the same servers."""
    return "mc" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:6]


def wait_for(what: str, ready: Callable[[], Any], supervisor: Supervisor,
             timeout: float = START_TIMEOUT, interval: float = 0.2) -> Any:
    """Poll ``ready`` until it returns something true, watching the children meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        supervisor.check()
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StartupFailed(f"{what}: not ready after {timeout:g} s")
        time.sleep(interval)


# ---------------------------------------------------------------------------- the cloud


@dataclass
class Cloud:
    data_dir: Path
    port: int
    servers: int
    supervisor: Supervisor
    token: str = ""
    redis_url: str = ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> OpsClient:
        return OpsClient(self.api_url, self.token, timeout=10.0)

    def say(self, text: str) -> None:
        console(stderr=True).print(f"[bold cyan]sdc up[/] {text}", highlight=False)

    def start(self) -> None:
        self.start_redis()
        self.say("migrating the database")
        self.supervisor.run_once("db-upgrade", [*SDC, "headnode", "db", "upgrade"])
        self.say(f"starting the API on {self.api_url}")
        self.supervisor.start("api", [*SDC, "headnode", "serve"])
        wait_for("the API (GET /ops/ping)", self.client().ping, self.supervisor)
        self.say("starting the workflow worker and beat")
        self.supervisor.start("worker", [*SDC, "headnode", "worker"])
        self.supervisor.start("beat", [*SDC, "headnode", "beat"])
        self.say(f"starting a mock fleet of {self.servers} server(s)")
        self.supervisor.start("mockcloud", [
            *SDC, "mockcloud", "--servers", str(self.servers), "--redis-url", self.redis_url,
            "--prefix", fleet_prefix(self.data_dir)])
        servers = wait_for(f"{self.servers} servers registering", self.running_servers,
                           self.supervisor)
        self.set_up(servers)

    def start_redis(self) -> None:
        if self.redis_url:
            self.say(f"using Redis at {self.redis_url} (SDC_REDIS_URL)")
            return
        executable = shutil.which("redis-server")
        if executable is None:
            raise StartupFailed("redis-server is not installed; install it, or set "
                                "SDC_REDIS_URL to a Redis you run")
        port = free_port()
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.supervisor.env["SDC_REDIS_URL"] = self.redis_url
        self.say(f"starting a private redis-server on 127.0.0.1:{port}")
        # No persistence: Redis is only the broker; the database is the system of record.
        self.supervisor.start("redis", [
            executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.supervisor.log_dir)])
        wait_for("redis-server", lambda: redis_answers(port), self.supervisor)

    def running_servers(self) -> list[dict[str, Any]] | None:
        try:
            servers = self.client().get("/ops/servers", {"status": "running"})
        except ApiError:
            return None
        return servers if len(servers) >= self.servers else None

    def set_up(self, servers: list[dict[str, Any]]) -> None:
        ops = self.client()
        for srv in servers:
            if not srv.get("setup"):
                ops.put(f"/ops/servers/{srv['uuid']}", {"setup": True})
        self.say(f"{len(servers)} server(s) registered and set up")

    def print_access(self) -> None:
        out = console()
        out.print(f"\nthe cloud is up: API [bold]{self.api_url}[/]", highlight=False)
        out.print(f"operator token: {self.token}", highlight=False)
        out.print(f"logs: {self.supervisor.log_dir}/<name>.log\n", highlight=False)
        out.print("in another shell:", highlight=False)
        out.print(f"  export SDC_API_URL={self.api_url} SDC_OPERATOR_TOKEN={self.token}\n",
                  highlight=False, soft_wrap=True)

    def supervise(self) -> None:
        while True:
            self.supervisor.check()
            time.sleep(SUPERVISE_INTERVAL)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def child_env(data_dir: Path, port: int, token: str, redis_url: str,
              database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SDC_DATA_DIR": str(data_dir),
        "SDC_API_BIND": f"127.0.0.1:{port}",
        "SDC_OPERATOR_TOKEN": token,
        "SDC_DATABASE_URL": database_url,
        # Logs are read while the cloud runs; block buffering would hide the last lines.
        "PYTHONUNBUFFERED": "1",
    })
    if redis_url:
        env["SDC_REDIS_URL"] = redis_url
    return env


# ---------------------------------------------------------------------------- the command


@click.command()
@click.option("--servers", type=click.IntRange(1, 10000), default=3, show_default=True,
              help="Simulated compute nodes.")
@click.option("--demo", is_flag=True,
              help="Then provision a few machines and show where they landed.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="[default SDC_DATA_DIR, ~/.sdc]")
@click.option("--port", type=click.IntRange(1, 65535),
              help="API port on 127.0.0.1 [default the port of SDC_API_BIND].")
def up(servers: int, demo: bool, data_dir: Path | None, port: int | None) -> None:
    """Run the whole cloud on this machine until Ctrl-C."""
    settings = get_settings(data_dir=data_dir)
    data_dir = settings.data_dir.expanduser().resolve()
    settings = get_settings(data_dir=data_dir)
    port = port or int(settings.api_bind.rpartition(":")[2])
    if port_taken(port):
        raise click.ClickException(f"port {port} on 127.0.0.1 is taken (another `sdc up`?); "
                                   "choose another with --port")
    data_dir.mkdir(parents=True, exist_ok=True)
    token = settings.resolved_operator_token()
    redis_url = os.environ.get("SDC_REDIS_URL", "")
    env = child_env(data_dir, port, token, redis_url, settings.resolved_database_url)
    supervisor = Supervisor(data_dir / "logs", env)
    cloud = Cloud(data_dir, port, servers, supervisor, token=token, redis_url=redis_url)
    sys.exit(run_cloud(cloud, demo))


def run_cloud(cloud: Cloud, demo: bool) -> int:
    """Start, (demo,) supervise; always stop every child. The exit status."""
    status = 0
    with shutdown_signals():
        try:
            cloud.start()
            cloud.print_access()
            if demo:
                run_demo(cloud)
            console().print(f"the cloud keeps serving at {cloud.api_url} — try `sdc vm list`; "
                            "Ctrl-C stops it", highlight=False)
            cloud.supervise()
        except ShutdownRequested as why:
            cloud.say(f"{why}: stopping")
        except ChildDied as dead:
            report_death(dead.child)
            status = 1
        except (StartupFailed, ApiError) as exc:
            click.echo(f"sdc up: {exc}", err=True)
            status = 1
        finally:
            stop_children(cloud)
    return status


def report_death(child: Child) -> None:
    click.echo(f"sdc up: {child.name} exited unexpectedly (status {child.proc.returncode}); "
               f"the end of {child.log_path}:", err=True)
    click.echo(child.tail(), err=True)


def stop_children(cloud: Cloud) -> None:
    # Signals stay ignored from here on (see shutdown_signals): the stop runs to the end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    killed = cloud.supervisor.stop()
    if killed:
        cloud.say(f"had to kill: {', '.join(killed)}")
    cloud.say("stopped")


# ---------------------------------------------------------------------------- the demo


DEMO_LOGIN = "demo"
DEMO_PACKAGES = {"small": (1024, 10 * 1024), "large": (4096, 40 * 1024)}
DEMO_IMAGE = ("base-64-lts", "24.4.1")
DEMO_MACHINES = 6
#: states in which a demo machine is kept for the next run (it holds its name)
LIVE_STATES = ("provisioning", "running", "stopped", "unknown")
#: the public network demo machines get their addresses on
DEMO_NETWORK = {"name": "external", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
                "provision_start_ip": "10.88.0.10", "provision_end_ip": "10.88.0.250",
                "resolvers": ["10.88.0.1"], "description": "made by sdc up --demo"}


def run_demo(cloud: Cloud) -> None:
    """Make sure the demo account has DEMO_MACHINES live machines and show where they are.

    A data dir keeps its cloud across `sdc up` runs, so a second `sdc up --demo` reuses the
    machines the first made and provisions only what is missing (one that failed or was
    deleted): running the demo again never piles machines up."""
    ops = cloud.client()
    owner_uuid = ensure_demo_catalog(ops)
    image_uuid = ensure_demo_image(ops)
    kept = live_demo_machines(ops, owner_uuid)
    if kept:
        cloud.say(f"reusing {len(kept)} machine(s) of an earlier demo on this data dir")
    aliases = next_aliases(ops, DEMO_MACHINES - len(kept))
    sizes = list(DEMO_PACKAGES)
    created = []
    for n, alias in enumerate(aliases, start=len(kept)):
        pkg = sizes[n % len(sizes)]
        machine = ops.post("/ops/machines", {"owner": DEMO_LOGIN, "package": pkg,
                                             "image": image_uuid, "alias": alias,
                                             "tags": {"demo": True}})
        created.append((alias, pkg, machine))
    package_names = {p["uuid"]: p.get("name") for p in ops.get("/ops/packages")}
    shown = [(m["alias"], str(package_names.get(m["package_uuid"], "")), m) for m in kept]
    if not created:
        show_placement(ops, shown)
        return
    cloud.say(f"provisioned {len(created)} machines; waiting for their jobs")
    jobs = wait_for_jobs(ops, [m["job_uuid"] for _, _, m in created], cloud.supervisor)
    show_placement(ops, shown + created)
    show_first_job(created, jobs)


def live_demo_machines(ops: OpsClient, owner_uuid: str) -> list[dict[str, Any]]:
    """The demo account's machines made by a demo that still hold their name."""
    rows = ops.get("/ops/machines", {"owner_uuid": owner_uuid})
    return [m for m in rows if str(m.get("alias", "")).startswith("demo-")
            and m.get("state") in LIVE_STATES]


def show_first_job(created: list[tuple[str, str, dict[str, Any]]],
                   jobs: dict[str, dict[str, Any]]) -> None:
    first_job = jobs[created[0][2]["job_uuid"]]
    took = seconds_between(first_job.get("started_at"), first_job.get("finished_at"))
    out = console()
    out.print(f"\njob {first_job['uuid']} ({first_job.get('name')}) of {created[0][0]}: "
              f"{first_job.get('execution')}, took {fmt_duration(took)}", highlight=False)
    out.print(job_steps_table(first_job))
    failed = [j for j in jobs.values() if j.get("execution") == "failed"]
    for job in failed:
        out.print(f"[red]job {job['uuid']} failed:[/] {fmt_job_error(job.get('error'))}",
                  highlight=False)


def ensure_demo_catalog(ops: OpsClient) -> str:
    """The demo account (its uuid), packages and network, made if missing."""
    account = next((a for a in ops.get("/ops/accounts") if a.get("login") == DEMO_LOGIN), None)
    if account is None:
        account = ops.post("/ops/accounts", {"login": DEMO_LOGIN, "email": "demo@example.com"})
    names = {p.get("name") for p in ops.get("/ops/packages")}
    for name, (memory, disk) in DEMO_PACKAGES.items():
        if name not in names:
            ops.post("/ops/packages", {"name": name, "memory": memory, "disk": disk,
                                       "description": f"demo package ({name})"})
    if not ops.get("/ops/networks"):
        ops.post("/ops/networks", DEMO_NETWORK)
    return str(account["uuid"])


def ensure_demo_image(ops: OpsClient) -> str:
    name, version = DEMO_IMAGE
    for img in ops.get("/ops/images"):
        if img.get("name") == name and img.get("version") == version:
            return str(img["uuid"])
    created = ops.post("/ops/images", {"name": name, "version": version, "os": "smartos",
                                       "type": "zone-dataset", "size_mb": 512})
    return str(created["uuid"])


def next_aliases(ops: OpsClient, count: int) -> list[str]:
    """demo-1, demo-2, ... skipping those a previous demo on this data dir already used."""
    taken = {m.get("alias") for m in ops.get("/ops/machines")}
    aliases: list[str] = []
    n = 1
    while len(aliases) < count:
        alias = f"demo-{n}"
        if alias not in taken:
            aliases.append(alias)
        n += 1
    return aliases


def wait_for_jobs(ops: OpsClient, job_uuids: list[str], supervisor: Supervisor,
                  timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with console(stderr=True).status("waiting for jobs") as status:
        while len(done) < len(job_uuids):
            supervisor.check()
            for job_uuid in job_uuids:
                if job_uuid in done:
                    continue
                row = ops.get(f"/ops/jobs/{job_uuid}")
                if row.get("execution") in ("succeeded", "failed", "canceled"):
                    done[job_uuid] = row
            status.update(f"jobs finished: {len(done)}/{len(job_uuids)}")
            if time.monotonic() > deadline:
                raise StartupFailed(f"demo: {len(job_uuids) - len(done)} job(s) still "
                                    f"running after {timeout:g} s")
            time.sleep(0.2)
    return done


def show_placement(ops: OpsClient, created: list[tuple[str, str, dict[str, Any]]]) -> None:
    hostnames = {s["uuid"]: s.get("hostname") for s in ops.get("/ops/servers")}
    table = Table("alias", "package", "server", "state", title="where the machines landed")
    for alias, pkg, machine in created:
        now = ops.get(f"/ops/machines/{machine['uuid']}")
        srv = now.get("server_uuid")
        table.add_row(alias, pkg, str(hostnames.get(srv, srv) or "-"), now.get("state", ""))
    console().print(table)
