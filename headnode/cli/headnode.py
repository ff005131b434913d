"""``sdc headnode serve|worker|beat`` and ``sdc headnode db upgrade``: the head node's
processes (the API under gunicorn, the workflow worker, the reconciler) and its database."""

from __future__ import annotations

import importlib
import os
import shutil
import ssl
import sys
import tempfile
from typing import Any

import click

from headnode.cli.client import is_loopback
from headnode.cli.context import SdcGroup, state_of
from headnode.cli.output import redact_url
from headnode.config import HeadnodeSettings

#: prometheus_client's multiprocess mode: where every worker keeps its metrics' values
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@click.group(cls=SdcGroup)
def headnode() -> None:
    """Run the head node's processes (API, workflow worker, beat) and its database."""


@headnode.command()
@click.option("--bind", default=None, help="host:port [default SDC_API_BIND].")
@click.option("--workers", type=int, default=None, help="[default SDC_API_WORKERS].")
@click.pass_context
def serve(ctx: click.Context, bind: str | None, workers: int | None) -> None:
    """Serve the API with gunicorn (headnode.api.app:create_app()): HTTPS with SDC_TLS_CERT
    and SDC_TLS_KEY; plain HTTP only on loopback unless SDC_ALLOW_PLAIN_HTTP."""
    settings = state_of(ctx).settings()
    bind = bind or settings.api_bind
    tls = check_transport(bind, settings)
    # Before the app (and prometheus_client) is imported: the mode is chosen at import.
    metrics_dir = fresh_metrics_dir()
    try:
        import_or_fail("headnode.api.app", "the API")
        require_migrated(settings.resolved_database_url)
        run_gunicorn(bind, workers or settings.api_workers, tls)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def check_transport(bind: str, settings: HeadnodeSettings) -> dict[str, str]:
    """gunicorn's TLS options, after checking the files load; a plain bind beyond loopback
    is refused (the operator token and request signatures would travel in clear text)
    unless SDC_ALLOW_PLAIN_HTTP says a TLS proxy in front takes care of it."""
    if not settings.tls_cert:
        if not (bind.startswith("unix:") or is_loopback(bind_host(bind))
                or settings.allow_plain_http):
            raise click.ClickException(
                f"refusing to serve plain HTTP on {bind}, beyond loopback: set SDC_TLS_CERT "
                "and SDC_TLS_KEY (HTTPS), or SDC_ALLOW_PLAIN_HTTP=1 if a TLS proxy in front "
                "of it is the only way in")
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(
            f"cannot serve HTTPS with SDC_TLS_CERT={settings.tls_cert} and "
            f"SDC_TLS_KEY={settings.tls_key}: {exc}") from exc
    return {"certfile": settings.tls_cert, "keyfile": settings.tls_key}


def bind_host(bind: str) -> str:
    """The address of a gunicorn bind: ``host:port``, ``[v6]:port`` or a bare host."""
    if bind.startswith("["):
        return bind[1:].partition("]")[0]
    host, colon, _port = bind.rpartition(":")
    return host if colon and ":" not in host else bind


def fresh_metrics_dir() -> str:
    """An empty directory for the workers' metrics, named in the environment the workers
    inherit: /metrics then adds up every worker (one left from an earlier run would add
    its counts too, so it is never reused)."""
    path = tempfile.mkdtemp(prefix="sdc-api-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = path
    return path


def require_migrated(url: str) -> None:
    """Refuse to serve a database whose schema is missing or behind: every request would
    fail with 500 (no such table, no such column)."""
    from sqlalchemy.exc import SQLAlchemyError

    from headnode.store import migrate

    where = redact_url(url)
    try:
        missing = migrate.pending(url)
    except migrate.UnknownRevision as exc:
        raise click.ClickException(
            f"the database at {where} is at revision {exc}, which this sdc does not know "
            "(migrated by a newer version?): upgrade sdc, or serve from the one that "
            "migrated it") from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot check the database at {where}: "
                                   f"{getattr(exc, 'orig', None) or exc}") from exc
    if missing:
        raise click.ClickException(
            f"the database at {where} is not migrated ({len(missing)} migration(s) to apply: "
            f"{', '.join(missing)}); run `sdc headnode db upgrade` first")


#: Seconds an idle kept-alive connection stays open. gunicorn's default (2 s) equals the
#: poll interval of CloudAPI clients, so a client reused its connection just as the server
#: closed it (ECONNRESET); Node's own clients drop idle sockets after 5 s, so the server must
#: wait longer than that (CloudAPI, on Node, keeps them at least 5 s).
KEEPALIVE_SECONDS = 30


