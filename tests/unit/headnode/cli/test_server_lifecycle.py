"""`sdc server maintenance on|off` and `sdc server forget` against the real operator API (the
Flask app on 127.0.0.1 in a thread, on the test run's PostgreSQL); `sdc server credentials`
then refuses the forgotten node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from headnode.cli.main import main
from headnode.placement.filters import MAINTENANCE
from headnode.store.models import RevokedNode
from tests.unit.headnode.api.conftest import (
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)
from tests.unit.headnode.cli.test_placement import live_api, sdc

__all__ = ["live_api"]  # the fixture, shared with the placement commands' tests


@pytest.fixture
def fleet(live_api: tuple[str, Any]) -> dict[str, Any]:
    _, ctx = live_api
    return {"server": make_server(ctx, hostname="cn1"),
            "package": make_package(ctx, name="small", memory=1024, disk=10240),
            "image": make_image(ctx, name="base-64"),
            "owner": make_account(ctx, login="alice")}


def test_maintenance_on_shows_everywhere_and_placement_says_why(
        live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    uuid = fleet["server"].uuid
    on = sdc(live_api, "--json", "server", "maintenance", "on", uuid)
    assert on.exit_code == 0, on.output
    assert json.loads(on.output)["maintenance"] is True
    listed = sdc(live_api, "server", "list")
    assert "(maintenance)" in listed.output
    shown = sdc(live_api, "server", "get", "cn1")  # by hostname too
    assert any(line.split()[:2] == ["maintenance", "True"] for line in shown.output.splitlines())

    explained = sdc(live_api, "placement", "explain", "--package", "small", "--image",
                    "base-64")
    assert f"1 {MAINTENANCE}" in explained.output

    off = sdc(live_api, "--json", "server", "maintenance", "off", uuid)
    assert json.loads(off.output)["maintenance"] is False
    assert "(maintenance)" not in sdc(live_api, "server", "list").output
    assert "placed on cn1" in sdc(live_api, "placement", "explain", "--package", "small",
                                  "--image", "base-64").output


def test_maintenance_takes_only_on_or_off(live_api: tuple[str, Any],
                                          fleet: dict[str, Any]) -> None:
    result = sdc(live_api, "server", "maintenance", "maybe", fleet["server"].uuid)
    assert result.exit_code == 2 and "'maybe' is not one of 'on', 'off'" in result.output


def test_forget_refused_with_machines_then_done_and_credentials_refused(
        live_api: tuple[str, Any], fleet: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, ctx = live_api
    uuid = fleet["server"].uuid
    machines = [make_machine(ctx, fleet, alias=f"m{i}", state="running") for i in range(2)]
    refused = sdc(live_api, "server", "forget", uuid)
    assert refused.exit_code == 1
    assert "2 machine(s)" in refused.output and "ServerInUse" in refused.output

    with ctx.transaction() as session:
        for machine in machines:
            session.merge(machine).state = "destroyed"
    done = sdc(live_api, "server", "forget", uuid)
    assert done.exit_code == 0, done.output
    assert f"server {uuid} forgotten" in done.output
    with ctx.read() as session:
        assert session.get(RevokedNode, uuid) is not None
    assert uuid not in sdc(live_api, "server", "list").output

    monkeypatch.setenv("SDC_DATABASE_URL", ctx.settings.resolved_database_url)
    monkeypatch.setenv("SDC_MESSAGE_KEY", "k")
    out = tmp_path / "creds.json"
    issued = CliRunner().invoke(main, ["server", "credentials", uuid, "--out", str(out)])
    assert issued.exit_code == 1 and "were forgotten" in issued.output
    assert not out.exists()

    again = sdc(live_api, "server", "forget", uuid)
    assert again.exit_code == 1 and "not found" in again.output
