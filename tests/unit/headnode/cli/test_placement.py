"""`sdc placement explain` and `sdc capacity [simulate|history]` against the real operator
API (the Flask app served on 127.0.0.1 in a thread, on the test run's PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from headnode.api.app import create_app
from headnode.cli.main import main
from headnode.services import planning
from tests.support.jobqueue import RecordingJobQueue
from tests.support.wsgi import served
from tests.unit.headnode.api.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)


@pytest.fixture
def live_api(settings: Any) -> Iterator[tuple[str, Any]]:
    app = create_app(settings, jobs=RecordingJobQueue())
    with served(app) as url:
        yield url, app.extensions["sdc"]


@pytest.fixture
def fleet(live_api: tuple[str, Any]) -> dict[str, Any]:
    _, sdc = live_api
    return {"cn1": make_server(sdc, hostname="cn1"),
            "off": make_server(sdc, hostname="off", setup=False),
            "package": make_package(sdc, name="small", memory=1024, disk=10240),
            "huge": make_package(sdc, name="huge", memory=64 * 1024, disk=10240),
            "image": make_image(sdc, name="base-64"),
            "owner": make_account(sdc, login="alice")}


def sdc(live_api: tuple[str, Any], *args: str) -> Result:
    url, _ = live_api
    return CliRunner().invoke(main, ["--api-url", url, "--token", "test-token", *args])


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in output.splitlines():
        row = [c.strip() for c in line.strip("│ ").split("│")]
        if row and row[0] == first:
            return row
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_explain_prints_the_funnel(live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    result = sdc(live_api, "placement", "explain", "--package", "small", "--image", "base-64",
                 "--owner", "alice")
    assert result.exit_code == 0, result.output
    assert "2 servers considered" in result.output
    setup_row = next(line for line in result.output.splitlines() if "setup" in line)
    assert "are not set up" in setup_row and "1" in setup_row
    assert f"placed on cn1 (2 servers considered) ({fleet['cn1'].uuid}" in result.output


def test_explain_a_refusal_and_bad_rules(live_api: tuple[str, Any],
                                         fleet: dict[str, Any]) -> None:
    refused = sdc(live_api, "placement", "explain", "--package", "huge", "--image", "base-64")
    assert refused.exit_code == 0
    assert ("no server can fit 64 GiB of RAM and 10 GiB of disk: 1 are not set up, 1 lack RAM"
            in refused.output)
    bad = sdc(live_api, "placement", "explain", "--package", "small", "--image", "base-64",
              "--affinity", "instance=web1")
    assert bad.exit_code == 1 and "affinity" in bad.output


def test_explain_json(live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    result = sdc(live_api, "--json", "placement", "explain", "--package", "small",
                 "--image", "base-64", "--affinity", "instance!=web*")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["server_uuid"] == fleet["cn1"].uuid
    assert [s["name"] for s in answer["steps"]][-1] == "affinity"


def test_capacity_tables(live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    result = sdc(live_api, "capacity")
    assert result.exit_code == 0, result.output
    report = planning.report(live_api[1])
    fits = {p["name"]: p["fits"] for p in report["packages"]}
    assert cells(result.output, "small")[-1] == str(fits["small"])
    assert "fleet (1/2 placeable)" in result.output


def test_capacity_simulate(live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    result = sdc(live_api, "capacity", "simulate", "--add-servers", "2", "--ram-mb", "16384",
                 "--cpus", "8", "--disk-gb", "500", "--place", "small=70", "--place", "huge=1")
    assert result.exit_code == 0, result.output
    assert "new-1-1" in result.output and "new-1-2" in result.output
    assert cells(result.output, "small")[:4] == ["small", "70", "70", "0"]
    as_json = sdc(live_api, "--json", "capacity", "simulate", "--place", "small=3",
                  "--remove", fleet["cn1"].uuid)
    answer = json.loads(as_json.output)
    assert answer["placements"][0]["placed"] == 0


def test_capacity_simulate_bad_place(live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    result = sdc(live_api, "capacity", "simulate", "--place", "small")
    assert result.exit_code == 2 and "PACKAGE=COUNT" in result.output
    unknown = sdc(live_api, "capacity", "simulate", "--place", "nope=1")
    assert unknown.exit_code == 1 and "place.0.package" in unknown.output


def test_capacity_history(live_api: tuple[str, Any], fleet: dict[str, Any]) -> None:
    planning.record_history(live_api[1])
    result = sdc(live_api, "--json", "capacity", "history")
    assert result.exit_code == 0, result.output
    [point] = json.loads(result.output)
    assert point["servers"] == 2
    table = sdc(live_api, "capacity", "history")
    assert table.exit_code == 0 and "taken" in table.output
