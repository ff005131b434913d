"""Every head-node setting (API, workflow worker, beat), read in one place."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.settings import load, setting

DEFAULT_DATA_DIR = Path("~/.sdc").expanduser()


@dataclass(frozen=True)
class HeadnodeSettings:
    data_dir: Path = setting(DEFAULT_DATA_DIR, "Where the head node keeps its files "
                             "(SQLite database, operator token, image files).")
    database_url: str = setting("", "SQLAlchemy URL of the database; empty means a SQLite "
                                "file in SDC_DATA_DIR (PostgreSQL in production: "
                                "postgresql+psycopg://user@host/db).")
    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis: the Celery broker and the "
                             "heartbeat table (never the system of record).")
    api_bind: str = setting("127.0.0.1:8080", "host:port the API listens on.")
    api_workers: int = setting(2, "gunicorn worker processes for the API.")
    image_base_url: str = setting("", "Base URL compute nodes fetch and upload image files "
                                  "at; empty means http://<SDC_API_BIND>.")
    operator_token: str = setting("", "Bearer token of the operator API; empty means the one "
                                  "stored in SDC_DATA_DIR/operator-token (made on first use).")
    # A new provision waits about this many messages / throughput before its first step
    # (~1.2 s at 50 provisions/s): bench/provision_throughput.py's p99 stays under 2 s.
    provision_backlog_limit: int = setting(
        64, "Refuse new provisions with 429 RequestThrottled (and Retry-After) while this "
        "many messages wait for the workflow worker; 0 never refuses.")
    worker_concurrency: int = setting(4, "Threads (or processes) of the workflow worker.")
    # Threads by default: a step is mostly waiting on PostgreSQL or Redis, and a prefork
    # pool costs every message a trip through a pipe to a child (measured: ~3 ms of a
    # provision's worker CPU on 2 cores, bench/provision_throughput.py).
    worker_pool: str = setting("threads", "Celery pool of the workflow worker: threads, "
                               "prefork (processes) or solo.")
    heartbeat_lifetime: float = setting(11.0, "Seconds without a heartbeat before a server "
                                        "is unknown (CNAPI: 5 s interval + a miss + 1 s).")
    reconcile_interval: float = setting(5.0, "Seconds between heartbeat reconciliations and "
                                        "job-deadline sweeps.")
    resend_interval: float = setting(30.0, "Seconds a job waits for a message it sent (its "
                                     "first step, an agent task) to be taken up or answered "
                                     "before sending it again; every such message is "
                                     "idempotent.")
    broker_visibility_timeout: float = setting(60.0, "Seconds before a message taken by a "
                                               "worker that died unacknowledged is delivered "
                                               "again (head-node tasks all take well under "
                                               "this).")
    reservation_ratio: float = setting(0.15, "Share of each server's RAM kept for the system.")
    pool_usable_ratio: float = setting(0.94, "Share of each pool usable for machines.")
    max_machines_per_server: int = setting(224, "Machine count limit per server.")
    capacity_history_interval: float = setting(300.0, "Seconds between capacity history "
                                               "snapshots (fleet utilization).")
    capacity_history_days: float = setting(30.0, "Days a capacity history snapshot is kept.")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sdc.sqlite'}"

    def resolved_operator_token(self) -> str:
        """The configured token, else the stored one, else a new one stored for next time."""
        if self.operator_token:
            return self.operator_token
        path = self.data_dir / "operator-token"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token


def get_settings(**overrides: Any) -> HeadnodeSettings:
    return load(HeadnodeSettings, None, **overrides)
