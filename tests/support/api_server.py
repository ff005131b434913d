"""`sdc headnode serve` alone (no worker, no agents) on a fresh database of the test run's
PostgreSQL, on a free loopback port: for tests of the API process itself (TLS, metrics)."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headnode.cli.client import OpsClient
from headnode.store.migrate import upgrade
from tests.support.headnode_env import headnode_env
from tests.support.net import free_port
from tests.support.procs import Proc, ProcessGroup

SDC = str(Path(sys.executable).parent / "sdc")
TOKEN = "api-server-token"


@dataclass
class ServedApi:
    proc: Proc
    url: str
    env: dict[str, str]
    ca_file: str | None

    def client(self, **kwargs: Any) -> OpsClient:
        return OpsClient(self.url, TOKEN, timeout=30, ca_file=self.ca_file, **kwargs)


def serve_api(procs: ProcessGroup, postgres_server: Any, redis_server: Any, workdir: Path,
              env: dict[str, str] | None = None, ca_file: str | None = None) -> ServedApi:
    """Start the API and wait until it answers GET /ops/ping; ``env`` adds settings (with
    SDC_TLS_CERT it serves HTTPS, and ``ca_file`` is what the client trusts)."""
    database_url = postgres_server.create_database(f"api_{uuid.uuid4().hex[:8]}")
    upgrade(database_url)
    port = free_port()
    full_env = headnode_env(database_url, redis_server.url, workdir / "headnode", TOKEN, port,
                            api_workers=1, **(env or {}))
    scheme = "https" if full_env.get("SDC_TLS_CERT") else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    ping = OpsClient(url, TOKEN, timeout=5, ca_file=ca_file).ping
    proc = procs.spawn("api", [SDC, "headnode", "serve"], env=full_env, ready=ping, timeout=60)
    return ServedApi(proc, url, full_env, ca_file)
