"""``sdc agent run|info`` and ``sdc mockcloud``.

Imports stay light at the top (the main ``sdc`` command loads this module for every command);
Celery and the backends are imported when a command runs.
"""

from __future__ import annotations

import json
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

    _fail_cleanly(start)


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

    _fail_cleanly(start)


if __name__ == "__main__":
    agent()
