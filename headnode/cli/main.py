"""``sdc``: the operator's command line (head-node processes and the operator API)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from headnode.cli.client import ApiError, ApiUnreachable, OpsClient
from headnode.config import HeadnodeSettings, get_settings
from schemas.settings import SettingsError

# Piped output (files, CI logs, tests) keeps whole uuids instead of rich's 80 columns.
PIPE_WIDTH = 200
POLL_INTERVAL = 0.2
# Step results can be whole manifests; the table shows their start, `--json` all of them.
RESULT_WIDTH = 80
FINAL_EXECUTIONS = ("succeeded", "failed", "canceled")

# Commands that live in other packages: imported only when used or listed, so that
# `sdc vm list` does not pay for Celery, and `sdc --help` works while one is missing.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("headnode.cli.up", "up"),
    "agent": ("agents.cli", "agent"),
    "mockcloud": ("agents.cli", "mockcloud"),
}


# ---------------------------------------------------------------------------- state, output


@dataclass
class CliState:
    """What the top-level options decided; the client and settings are made on first use."""

    api_url: str | None = None
    token: str | None = None
    as_json: bool = False
    _settings: HeadnodeSettings | None = field(default=None, repr=False)
    _client: OpsClient | None = field(default=None, repr=False)

    def settings(self) -> HeadnodeSettings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    def client(self) -> OpsClient:
        if self._client is None:
            url = self.api_url or default_api_url(self.settings())
            token = self.token or self.settings().resolved_operator_token()
            self._client = OpsClient(url, token)
        return self._client


def default_api_url(settings: HeadnodeSettings) -> str:
    host, _, port = settings.api_bind.rpartition(":")
    # A wildcard bind is reachable on loopback; a client cannot connect to 0.0.0.0.
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def state_of(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    if obj is None:  # a subcommand invoked on its own (tests, other entry points)
        obj = ctx.ensure_object(CliState)
    return obj


def console(stderr: bool = False) -> Console:
    con = Console(stderr=stderr)
    if not con.is_terminal:
        con = Console(stderr=stderr, width=max(con.width, PIPE_WIDTH))
    return con


def emit(data: Any, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON under ``--json``, else through ``render``."""
    if state_of(click.get_current_context()).as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        render(data)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        state_of(ctx).as_json = True


# Also accepted after the subcommand (`sdc vm list --json`), as users type it.
json_option = click.option("--json", "as_json", is_flag=True, expose_value=False,
                           callback=_set_json, help="Print JSON instead of a table.")


def client() -> OpsClient:
    return state_of(click.get_current_context()).client()


# ---------------------------------------------------------------------------- errors


def report_api_error(err: ApiError) -> None:
    click.echo(f"{err.code}: {err.message}", err=True)
    for name, messages in flatten_errors(err.errors):
        click.echo(f"  {name}: {'; '.join(messages)}", err=True)
    reasons = err.body.get("reasons")
    if isinstance(reasons, dict):
        for reason, count in sorted(reasons.items()):
            click.echo(f"  {reason}: {count} server(s)", err=True)


def flatten_errors(errors: Any, prefix: str = "") -> Iterable[tuple[str, list[str]]]:
    """Field errors as (dotted.name, messages); nested bodies (webargs' location keys,
    nested schemas) become dotted names so every failing field gets its own line."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from flatten_errors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(errors, list) and all(isinstance(m, str) for m in errors):
        yield prefix or "body", list(errors)
    else:
        yield prefix or "body", [str(errors)]


class SdcGroup(click.Group):
    """Turns API, connection and settings errors into one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as err:
            report_api_error(err)
        except ApiUnreachable as err:
            click.echo(f"cannot reach the head node at {err.url}: is `sdc up` or "
                       "`sdc headnode serve` running?", err=True)
        except SettingsError as err:
            click.echo(f"bad setting: {err}", err=True)
        raise click.exceptions.Exit(1)

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        if self is main:
            names.update(LAZY_COMMANDS)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and self is main and cmd_name in LAZY_COMMANDS:
            command = load_lazy_command(cmd_name)
        return command


def load_lazy_command(name: str) -> click.Command:
    module_name, attr = LAZY_COMMANDS[name]
    try:
        command = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        return unavailable_command(name, f"{module_name}.{attr}", exc)
    if not isinstance(command, click.Command):
        return unavailable_command(name, f"{module_name}.{attr}", TypeError("not a command"))
    return command