def worker_exited(_arbiter: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges stop counting (its counters
    stay in the sum, as Prometheus expects of counters)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def run_gunicorn(bind: str, workers: int, tls: dict[str, str] | None = None) -> None:
    from gunicorn.app.base import BaseApplication

    class HeadnodeApi(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            # Short graceful timeout so `sdc up` stops within its 10 s budget.
            options = {"bind": bind, "workers": workers, "graceful_timeout": 5,
                       "errorlog": "-", "proc_name": "sdc-api",
                       "keepalive": KEEPALIVE_SECONDS,
                       # Threads: a request waiting on the database does not hold a whole
                       # worker, and an image upload or download longer than the worker
                       # timeout is not killed (a sync worker is, at 30 s).
                       "worker_class": "gthread", "threads": 4,
                       # Newer gunicorns open a control socket in $HOME by default: two
                       # head nodes on one machine (two `sdc up`) would fight over it.
                       "control_socket_disable": True,
                       "child_exit": worker_exited, **(tls or {})}
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from headnode.api.app import create_app

            return create_app()

    HeadnodeApi().run()


def child_argv(command: str, loglevel: str) -> list[str]:
    return [sys.executable, "-m", "headnode.cli.main", "headnode", command,
            "--loglevel", loglevel]


@headnode.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run the workflow worker (Celery, queue `headnode`): SDC_WORKER_PROCESSES processes,
    and SDC_EVENT_CONSUMERS node-event consumers (`sdc headnode events`) beside them."""
    from sdccommon import supervise

    if not supervise.is_child():
        # Each process runs in a child that is started again if it gives up.
        settings = state_of(ctx).settings()
        same: dict[str, str] = {}  # the environment: the children read the same settings
        commands = ([(child_argv("worker", loglevel), same)] * max(1, settings.worker_processes)
                    + [(child_argv("events", loglevel), same)]
                    * max(0, settings.event_consumers))
        sys.exit(supervise.supervise_all(commands))
    settings = state_of(ctx).settings()
    app = import_or_fail("workflows.celery_app", "the workflow engine").app
    supervise.exit_on_unrecoverable()
    watchdog = supervise.ConsumerWatchdog(settings.redis_url, ["headnode"])
    watchdog.connect()
    watchdog.start()
    app.worker_main([
        "worker", "--queues", "headnode", "--concurrency", str(settings.worker_concurrency),
        "--pool", settings.worker_pool, "--hostname", f"headnode-{os.getpid()}@%h",
        "--loglevel", loglevel,
        # Workers need no cluster chatter; it only costs Redis traffic and start time.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])


@headnode.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def events(ctx: click.Context, loglevel: str) -> None:
    """Apply node events (queue `nodes`: status reports, sysinfo, guest metadata) in
    batches of up to SDC_EVENT_BATCH. `sdc headnode worker` starts SDC_EVENT_CONSUMERS of
    these itself; run this apart with SDC_EVENT_CONSUMERS=0 there."""
    import logging

    from sdccommon import supervise

    if not supervise.is_child():
        sys.exit(supervise.supervise(child_argv("events", loglevel), {}))
    logging.basicConfig(level=loglevel.upper(),
                        format="[%(asctime)s: %(levelname)s/events-%(process)d] %(message)s")
    settings = state_of(ctx).settings()
    app = import_or_fail("workflows.celery_app", "the workflow engine").app
    from workflows import event_consumer, tasks

    stop = event_consumer.stop_on_signals()
    consumer = tasks.event_consumer()
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=None)
        logging.getLogger(__name__).info(
            "node-event consumer ready (queue %s, batches of up to %d)", "nodes",
            settings.event_batch)
        consumer.run(connection, max(1, settings.event_batch),
                     max(0.01, settings.event_batch_wait), stop)


@headnode.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def beat(ctx: click.Context, loglevel: str) -> None:
    """Run the periodic reconciler (Celery beat). One per cloud schedules: a second one
    waits for the beat lock in Redis and takes over when the first stops."""
    state_of(ctx).settings()  # a bad setting stops it here, naming the setting
    app = import_or_fail("workflows.celery_app", "the workflow engine").app
    app.start(["beat", "--loglevel", loglevel])


@headnode.group(cls=SdcGroup)
def db() -> None:
    """The head node's database."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create the schema, or migrate the database to the newest one."""
    from headnode.store import migrate

    settings = state_of(ctx).settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    before = migrate.applied_heads(url)
    missing = migrate.unapplied(before)
    migrate.upgrade(url)
    after = ", ".join(migrate.applied_heads(url))
    where = redact_url(url)
    if not before:
        click.echo(f"created the schema in the database at {where} (revision {after})")
    elif missing:
        click.echo(f"migrated the database at {where}: applied {', '.join(missing)} "
                   f"(revision {', '.join(before)} -> {after})")
    else:
        click.echo(f"the database at {where} is already up to date (revision {after})")


def import_or_fail(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise click.ClickException(f"cannot load {what} ({module}): {exc}") from exc
