"""``sdc up``: the whole cloud on one machine (Redis, API, worker, beat, a mock fleet).

Every part runs as a child process in its own process group, logging to
``<data dir>/logs/<name>.log``. The supervisor stops them in reverse start order on Ctrl-C
or SIGTERM, and stops them all if one dies, so nothing outlives ``sdc up``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from headnode.cli.client import ApiError, OpsClient
from headnode.cli.demo import run_demo
from headnode.cli.output import console
from headnode.cli.supervisor import (
    Child,
    ChildDied,
    ShutdownRequested,
    StartupFailed,
    Supervisor,
    shutdown_signals,
    wait_for,
)
from headnode.cli.tls import local_tls, write_new_file
from headnode.config import HeadnodeSettings, get_settings
from headnode.services.node_credentials import write_credentials
from schemas.mocknodes import node_uuids
from sdccommon.redact import redact_url

SUPERVISE_INTERVAL = 0.5
SDC = [sys.executable, "-m", "headnode.cli.main"]


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


# ---------------------------------------------------------------------------- the cloud


@dataclass
class Cloud:
    data_dir: Path
    port: int
    servers: int
    supervisor: Supervisor
    token: str = ""
    redis_url: str = ""
    #: the CA that signed the API's certificate (HTTPS, always)
    ca_file: str = ""
    #: how many servers were running at the last look (what waiting for them watches)
    registered: int = 0

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self) -> OpsClient:
        return OpsClient(self.api_url, self.token, timeout=10.0, ca_file=self.ca_file or None)

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
            *SDC, "mockcloud", "--servers", str(self.servers),
            "--prefix", fleet_prefix(self.data_dir),
            "--node-credentials", str(self.issue_credentials())],
            # The operator's SDC_CONFIG file holds head-node keys, which the agent's settings
            # loader refuses as unknown: the simulated nodes run on their defaults.
            without=("SDC_CONFIG",))
        # Progress, not a fixed time: 10,000 nodes take minutes to register.
        servers = wait_for(f"{self.servers} servers registering", self.running_servers,
                           self.supervisor, interval=1.0, progress=lambda: self.registered)
        self.set_up(servers)

    def issue_credentials(self) -> Path:
        """The mock fleet's node keys (sdc server credentials), in a file only we can read."""
        path = self.data_dir / "mockcloud-credentials.json"
        message_key = get_settings(data_dir=self.data_dir).resolved_message_key()
        write_credentials(message_key, node_uuids(fleet_prefix(self.data_dir), self.servers),
                          path)
        return path

    def start_redis(self) -> None:
        if self.redis_url:
            self.say(f"using Redis at {redact_url(self.redis_url)} (SDC_REDIS_URL)")
            return
        executable = shutil.which("redis-server")
        if executable is None:
            raise StartupFailed("redis-server is not installed; install it, or set "
                                "SDC_REDIS_URL to a Redis you run")
        port = free_port()
        # A fresh password each run: the demo's Redis keeps nothing across runs, and every
        # child gets the URL (with the password) in its environment, never on its command
        # line, which `ps` shows to every user.
        password = secrets.token_hex(24)
        self.redis_url = f"redis://:{password}@127.0.0.1:{port}/0"
        self.supervisor.env["SDC_REDIS_URL"] = self.redis_url
        self.say(f"starting a private redis-server on 127.0.0.1:{port} (with a password)")
        config = self.data_dir / "redis.conf"
        write_new_file(config, redis_config(password).encode())  # 0600: it holds a secret
        self.supervisor.start("redis", [
            executable, str(config), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(self.supervisor.log_dir)])
        wait_for("redis-server", lambda: redis_answers(self.redis_url), self.supervisor)

    def running_servers(self) -> list[dict[str, Any]] | None:
        try:
            servers = self.client().get("/ops/servers", {"status": "running"})
        except ApiError:
            return None
        self.registered = len(servers)
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
        out.print(f"web console: [bold]{self.api_url}/console/[/] (operators sign in with the "
                  "operator token)", highlight=False)
        out.print(f"logs: {self.supervisor.log_dir}/<name>.log", highlight=False)
        if self.ca_file:
            out.print(f"HTTPS: the API's certificate is signed by the CA in {self.ca_file}; "
                      f"trust it with SDC_CA_FILE (sdc), curl --cacert, "
                      f"NODE_EXTRA_CA_CERTS={self.ca_file} (triton), or let triton skip the "
                      "check: `triton -i` (TRITON_TLS_INSECURE=1)", highlight=False,
                      soft_wrap=True)
        out.print("\nin another shell:", highlight=False)
        trust = f" SDC_CA_FILE={self.ca_file}" if self.ca_file else ""
        out.print(f"  export SDC_API_URL={self.api_url} SDC_OPERATOR_TOKEN={self.token}"
                  f"{trust}\n", highlight=False, soft_wrap=True)

    def supervise(self) -> None:
        while True:
            self.supervisor.check()
            time.sleep(SUPERVISE_INTERVAL)


def redis_config(password: str) -> str:
    # No persistence: Redis is only the broker; the database is the system of record.
    return f'save ""\nappendonly no\nrequirepass {password}\n'


def redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def demo_tls(settings: HeadnodeSettings, data_dir: Path) -> tuple[str, str, str]:
    """(certificate, key, CA file): the operator's (SDC_TLS_CERT, SDC_TLS_KEY, SDC_CA_FILE),
    else ones made for this data dir (kept, and made again when they near their end)."""
    if settings.tls_cert:
        return settings.tls_cert, settings.tls_key, settings.ca_file
    tls, _made = local_tls(data_dir / "tls")
    return str(tls.cert_file), str(tls.key_file), str(tls.ca_file)


def child_env(data_dir: Path, port: int, token: str, redis_url: str,
              database_url: str, tls: tuple[str, str, str]) -> dict[str, str]:
    env = dict(os.environ)
    cert, key, ca_file = tls
    env.update({
        "SDC_DATA_DIR": str(data_dir),
        "SDC_API_BIND": f"127.0.0.1:{port}",
        "SDC_OPERATOR_TOKEN": token,
        "SDC_DATABASE_URL": database_url,
        "SDC_TLS_CERT": cert,
        "SDC_TLS_KEY": key,
        "SDC_CA_FILE": ca_file,
        # the mock fleet uploads the images made from its machines to the head node's store
        "SDC_IMAGE_STORE_URL": f"https://127.0.0.1:{port}",
        "SDC_IMAGE_STORE_CA": ca_file,
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
    tls = demo_tls(settings, data_dir)
    env = child_env(data_dir, port, token, redis_url, settings.resolved_database_url, tls)
    supervisor = Supervisor(data_dir / "logs", env)
    cloud = Cloud(data_dir, port, servers, supervisor, token=token, redis_url=redis_url,
                  ca_file=tls[2])
    sys.exit(run_cloud(cloud, demo))


def run_cloud(cloud: Cloud, demo: bool) -> int:
    """Start, (demo,) supervise; always stop every child. The exit status."""
    status = 0
    with shutdown_signals():
        try:
            cloud.start()
            cloud.print_access()
            if demo:
                run_demo(cloud.client(), cloud.supervisor, cloud.say)
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