def unavailable_command(name: str, where: str, exc: Exception) -> click.Command:
    def fail() -> None:
        click.echo(f"`sdc {name}` is not available: cannot load {where} ({exc})", err=True)
        raise click.exceptions.Exit(1)

    return click.Command(name, callback=fail, short_help=f"(unavailable: {where})",
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


# ---------------------------------------------------------------------------- the group


@click.group(cls=SdcGroup, name="sdc")
@click.option("--api-url", envvar="SDC_API_URL", metavar="URL",
              help="Operator API base URL [env SDC_API_URL; default http://<SDC_API_BIND>].")
@click.option("--token", envvar="SDC_OPERATOR_TOKEN", metavar="TOKEN",
              help="Operator bearer token [env SDC_OPERATOR_TOKEN; default the one stored "
                   "in SDC_DATA_DIR/operator-token].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.version_option(package_name="sdc", prog_name="sdc")
@click.pass_context
def main(ctx: click.Context, api_url: str | None, token: str | None, as_json: bool) -> None:
    """Run and operate a SmartDataCenter-style cloud."""
    ctx.obj = CliState(api_url=api_url, token=token, as_json=as_json)


# ---------------------------------------------------------------------------- head node


@main.group(cls=SdcGroup)
def headnode() -> None:
    """Run the head node's processes (API, workflow worker, beat) and its database."""


@headnode.command()
@click.option("--bind", default=None, help="host:port [default SDC_API_BIND].")
@click.option("--workers", type=int, default=None, help="[default SDC_API_WORKERS].")
@click.pass_context
def serve(ctx: click.Context, bind: str | None, workers: int | None) -> None:
    """Serve the API with gunicorn (headnode.api.app:create_app())."""
    settings = state_of(ctx).settings()
    import_or_fail("headnode.api.app", "the API")
    require_migrated(settings.resolved_database_url)
    run_gunicorn(bind or settings.api_bind, workers or settings.api_workers)


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


def run_gunicorn(bind: str, workers: int) -> None:
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
                       "control_socket_disable": True}
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from headnode.api.app import create_app

            return create_app()

    HeadnodeApi().run()


@headnode.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run the workflow worker (Celery, queue `headnode`)."""
    from agents import supervise

    if not supervise.is_child():
        # The worker itself runs in a child that is started again if Celery gives up.
        argv = [sys.executable, "-m", "headnode.cli.main", "headnode", "worker",
                "--loglevel", loglevel]
        sys.exit(supervise.supervise(argv, {}))
    settings = state_of(ctx).settings()
    app = import_or_fail("workflows.celery_app", "the workflow engine").app
    supervise.exit_on_unrecoverable()
    watchdog = supervise.ConsumerWatchdog(settings.redis_url, ["headnode"])
    watchdog.connect()
    watchdog.start()
    app.worker_main([
        "worker", "--queues", "headnode", "--concurrency", str(settings.worker_concurrency),
        "--pool", settings.worker_pool, "--hostname", "headnode@%h", "--loglevel", loglevel,
        # A lone worker needs no cluster chatter; it only costs Redis traffic and start time.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])


@headnode.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def beat(ctx: click.Context, loglevel: str) -> None:
    """Run the periodic reconciler (Celery beat)."""
    settings = state_of(ctx).settings()
    app = import_or_fail("workflows.celery_app", "the workflow engine").app
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "celerybeat-schedule"
    app.start(["beat", "--schedule", str(schedule), "--loglevel", loglevel])


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


def redact_url(url: str) -> str:
    """The URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def import_or_fail(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise click.ClickException(f"cannot load {what} ({module}): {exc}") from exc


@main.command()
def config() -> None:
    """Every SDC_* setting (head node, then agent): default, current value and help."""
    rows = settings_rows()
    if state_of(click.get_current_context()).as_json:
        click.echo(json.dumps([{"process": p, "name": n, "default": d, "value": v, "help": h}
                               for p, n, d, v, h in rows], indent=2))
        return
    table = Table("process", "variable", "default", "set to", "help")
    for process, name, default, value, text in rows:
        table.add_row(process, name, default, "" if value is None else value, text)
    console().print(table)


def settings_rows() -> list[tuple[str, str, str, str | None, str]]:
    from schemas.settings import describe

    classes: list[tuple[str, type]] = [("headnode", HeadnodeSettings)]
    try:
        from agents.config import AgentSettings

        classes.append(("agent", AgentSettings))
    except ImportError:  # the agent's settings are extra information, not a requirement
        pass
    return [(process, name, default, shown_value(name), text)
            for process, cls in classes for name, default, text in describe(cls)]


def shown_value(name: str) -> str | None:
    """The variable's value as safe to print: secrets only say that they are set."""
    value = os.environ.get(name)
    if value is None:
        return None
    if "TOKEN" in name or "PASSWORD" in name:
        return "(set)"
    return redact_url(value) if "://" in value else value


# ---------------------------------------------------------------------------- key=value


def parse_pairs(ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        pairs[key] = value
    return pairs


def typed_trait(value: str) -> Any:
    """Traits are mostly flags (``ssd=true``); other values stay strings."""
    return {"true": True, "false": False}.get(value.lower(), value)


# ---------------------------------------------------------------------------- formatting


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 strings or unix times, as the API and the job engine give them."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: Any, end: Any) -> float | None:
    begun, ended = parse_time(start), parse_time(end)
    if begun is None:
        return None
    return ((ended or datetime.now(UTC)) - begun).total_seconds()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def fmt_time(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") if parsed else "-"


def fmt_mib(mib: int | None) -> str:
    if mib is None:
        return "-"
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


def fmt_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "-" if value is None else str(value)


def render_object(obj: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in obj:
        table.add_row(key, fmt_value(obj[key]))
    console().print(table)


def is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4


# ---------------------------------------------------------------------------- servers


@main.group(cls=SdcGroup)
def server() -> None:
    """Compute nodes: list, inspect, set up, reserve, set traits."""


@server.command("list")
@click.option("--status", type=click.Choice(["running", "unknown"]))
@click.option("--setup/--not-setup", default=None)
@json_option
def server_list(status: str | None, setup: bool | None) -> None:
    params: dict[str, Any] = {"status": status}
    if setup is not None:
        params["setup"] = str(setup).lower()
    emit(client().get("/ops/servers", params), render_servers)


def render_servers(servers: list[dict[str, Any]]) -> None:
    table = Table("uuid", "hostname", "status", "setup", "RAM used/total", "machines")
    for srv in servers:
        used = (srv.get("ram_inflight_mb") or 0) + (srv.get("ram_committed_mb") or 0)
        flags = "yes" if srv.get("setup") else "no"
        if srv.get("reserved"):
            flags += " (reserved)"
        table.add_row(srv.get("uuid", ""), srv.get("hostname", ""), srv.get("status", ""),
                      flags, f"{fmt_mib(used)} / {fmt_mib(srv.get('ram_mb'))}",
                      str(srv.get("machine_count", 0)))
    console().print(table)


def resolve_server(ref: str) -> str:
    """A server uuid from a uuid or a hostname."""
    if is_uuid(ref):
        return ref
    matches = [s["uuid"] for s in client().get("/ops/servers") if s.get("hostname") == ref]
    if len(matches) != 1:
        raise click.ClickException(f"no single server has the hostname {ref!r}")
    return matches[0]


@server.command("get")
@click.argument("server_ref", metavar="UUID")
@json_option
def server_get(server_ref: str) -> None:
    emit(client().get(f"/ops/servers/{resolve_server(server_ref)}"), render_object)


@server.command("setup")
@click.argument("server_ref", metavar="UUID")
@json_option
def server_setup(server_ref: str) -> None:
    """Mark a server set up so that it receives machines."""
    emit(client().put(f"/ops/servers/{resolve_server(server_ref)}", {"setup": True}),
         render_object)


@server.command("update")
@click.argument("server_ref", metavar="UUID")
@click.option("--reserved/--no-reserved", default=None,
              help="A reserved server receives no new machines.")
@click.option("--trait", "traits", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Set the server's traits (repeatable; replaces them all).")
@json_option
def server_update(server_ref: str, reserved: bool | None, traits: dict[str, str]) -> None:
    body: dict[str, Any] = {}
    if reserved is not None:
        body["reserved"] = reserved
    if traits:
        body["traits"] = {k: typed_trait(v) for k, v in traits.items()}
    if not body:
        raise click.UsageError("nothing to change: give --reserved/--no-reserved or --trait")
    emit(client().put(f"/ops/servers/{resolve_server(server_ref)}", body), render_object)


# ---------------------------------------------------------------------------- packages


@main.group(cls=SdcGroup)
def package() -> None:
    """Packages: the sizes machines are made in."""


@package.command("create")
@click.argument("name")
@click.option("--memory", type=click.IntRange(min=1), required=True, help="RAM, MiB.")
@click.option("--disk", type=click.IntRange(min=1), required=True, help="Disk quota, MiB.")
@click.option("--vcpus", type=click.IntRange(min=1))
@click.option("--cpu-cap", type=click.IntRange(min=0), help="Percent of one CPU; 0 = uncapped.")
@click.option("--swap", type=click.IntRange(min=0), help="MiB.")
@click.option("--max-lwps", type=click.IntRange(min=1))
@click.option("--description")
@json_option
def package_create(name: str, memory: int, disk: int, **optional: Any) -> None:
    body = {"name": name, "memory": memory, "disk": disk}
    body.update({k: v for k, v in optional.items() if v is not None})
    emit(client().post("/ops/packages", body), render_object)


@package.command("list")
@json_option
def package_list() -> None:
    emit(client().get("/ops/packages"), render_packages)


def render_packages(packages: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "memory", "disk", "vcpus", "cpu cap", "active")
    for pkg in packages:
        table.add_row(pkg.get("uuid", ""), pkg.get("name", ""), fmt_mib(pkg.get("memory")),
                      fmt_mib(pkg.get("disk")), fmt_value(pkg.get("vcpus")),
                      fmt_value(pkg.get("cpu_cap")), fmt_value(pkg.get("active")))
    console().print(table)


@package.command("get")
@click.argument("ref", metavar="UUID|NAME")
@json_option
def package_get(ref: str) -> None:
    emit(client().get(f"/ops/packages/{ref}"), render_object)


@package.command("delete")
@click.argument("ref", metavar="UUID|NAME")
@json_option
def package_delete(ref: str) -> None:
    client().delete(f"/ops/packages/{ref}")
    emit({"deleted": ref}, lambda _: click.echo(f"package {ref} deleted"))


# ---------------------------------------------------------------------------- images


@main.group(cls=SdcGroup)
def image() -> None:
    """Images: the manifests machines are cloned from."""


@image.command("create")
@click.argument("name")
@click.option("--version", "version", required=True)
@click.option("--os", "os_name", type=click.Choice(
    ["smartos", "linux", "windows", "bsd", "illumos", "other"]))
@click.option("--type", "image_type", type=click.Choice(
    ["zone-dataset", "lx-dataset", "zvol", "docker", "other"]))
@click.option("--size-mb", type=click.IntRange(min=0))
@json_option
def image_create(name: str, version: str, os_name: str | None, image_type: str | None,
                 size_mb: int | None) -> None:
    """Add a placeholder manifest (no image file)."""
    body: dict[str, Any] = {"name": name, "version": version}
    for key, value in (("os", os_name), ("type", image_type), ("size_mb", size_mb)):
        if value is not None:
            body[key] = value
    emit(client().post("/ops/images", body), render_object)


@image.command("list")
@json_option
def image_list() -> None:
    emit(client().get("/ops/images"), render_images)


def render_images(images: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "version", "os", "type", "state", "size")
    for img in images:
        table.add_row(img.get("uuid", ""), img.get("name", ""), img.get("version", ""),
                      img.get("os", ""), img.get("type", ""), img.get("state", ""),
                      fmt_mib(img.get("size_mb")))
    console().print(table)


@image.command("get")
@click.argument("image_uuid", metavar="UUID")
@json_option
def image_get(image_uuid: str) -> None:
    emit(client().get(f"/ops/images/{image_uuid}"), render_object)


# ---------------------------------------------------------------------------- accounts


@main.group(cls=SdcGroup)
def account() -> None:
    """Accounts: tenants and operators."""


@account.command("create")
@click.argument("login")
@click.option("--email", required=True)
@click.option("--operator", is_flag=True, help="May use the operator API.")
@json_option
def account_create(login: str, email: str, operator: bool) -> None:
    emit(client().post("/ops/accounts", {"login": login, "email": email,
                                         "operator": operator}), render_object)


@account.command("list")
@json_option
def account_list() -> None:
    emit(client().get("/ops/accounts"), render_accounts)


def render_accounts(accounts: list[dict[str, Any]]) -> None:
    table = Table("uuid", "login", "email", "operator", "created")
    for acct in accounts:
        table.add_row(acct.get("uuid", ""), acct.get("login", ""), acct.get("email", ""),
                      "yes" if acct.get("operator") else "no", fmt_time(acct.get("created_at")))
    console().print(table)


def resolve_account(ref: str) -> str:
    """An account uuid from a uuid or a login (the machine list filters on uuids)."""
    if is_uuid(ref):
        return ref
    for acct in client().get("/ops/accounts"):
        if acct.get("login") == ref:
            return str(acct["uuid"])
    raise click.ClickException(f"no account has the login {ref!r}")


# ---------------------------------------------------------------------------- machines


@main.group(cls=SdcGroup)
def vm() -> None:
    """Machines: provision, list, start, stop, reboot, delete."""


wait_option = click.option("--wait", is_flag=True,
                           help="Follow the job until it ends; exit 1 if it fails.")


@vm.command("create")
@click.option("--owner", required=True, help="Account uuid or login.")
@click.option("--package", "package_ref", required=True, help="Package uuid or name.")
@click.option("--image", "image_ref", required=True, help="Image uuid or name.")
@click.option("--alias")
@click.option("--tag", "tags", multiple=True, callback=parse_pairs, metavar="KEY=VALUE",
              help="Repeatable.")
@click.option("--metadata", "metadata", multiple=True, callback=parse_pairs,
              metavar="KEY=VALUE", help="Customer metadata; repeatable.")
@click.option("--server", "server_uuid", help="Place on this server (skips the allocator).")
@wait_option
@json_option
def vm_create(owner: str, package_ref: str, image_ref: str, alias: str | None,
              tags: dict[str, str], metadata: dict[str, str], server_uuid: str | None,
              wait: bool) -> None:
    body = machine_create_body(owner, package_ref, image_ref, alias, tags, metadata,
                               server_uuid)
    machine = client().post("/ops/machines", body)
    if wait and machine.get("job_uuid"):
        follow_job(machine["job_uuid"], machine["uuid"])
        return
    emit(machine, render_object)


def machine_create_body(owner: str, package_ref: str, image_ref: str, alias: str | None,
                        tags: dict[str, str], metadata: dict[str, str],
                        server_uuid: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"owner": owner, "package": package_ref, "image": image_ref}
    if alias:
        body["alias"] = alias
    if tags:
        body["tags"] = tags
    if metadata:
        body["metadata"] = metadata
    if server_uuid:
        body["server_uuid"] = server_uuid
    return body


@vm.command("list")
@click.option("--state", type=click.Choice(
    ["provisioning", "running", "stopped", "failed", "destroyed", "unknown"]))
@click.option("--owner", help="Account uuid or login.")
@click.option("--server", "server_ref", help="Server uuid or hostname.")
@json_option
def vm_list(state: str | None, owner: str | None, server_ref: str | None) -> None:
    params = {
        "state": state,
        "owner_uuid": resolve_account(owner) if owner else None,
        "server_uuid": resolve_server(server_ref) if server_ref else None,
    }
    machines = client().get("/ops/machines", params)
    emit(machines, render_machines)


def names_by_uuid(path: str, key: str) -> dict[str, str]:
    """uuid -> a friendly name, for tables; a lookup that fails only costs friendliness."""
    try:
        return {row["uuid"]: row.get(key) or row["uuid"] for row in client().get(path)}
    except ApiError:
        return {}


def render_machines(machines: list[dict[str, Any]]) -> None:
    hostnames = names_by_uuid("/ops/servers", "hostname") if machines else {}
    packages = names_by_uuid("/ops/packages", "name") if machines else {}
    table = Table("uuid", "alias", "state", "server", "package", "created")
    for mach in machines:
        srv, pkg = str(mach.get("server_uuid") or "-"), str(mach.get("package_uuid") or "-")
        table.add_row(mach.get("uuid", ""), mach.get("alias") or "-", mach.get("state", ""),
                      hostnames.get(srv, srv), packages.get(pkg, pkg),
                      fmt_time(mach.get("created_at")))
    console().print(table)


@vm.command("get")
@click.argument("machine_uuid", metavar="UUID")
@json_option
def vm_get(machine_uuid: str) -> None:
    emit(client().get(f"/ops/machines/{machine_uuid}"), render_object)


def machine_action_command(action: str, doc: str) -> click.Command:
    @click.argument("machine_uuid", metavar="UUID")
    @wait_option
    @json_option
    def run(machine_uuid: str, wait: bool) -> None:
        if action == "delete":
            answer = client().delete(f"/ops/machines/{machine_uuid}")
        else:
            answer = client().post(f"/ops/machines/{machine_uuid}", params={"action": action})
        if wait and answer and answer.get("job_uuid"):
            follow_job(answer["job_uuid"], machine_uuid)
            return
        emit(answer, lambda a: click.echo(
            f"{action} of {machine_uuid}: job {(a or {}).get('job_uuid', '-')}"))

    run.__doc__ = doc
    return vm.command(action)(run)


for _action, _doc in (("start", "Start a stopped machine."),
                      ("stop", "Stop a running machine."),
                      ("reboot", "Reboot a running machine."),
                      ("delete", "Destroy a machine and free its resources.")):
    machine_action_command(_action, _doc)


# ---------------------------------------------------------------------------- jobs


@main.group(cls=SdcGroup)
def job() -> None:
    """Workflow jobs: every change to a machine runs as one."""


@job.command("list")
@click.option("--machine", "machine_uuid", metavar="UUID")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def job_list(machine_uuid: str | None, limit: int) -> None:
    emit(client().get("/ops/jobs", {"machine_uuid": machine_uuid, "limit": limit}),
         render_jobs)


def render_jobs(jobs: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "execution", "machine", "created", "duration")
    for row in jobs:
        table.add_row(row.get("uuid", ""), row.get("name", ""), row.get("execution", ""),
                      row.get("machine_uuid") or "-", fmt_time(row.get("created_at")),
                      fmt_duration(job_duration(row)))
    console().print(table)


def job_duration(row: dict[str, Any]) -> float | None:
    # A queued job has not started; the time it has waited is not its duration.
    return seconds_between(row.get("started_at"), row.get("finished_at"))


@job.command("get")
@click.argument("job_uuid", metavar="UUID")
@json_option
def job_get(job_uuid: str) -> None:
    emit(client().get(f"/ops/jobs/{job_uuid}"), render_job)


def render_job(row: dict[str, Any]) -> None:
    con = console()
    con.print(f"[bold]job {row.get('uuid')}[/] {row.get('name', '')}: "
              f"{row.get('execution', '')} (machine {row.get('machine_uuid') or '-'}, "
              f"server {row.get('server_uuid') or '-'}, "
              f"took {fmt_duration(job_duration(row))})", highlight=False)
    if row.get("cancel_requested_at"):
        by = row.get("canceled_by") or {}
        con.print(f"[yellow]cancel asked[/] at {fmt_time(row['cancel_requested_at'])} by "
                  f"{by.get('login') or by.get('type') or '-'}", highlight=False)
    con.print(job_steps_table(row))
    if row.get("error"):
        con.print(f"[red]error:[/] {fmt_job_error(row['error'])}", highlight=False)


def job_steps_table(row: dict[str, Any]) -> Table:
    table = Table("phase", "step", "try", "started", "duration")
    table.add_column("result / error", max_width=RESULT_WIDTH, overflow="ellipsis",
                     no_wrap=True)
    for phase in ("chain", "onerror"):
        results: list[dict[str, Any]] = row.get(f"{phase}_results") or []
        done = {r.get("name") for r in results}
        # The engine's "attempt" counts every scheduling in the whole job; operators want
        # to see how often this step ran.
        tries: dict[str, int] = {}
        for res in results:
            name = str(res.get("name", ""))
            tries[name] = tries.get(name, 0) + 1
            outcome = (f"[red]{fmt_job_error(res['error'])}[/]" if res.get("error")
                       else fmt_value(res.get("result")))
            table.add_row(phase, name, str(tries[name]),
                          fmt_time(res.get("started_at")),
                          fmt_duration(seconds_between(res.get("started_at"),
                                                       res.get("finished_at"))), outcome)
        # Steps that never ran show too, so the whole workflow reads in one table.
        if phase == "onerror" and not results:
            continue
        for name in row.get(phase) or []:
            if name not in done:
                table.add_row(phase, name, "", "-", "-", "[dim]not run[/]")
    return table


def fmt_job_error(error: Any) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if code or message:
            return f"{code or 'Error'}: {message or ''}".rstrip(": ")
    return fmt_value(error)


# ---------------------------------------------------------------------------- following jobs


def current_step(row: dict[str, Any]) -> str:
    """The step a job is at, from its recorded results (the engine runs them in order)."""
    phase = row.get("phase") or "chain"
    names: list[str] = row.get(phase) or []
    results: list[dict[str, Any]] = row.get(f"{phase}_results") or []
    if not results:
        return names[0] if names else "queued"
    last = results[-1]
    last_name = str(last.get("name"))
    if last.get("finished_at") is None or last.get("error"):
        return last_name  # running, or about to be retried
    try:
        return names[names.index(last_name) + 1]
    except (ValueError, IndexError):
        return last_name


def wait_for_job(job_uuid: str, on_poll: Callable[[dict[str, Any]], None] | None = None,
                 timeout: float = 600.0) -> dict[str, Any]:
    """Poll the job until its execution is final; return it."""
    deadline = time.monotonic() + timeout
    ops = client()
    while True:
        row = ops.get(f"/ops/jobs/{job_uuid}")
        if on_poll:
            on_poll(row)
        if row.get("execution") in FINAL_EXECUTIONS:
            return dict(row)
        if time.monotonic() > deadline:
            raise click.ClickException(f"job {job_uuid} still {row.get('execution')} "
                                       f"after {timeout:g} s")
        time.sleep(POLL_INTERVAL)


def follow_job(job_uuid: str, machine_uuid: str | None) -> None:
    """Show the job's steps as they finish, then the machine's state; exit 1 on failure."""
    err = console(stderr=True)
    printed: set[tuple[str, str, Any]] = set()

    with err.status(f"job {job_uuid}: queued") as status:
        def show(row: dict[str, Any]) -> None:
            for phase in ("chain", "onerror"):
                for res in row.get(f"{phase}_results") or []:
                    key = (phase, res.get("name"), res.get("attempt"))
                    if res.get("finished_at") is None or key in printed:
                        continue
                    printed.add(key)
                    mark = "[red]x[/]" if res.get("error") else "[green]ok[/]"
                    took = fmt_duration(seconds_between(res.get("started_at"),
                                                        res.get("finished_at")))
                    err.print(f"  {mark} {phase}/{res.get('name')} ({took})", highlight=False)
            status.update(f"job {job_uuid} ({row.get('name', '')}): "
                          f"{row.get('execution')}, step [bold]{current_step(row)}[/]")

        row = wait_for_job(job_uuid, show)

    machine = fetch_machine(machine_uuid) if machine_uuid else None
    if state_of(click.get_current_context()).as_json:
        click.echo(json.dumps({"job": row, "machine": machine}, indent=2, default=str))
    elif machine is not None:
        click.echo(f"machine {machine.get('uuid')} ({machine.get('alias') or '-'}) is "
                   f"{machine.get('state')}")
    if row.get("execution") in ("failed", "canceled"):
        click.echo(f"job {job_uuid} {row['execution']}: {fmt_job_error(row.get('error'))}",
                   err=True)
        raise click.exceptions.Exit(1)


def fetch_machine(machine_uuid: str) -> dict[str, Any] | None:
    try:
        return dict(client().get(f"/ops/machines/{machine_uuid}"))
    except ApiError as exc:
        if exc.status == 404:  # a destroyed machine may be gone from the API
            return {"uuid": machine_uuid, "state": "destroyed"}
        raise


# Commands kept in modules of their own add themselves to the groups above.
from headnode.cli import doctor as _doctor  # noqa: E402, F401
from headnode.cli import images as _images  # noqa: E402, F401
from headnode.cli import jobs as _jobs  # noqa: E402, F401
from headnode.cli import networks as _networks  # noqa: E402, F401
from headnode.cli import placement as _placement  # noqa: E402, F401

if __name__ == "__main__":  # `python -m headnode.cli.main`, as `sdc up` starts its children
    # Run the importable module, not this __main__ copy of it: the modules imported above
    # add their commands to the groups of that one.
    from headnode.cli.main import main as _entry

    _entry()
