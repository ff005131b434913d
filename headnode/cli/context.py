"""What every ``sdc`` command shares: the state the top-level options decided, the operator
API client made from it, the group class that turns failures into one line on stderr, the
options several commands take, and uuid-or-name references.

Imports no command module (the command modules and :mod:`headnode.cli.output` import it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from headnode.cli.client import ApiError, ApiUnreachable, ApiUntrusted, OpsClient, PlainHttpRefused
from headnode.config import HeadnodeSettings, get_settings
from schemas.settings import SettingsError

# ---------------------------------------------------------------------------- state, client


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
            settings = self.settings()
            token = self.token or settings.resolved_operator_token()
            self._client = OpsClient(url, token, ca_file=settings.ca_file or None,
                                     allow_plain_http=settings.allow_plain_http)
        return self._client


def default_api_url(settings: HeadnodeSettings) -> str:
    host, _, port = settings.api_bind.rpartition(":")
    # A wildcard bind is reachable on loopback; a client cannot connect to 0.0.0.0.
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{port}"


def state_of(ctx: click.Context) -> CliState:
    obj = ctx.find_object(CliState)
    if obj is None:  # a subcommand invoked on its own (tests, other entry points)
        obj = ctx.ensure_object(CliState)
    return obj


def client() -> OpsClient:
    return state_of(click.get_current_context()).client()


# ---------------------------------------------------------------------------- shared options


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        state_of(ctx).as_json = True


# Also accepted after the subcommand (`sdc vm list --json`), as users type it.
json_option = click.option("--json", "as_json", is_flag=True, expose_value=False,
                           callback=_set_json, help="Print JSON instead of a table.")

wait_option = click.option("--wait", is_flag=True,
                           help="Follow the job until it ends; exit 1 if it fails.")


def parse_pairs(ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        pairs[key] = value
    return pairs


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
        except (ApiUntrusted, PlainHttpRefused) as err:
            click.echo(str(err), err=True)
        except ApiUnreachable as err:
            click.echo(f"cannot reach the head node at {err.url}: is `sdc up` or "
                       "`sdc headnode serve` running?", err=True)
        except SettingsError as err:
            click.echo(f"bad setting: {err}", err=True)
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------- references


def is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4


def resolve_server(ref: str) -> str:
    """A server uuid from a uuid or a hostname."""
    if is_uuid(ref):
        return ref
    matches = [s["uuid"] for s in client().get("/ops/servers") if s.get("hostname") == ref]
    if len(matches) != 1:
        raise click.ClickException(f"no single server has the hostname {ref!r}")
    return matches[0]


def resolve_account(ref: str) -> str:
    """An account uuid from a uuid or a login (the machine list filters on uuids)."""
    if is_uuid(ref):
        return ref
    for acct in client().get("/ops/accounts"):
        if acct.get("login") == ref:
            return str(acct["uuid"])
    raise click.ClickException(f"no account has the login {ref!r}")
