"""`sdc account passwd` against the real operator API (the Flask app on 127.0.0.1 in a
thread, on the test run's PostgreSQL): asked twice without echo, or read from stdin; the
API's refusal of a short password is shown and changes nothing."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner, Result

from headnode.cli.main import main
from headnode.services import passwords
from tests.unit.headnode.api.conftest import make_account
from tests.unit.headnode.cli.test_placement import live_api

__all__ = ["live_api"]

GOOD = "correct horse battery"


def sdc(live_api: tuple[str, Any], *args: str, stdin: str) -> Result:
    url, _ = live_api
    return CliRunner().invoke(main, ["--api-url", url, "--token", "test-token", *args],
                              input=stdin)


def test_passwd_asks_twice_without_echo(live_api: tuple[str, Any]) -> None:
    _, ctx = live_api
    make_account(ctx, login="alice")
    result = sdc(live_api, "account", "passwd", "alice", stdin=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "password of alice set" in result.output
    assert GOOD not in result.output  # hidden input is not echoed
    assert result.output.count("New password") == 1
    assert "Repeat for confirmation" in result.output
    assert passwords.authenticate(ctx, "alice", GOOD) is not None


def test_passwd_asks_again_when_the_two_differ(live_api: tuple[str, Any]) -> None:
    _, ctx = live_api
    make_account(ctx, login="alice")
    result = sdc(live_api, "account", "passwd", "alice",
                 stdin=f"{GOOD}\nsomething else!\n{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert passwords.authenticate(ctx, "alice", GOOD) is not None


def test_passwd_from_stdin_and_remove(live_api: tuple[str, Any]) -> None:
    _, ctx = live_api
    make_account(ctx, login="alice")
    result = sdc(live_api, "account", "passwd", "alice", "--password-stdin",
                 stdin=f"{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "New password" not in result.output
    assert passwords.authenticate(ctx, "alice", GOOD) is not None

    removed = sdc(live_api, "account", "passwd", "alice", "--remove", stdin="")
    assert removed.exit_code == 0 and "password of alice removed" in removed.output
    assert passwords.authenticate(ctx, "alice", GOOD) is None


def test_passwd_refusals(live_api: tuple[str, Any]) -> None:
    _, ctx = live_api
    make_account(ctx, login="alice")
    short = sdc(live_api, "account", "passwd", "alice", "--password-stdin",
                stdin="p" * 11 + "\n")
    assert short.exit_code == 1
    assert "password" in short.output and "between 12 and 1024" in short.output
    assert passwords.authenticate(ctx, "alice", "p" * 11) is None

    unknown = sdc(live_api, "account", "passwd", "nobody", "--password-stdin",
                  stdin=f"{GOOD}\n")
    assert unknown.exit_code == 1 and "nobody" in unknown.output
