"""Run a Celery worker that serves a set of nodes: one agent, or a whole mock cloud.

Both paths are the same code: build the backends, host them in the task registry, start the
heartbeater and status reporter, and consume exactly the queues ``cn.<uuid>`` of those nodes.
Celery owns SIGTERM/SIGINT (warm shutdown: running tasks finish, unacknowledged ones go back
to the queue); the threads stop when the worker returns.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

from agents import tasks
from agents.backends.base import NodeBackend
from agents.config import AgentSettings, resolve_server_uuid
from agents.credentials import load_node_keys
from agents.heartbeat import Heartbeater, StatusReporter, redis_client
from schemas.agent import agent_queue
from schemas.settings import SettingsError
from sdccommon import signing, tasklog
from sdccommon.redact import redact_url
from sdccommon.supervise import ConsumerWatchdog, exit_on_unrecoverable

log = logging.getLogger(__name__)

KNOWN_BACKENDS = ("sim", "linux", "smartos")


def make_backend(settings: AgentSettings, server_uuid: str | None = None) -> NodeBackend:
    """The backend named by ``settings.backend``; its module provides ``from_settings``."""
    if settings.backend not in KNOWN_BACKENDS:
        raise SettingsError(
            f"SDC_BACKEND: unknown backend {settings.backend!r} "
            f"(one of {', '.join(KNOWN_BACKENDS)})"
        )
    try:
        module = importlib.import_module(f"agents.backends.{settings.backend}")
    except ImportError as exc:
        raise SettingsError(
            f"SDC_BACKEND: backend {settings.backend!r} is not available: {exc}"
        ) from exc
    uuid = server_uuid or resolve_server_uuid(settings)
    backend: NodeBackend = module.from_settings(settings, uuid)
    return backend


def worker_argv(queues: Sequence[str], concurrency: int, node_name: str,
                log_level: str = "INFO") -> list[str]:
    return [
        "worker",
        "-Q", ",".join(queues),
        "--pool", "threads",
        "-c", str(concurrency),
        # gossip, mingle and worker heartbeats are chatter between workers; with one worker
        # per node (or hundreds in a mock cloud) they would only load Redis
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n", f"{node_name}@%h",
        "--loglevel", log_level,
    ]


def run_worker(backends: Sequence[NodeBackend], settings: AgentSettings, node_name: str) -> None:
    """Serve ``backends`` until the worker is told to stop (SIGTERM/SIGINT)."""
    if not backends:
        raise SettingsError("no nodes to serve")
    keys = load_node_keys(settings, [b.server_uuid for b in backends])
    tasks.configure(settings.redis_url)
    tasks.host(backends)
    signing.serve_nodes(keys, hosted=tasks.registry.keys)
    reporter = StatusReporter(
        backends,
        check_interval=settings.status_check_interval,
        status_interval=settings.status_interval,
        full_report_interval=settings.full_report_interval,
    )
    tasks.REPLY_LISTENERS.append(reporter.acknowledge)
    client = redis_client(settings.redis_url)
    heartbeater = Heartbeater(
        client,
        [b.server_uuid for b in backends],
        interval=settings.heartbeat_interval,
        on_reconnect=reporter.register_again,
        keys=keys,
    )
    heartbeater.start()
    reporter.start()
    queues = [agent_queue(b.server_uuid) for b in backends]
    exit_on_unrecoverable()
    tasklog.connect(lambda task: "server" if task.startswith("agent.") else None)
    watchdog = ConsumerWatchdog(settings.redis_url, queues)
    watchdog.connect()
    watchdog.start()
    log.info("serving %d node(s) on %s", len(backends), redact_url(settings.redis_url))
    try:
        tasks.app.worker_main(worker_argv(queues, settings.concurrency, node_name,
                                            settings.log_level))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        tasks.REPLY_LISTENERS.remove(reporter.acknowledge)
        reporter.stop()
        heartbeater.stop()
        client.close()
