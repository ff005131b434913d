"""``sdc agent run|info`` and ``sdc mockcloud``.

Imports stay light at the top (the main ``sdc`` command loads this module for every command);
Celery and the backends are imported when a command runs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from schemas.settings import SettingsError


def _sim_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--sim-ram-mb", type=int, help="sim: memory of a node in MiB"),
        click.option("--sim-cpus", type=int, help="sim: CPU cores of a node"),
        click.option("--sim-disk-gb", type=int, help="sim: pool size of a node in GiB"),
        click.option("--sim-latency-ms", type=int, help="sim: added latency of every operation"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--redis-url", help="Redis URL (default: SDC_REDIS_URL)"),
        click.option("--data-dir", type=click.Path(file_okay=False), help="state directory"),
        click.option("--node-credentials", type=click.Path(dir_okay=False),
                     help="the nodes' credentials file, from `sdc server credentials` "
                          "(default: SDC_NODE_CREDENTIALS, else DATA_DIR/credentials.json)"),
    ]
    for option in reversed(options):
        func = option(func)
    return _sim_options(func)


def _settings(**overrides: Any) -> Any:
    from agents.config import load_settings

    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _fail_cleanly(action: Callable[[], Any]) -> Any:
    """Run ``action``; a configuration or OS problem becomes one line, not a traceback."""
    try:
        return action()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"{exc.strerror or exc}{where}") from exc
    except Exception as exc:
        from agents.backends.base import BackendError

        if isinstance(exc, BackendError):  # a host command failed: its own words, one line
            raise click.ClickException(exc.message) from exc
        raise


def _serve(start: Callable[[], None], server_uuids: Callable[[], list[str]],
           check: Callable[[], Any], settings: Any, child_args: list[str]) -> None:
    """Run the worker in a supervised child (see sdccommon/supervise.py), or be that child.

    The parent first locks every server it will serve (agents/nodelock.py: one agent per
    server) and hands the locks to its children; then ``check`` runs, so a node that cannot
    be served is refused here with one clear line instead of in a child."""
    from sdccommon import supervise

    if supervise.is_child():
        supervise.watch_supervisor()
        try:
            _fail_cleanly(lambda: _hold_locks_as_child(settings, server_uuids))
            _fail_cleanly(start)
        except click.ClickException as exc:
            exc.show()
            sys.exit(supervise.EXIT_CONFIG)
        return
    from agents import nodelock
    from schemas.settings import to_environ

    locks = _fail_cleanly(lambda: nodelock.acquire(settings.data_dir, server_uuids()))
    _fail_cleanly(check)
    fds = [lock.fd for lock in locks]
    environ = {**to_environ(settings), nodelock.LOCK_FDS_ENV: ",".join(map(str, fds))}
    agent_pid = os.getpid()

    def name_holders(worker_pid: int) -> None:
        nodelock.record_holders(locks, {"agent": agent_pid, "worker": worker_pid})

    argv = [sys.executable, "-m", "agents.cli", *child_args]
    sys.exit(supervise.supervise(argv, environ, pass_fds=fds, on_start=name_holders))


def _hold_locks_as_child(settings: Any, server_uuids: Callable[[], list[str]]) -> None:
    """A worker started by its supervisor holds the supervisor's locks already; one started
    on its own (SDC_SUPERVISED_CHILD=1 by hand) takes them itself, for as long as it lives."""
    from agents import nodelock

    if nodelock.inherited_fds() is None:
        nodelock.acquire(settings.data_dir, server_uuids())


@click.group()
def agent() -> None:
    """The compute-node agent."""


@agent.command()
@click.option("--backend", type=click.Choice(["sim", "linux", "smartos"]), help="node backend")
@click.option("--server-uuid", help="this node's UUID (default: stored in the data dir)")
@click.option("--hostname", help="hostname to register (default: this machine's)")
@_common_options
def run(**options: Any) -> None:
    """Serve this node's queue cn.<uuid> until SIGTERM."""
    settings = _settings(**options)

    def start() -> None:
        from agents.runner import make_backend, run_worker

        backend = make_backend(settings)
        run_worker([backend], settings, node_name=f"agent-{backend.server_uuid}")

    def server_uuids() -> list[str]:
        from agents.config import resolve_server_uuid

        return [resolve_server_uuid(settings)]

    def check() -> None:
        from agents.credentials import load_node_keys
        from agents.runner import make_backend

        load_node_keys(settings, server_uuids())
        make_backend(settings)

    _serve(start, server_uuids, check, settings, ["run"])


@agent.command()
@click.option("--backend", type=click.Choice(["sim", "linux", "smartos"]), help="node backend")
@click.option("--server-uuid", help="this node's UUID (default: stored in the data dir)")
@click.option("--hostname", help="hostname to report (default: this machine's)")
@_common_options
def info(**options: Any) -> None:
    """Print the sysinfo this node registers with (SmartOS key names)."""
    settings = _settings(**options)

    def sysinfo() -> dict[str, Any]:
        from agents.runner import make_backend
        from schemas.agent import SysinfoSchema

        result: dict[str, Any] = SysinfoSchema().dump(make_backend(settings).sysinfo())
        return result

    click.echo(json.dumps(_fail_cleanly(sysinfo), indent=2, sort_keys=True))


@agent.command("supervise")
@click.option("--pidfile", required=True, type=click.Path(dir_okay=False),
              help="holds the supervisor's pid, locked while it runs")
@click.option("--log", "log_file", required=True, type=click.Path(dir_okay=False),
              help="where its output and the agent's go (appended)")
@click.option("--env-file", type=click.Path(dir_okay=False),
              help="the agent's SDC_* settings, KEY=VALUE lines (read at each start)")
@click.option("--detach", is_flag=True, help="run in a session of its own; return once it runs")
def supervise_agent(pidfile: str, log_file: str, env_file: str | None, detach: bool) -> None:
    """Run `sdc agent run` and start it again whenever it dies, for a node without systemd;
    SIGTERM stops the agent and its process group, then the supervisor."""
    from pathlib import Path

    from agents import supervise

    sys.exit(supervise.main(Path(pidfile), Path(log_file),
                            Path(env_file) if env_file else None, detach))


@agent.group()
def pool() -> None:
    """A btrfs pool in a loop file for the linux backend (development and test nodes)."""


def _mountpoint(image: str, mount: str | None) -> Any:
    from pathlib import Path

    return Path(mount or _settings().pool or f"{image}.mnt")


@pool.command("create")
@click.option("--size", default="20G", show_default=True, help="size of the file (K, M, G, T)")
@click.option("--mount", help="where to mount it (default: SDC_POOL, else FILE.mnt)")
@click.argument("file", type=click.Path(dir_okay=False))
def pool_create(size: str, mount: str | None, file: str) -> None:
    """Make FILE a btrfs pool with quotas, mounted for SDC_POOL (needs root)."""
    from pathlib import Path

    from agents import pool as loop_pool

    mountpoint = _mountpoint(file, mount)

    def create() -> str:
        try:
            size_bytes = loop_pool.parse_size(size)
        except ValueError as exc:
            raise SettingsError(f"--size: not a size: {size!r}") from exc
        return loop_pool.create(Path(file), size_bytes, mountpoint)

    device = _fail_cleanly(create)
    click.echo(f"{file} on {device} mounted at {mountpoint}; use SDC_POOL={mountpoint}")


@pool.command("destroy")
@click.option("--mount", help="where it is mounted (default: SDC_POOL, else FILE.mnt)")
@click.argument("file", type=click.Path(dir_okay=False))
def pool_destroy(mount: str | None, file: str) -> None:
    """Remove the machines' containers, unmount, detach and delete FILE."""
    from pathlib import Path

    from agents import pool as loop_pool

    settings = _settings()
    _fail_cleanly(lambda: loop_pool.destroy(Path(file), _mountpoint(file, mount),
                                            settings.runc_root))
    click.echo(f"{file} destroyed")


@click.command()
@click.option("--servers", "count", type=click.IntRange(min=1), default=5, show_default=True,
              help="number of simulated compute nodes")
@click.option("--prefix", default="mock", show_default=True,
              help="names and UUIDs of the nodes derive from it; use another to run two clouds")
@_common_options
def mockcloud(count: int, prefix: str, **options: Any) -> None:
    """Run COUNT simulated compute nodes in one process."""
    settings = _settings(backend="sim", **options)

    def start() -> None:
        from agents.mockcloud import run_mockcloud

        run_mockcloud(settings, count, prefix)

    def server_uuids() -> list[str]:
        from agents.mockcloud import node_uuid

        return [node_uuid(prefix, i) for i in range(count)]

    def check() -> None:
        from agents.credentials import load_node_keys

        load_node_keys(settings, server_uuids())

    _serve(start, server_uuids, check, settings,
           ["mockcloud", "--servers", str(count), "--prefix", prefix])


if __name__ == "__main__":
    # ``python -m agents.cli mockcloud ...`` is how a supervised mock cloud starts its worker.
    if sys.argv[1:2] == ["mockcloud"]:
        mockcloud(sys.argv[2:])
    else:
        agent()
