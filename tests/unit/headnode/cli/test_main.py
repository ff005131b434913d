"""The `sdc` commands against a canned operator API: tables, JSON, errors, request bodies."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner, Result

from headnode.cli import output as cli
from headnode.cli.main import LAZY_COMMANDS, main
from tests.support.net import free_port

from .conftest import FakeApi

TOKEN = "test-token"
SERVER: dict[str, Any] = {
    "uuid": "11111111-2222-3333-4444-555555555555", "hostname": "cn-001", "status": "running",
    "setup": True, "reserved": False, "ram_mb": 8192, "ram_inflight_mb": 1024,
    "ram_committed_mb": 1024, "machine_count": 2,
}
PACKAGE: dict[str, Any] = {"uuid": "aaaaaaaa-0000-0000-0000-000000000001", "name": "small",
                           "memory": 1024, "disk": 10240}
MACHINE: dict[str, Any] = {
    "uuid": "99999999-0000-0000-0000-000000000001", "alias": "web-1", "state": "provisioning",
    "server_uuid": SERVER["uuid"], "package_uuid": PACKAGE["uuid"],
    "job_uuid": "77777777-0000-0000-0000-000000000001",
}


def job(execution: str, **extra: Any) -> dict[str, Any]:
    row = {
        "uuid": MACHINE["job_uuid"], "name": "provision", "machine_uuid": MACHINE["uuid"],
        "execution": execution, "phase": "chain",
        "chain": ["validate", "ensure_image", "create_machine", "record"],
        "onerror": ["release", "mark_failed"],
        "chain_results": [
            {"name": "validate", "attempt": 1, "started_at": "2026-01-01T00:00:00+00:00",
             "finished_at": "2026-01-01T00:00:00.250000+00:00", "result": {"ok": True},
             "error": None},
        ],
        "onerror_results": [],
        "error": None, "created_at": "2026-01-01T00:00:00+00:00",
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": None,
    }
    row.update(extra)
    return row


FAILED_JOB = job(
    "failed", phase="onerror", finished_at="2026-01-01T00:00:03+00:00",
    error={"code": "ImageImportFailed", "message": "pool is full"},
    onerror_results=[{"name": "release", "attempt": 1, "started_at": 1767225602.0,
                      "finished_at": 1767225602.5, "result": None, "error": None}],
)


def sdc(api: FakeApi | str, *args: str) -> Result:
    url = api if isinstance(api, str) else api.url
    return CliRunner().invoke(main, ["--api-url", url, "--token", TOKEN, *args])


def test_server_list_prints_a_table_with_ram_and_machines(fake_api: FakeApi) -> None:
    fake_api.route("GET", "/ops/servers", (200, [SERVER]))
    result = sdc(fake_api, "server", "list")
    assert result.exit_code == 0, result.output
    assert SERVER["uuid"] in result.stdout
    assert "cn-001" in result.stdout
    assert "2.0 GiB / 8.0 GiB" in result.stdout
    assert fake_api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_switch_prints_the_api_answer(fake_api: FakeApi, where: str) -> None:
    fake_api.route("GET", "/ops/servers", (200, [SERVER]))
    args = ["--json", "server", "list"] if where == "before" else ["server", "list", "--json"]
    result = sdc(fake_api, *args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [SERVER]


def test_validation_error_prints_one_line_per_field(fake_api: FakeApi) -> None:
    fake_api.route("POST", "/ops/packages", (422, {
        "code": "ValidationFailed", "message": "invalid fields: disk, memory",
        "errors": {"memory": ["Must be greater than or equal to 1."],
                   "disk": ["Not a valid integer."]},
    }))
    result = sdc(fake_api, "package", "create", "tiny", "--memory", "64", "--disk", "64")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "ValidationFailed: invalid fields: disk, memory"
    assert "  memory: Must be greater than or equal to 1." in lines
    assert "  disk: Not a valid integer." in lines
    assert len(lines) == 3
    assert "Traceback" not in result.output


def test_capacity_error_lists_the_reasons(fake_api: FakeApi) -> None:
    fake_api.route("POST", "/ops/machines", (409, {
        "code": "InsufficientCapacity", "message": "no server fits",
        "reasons": {"not_enough_ram": 3}}))
    result = sdc(fake_api, "vm", "create", "--owner", "o", "--package", "p", "--image", "i")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["InsufficientCapacity: no server fits",
                                          "  not_enough_ram: 3 server(s)"]


def test_connection_refused_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = sdc(url, "vm", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"cannot reach the head node at {url}: is `sdc up` or "
                                     "`sdc headnode serve` running?")


def test_vm_create_builds_the_body_from_options(fake_api: FakeApi) -> None:
    fake_api.route("POST", "/ops/machines", (202, MACHINE))
    result = sdc(fake_api, "vm", "create", "--owner", "demo", "--package", "small",
                 "--image", "base-64-lts", "--alias", "web-1", "--tag", "role=web",
                 "--tag", "env=a=b", "--metadata", "user-script=", "--server", SERVER["uuid"])
    assert result.exit_code == 0, result.output
    (req,) = fake_api.sent("POST", "/ops/machines")
    assert req.body == {
        "owner": "demo", "package": "small", "image": "base-64-lts", "alias": "web-1",
        "tags": {"role": "web", "env": "a=b"}, "metadata": {"user-script": ""},
        "server_uuid": SERVER["uuid"],
    }
    assert MACHINE["job_uuid"] in result.stdout


def test_vm_create_minimal_body_has_no_empty_fields(fake_api: FakeApi) -> None:
    fake_api.route("POST", "/ops/machines", (202, MACHINE))
    sdc(fake_api, "vm", "create", "--owner", "o", "--package", "p", "--image", "i")
    (req,) = fake_api.sent("POST", "/ops/machines")
    assert req.body == {"owner": "o", "package": "p", "image": "i"}


def test_bad_tag_is_a_usage_error_naming_the_option(fake_api: FakeApi) -> None:
    result = sdc(fake_api, "vm", "create", "--owner", "o", "--package", "p", "--image", "i",
                 "--tag", "nokey")
    assert result.exit_code == 2
    assert "--tag" in result.stderr
    assert "'nokey' is not KEY=VALUE" in result.stderr
    assert fake_api.requests == []


def test_wait_on_a_failed_job_exits_1_with_its_error(fake_api: FakeApi,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "POLL_INTERVAL", 0.01)
    fake_api.route("POST", "/ops/machines", (202, MACHINE))
    fake_api.route("GET", f"/ops/jobs/{MACHINE['job_uuid']}",
                   [(200, job("queued", chain_results=[])), (200, job("running")),
                    (200, FAILED_JOB)])
    fake_api.route("GET", f"/ops/machines/{MACHINE['uuid']}",
                   (200, {**MACHINE, "state": "failed"}))
    result = sdc(fake_api, "vm", "create", "--owner", "o", "--package", "p", "--image", "i",
                 "--wait")
    assert result.exit_code == 1
    assert f"machine {MACHINE['uuid']} (web-1) is failed" in result.stdout
    assert "failed: ImageImportFailed: pool is full" in result.stderr
    assert "chain/validate" in result.stderr  # the finished steps were shown
    assert "Traceback" not in result.output
    assert len(fake_api.sent("GET", f"/ops/jobs/{MACHINE['job_uuid']}")) == 3


def test_wait_on_a_stop_that_succeeds(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "POLL_INTERVAL", 0.01)
    answer = {"machine_uuid": MACHINE["uuid"], "job_uuid": MACHINE["job_uuid"]}
    fake_api.route("POST", f"/ops/machines/{MACHINE['uuid']}", (202, answer))
    fake_api.route("GET", f"/ops/jobs/{MACHINE['job_uuid']}",
                   (200, job("succeeded", name="stop", finished_at="2026-01-01T00:00:01Z")))
    fake_api.route("GET", f"/ops/machines/{MACHINE['uuid']}",
                   (200, {**MACHINE, "state": "stopped"}))
    result = sdc(fake_api, "vm", "stop", MACHINE["uuid"], "--wait")
    assert result.exit_code == 0, result.output
    assert fake_api.sent("POST", f"/ops/machines/{MACHINE['uuid']}")[0].query == {
        "action": ["stop"]}
    assert "is stopped" in result.stdout


def test_wait_on_delete_of_a_vanished_machine(fake_api: FakeApi,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "POLL_INTERVAL", 0.01)
    answer = {"machine_uuid": MACHINE["uuid"], "job_uuid": MACHINE["job_uuid"]}
    fake_api.route("DELETE", f"/ops/machines/{MACHINE['uuid']}", (202, answer))
    fake_api.route("GET", f"/ops/jobs/{MACHINE['job_uuid']}", (200, job("succeeded")))
    result = sdc(fake_api, "vm", "delete", MACHINE["uuid"], "--wait")
    assert result.exit_code == 0, result.output
    assert "is destroyed" in result.stdout


def test_job_get_shows_every_step(fake_api: FakeApi) -> None:
    fake_api.route("GET", f"/ops/jobs/{MACHINE['job_uuid']}", (200, FAILED_JOB))
    result = sdc(fake_api, "job", "get", MACHINE["job_uuid"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for step in ("validate", "ensure_image", "create_machine", "record", "release",
                 "mark_failed"):
        assert step in out
    assert "250 ms" in out  # validate's duration
    assert "500 ms" in out  # release's, from unix times
    assert "not run" in out
    assert "ImageImportFailed: pool is full" in out


def test_job_list_table(fake_api: FakeApi) -> None:
    fake_api.route("GET", "/ops/jobs", (200, [FAILED_JOB]))
    result = sdc(fake_api, "job", "list", "--machine", MACHINE["uuid"], "--limit", "5")
    assert result.exit_code == 0, result.output
    assert fake_api.requests[0].query == {"machine_uuid": [MACHINE["uuid"]], "limit": ["5"]}
    assert "provision" in result.stdout and "failed" in result.stdout
    assert "3.0 s" in result.stdout


def test_vm_list_names_servers_and_packages(fake_api: FakeApi) -> None:
    fake_api.route("GET", "/ops/machines", (200, [MACHINE]))
    fake_api.route("GET", "/ops/servers", (200, [SERVER]))
    fake_api.route("GET", "/ops/packages", (200, [PACKAGE]))
    fake_api.route("GET", "/ops/accounts", (200, [{"uuid": "a" * 8 + "-0000-0000-0000-" + "0" * 12,
                                                   "login": "demo"}]))
    result = sdc(fake_api, "vm", "list", "--state", "running", "--owner", "demo",
                 "--server", "cn-001")
    assert result.exit_code == 0, result.output
    (req,) = fake_api.sent("GET", "/ops/machines")
    assert req.query["state"] == ["running"]
    assert req.query["server_uuid"] == [SERVER["uuid"]]
    assert req.query["owner_uuid"][0].startswith("aaaaaaaa")
    assert "web-1" in result.stdout and "cn-001" in result.stdout and "small" in result.stdout


def test_server_update_sends_reserved_and_traits(fake_api: FakeApi) -> None:
    path = f"/ops/servers/{SERVER['uuid']}"
    fake_api.route("PUT", path, (200, SERVER))
    result = sdc(fake_api, "server", "update", SERVER["uuid"], "--no-reserved",
                 "--trait", "ssd=true", "--trait", "rack=r1")
    assert result.exit_code == 0, result.output
    assert fake_api.sent("PUT", path)[0].body == {"reserved": False,
                                                  "traits": {"ssd": True, "rack": "r1"}}


def test_server_update_without_changes_is_a_usage_error(fake_api: FakeApi) -> None:
    result = sdc(fake_api, "server", "update", SERVER["uuid"])
    assert result.exit_code == 2
    assert fake_api.requests == []


def test_package_create_sends_only_given_fields(fake_api: FakeApi) -> None:
    fake_api.route("POST", "/ops/packages", (201, PACKAGE))
    result = sdc(fake_api, "package", "create", "small", "--memory", "1024", "--disk", "10240",
                 "--vcpus", "2")
    assert result.exit_code == 0, result.output
    assert fake_api.sent("POST", "/ops/packages")[0].body == {
        "name": "small", "memory": 1024, "disk": 10240, "vcpus": 2}


def test_config_lists_every_setting() -> None:
    result = CliRunner().invoke(main, ["config"], env={"SDC_API_WORKERS": "7"})
    assert result.exit_code == 0, result.output
    for name in ("SDC_DATA_DIR", "SDC_DATABASE_URL", "SDC_REDIS_URL", "SDC_API_BIND",
                 "SDC_OPERATOR_TOKEN", "SDC_WORKER_CONCURRENCY"):
        assert name in result.stdout
    assert "7" in result.stdout


def test_help_lists_the_lazy_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("up", "mockcloud", "agent", "vm", "headnode"):
        assert f"  {name} " in result.stdout


def test_a_command_loads_only_its_own_group() -> None:
    """`sdc vm ...` (and `sdc agent ...` on a compute node) start without the head node's
    database and SSH libraries."""
    code = ("import sys; from headnode.cli.main import main; "
            "main(['vm', '--help'], standalone_mode=False); "
            "print(sorted(m for m in ('sqlalchemy', 'paramiko', 'celery') if m in sys.modules))")
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert answer.stdout.strip().splitlines()[-1] == "[]", answer.stdout


def test_a_command_that_cannot_load_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LAZY_COMMANDS, "vm", ("headnode.cli.no_such_module", "vm"))
    result = CliRunner().invoke(main, ["vm", "list"])
    assert result.exit_code == 1
    assert "`sdc vm` is not available: cannot load headnode.cli.no_such_module.vm" in \
        result.output


def test_redact_url_hides_the_password() -> None:
    assert cli.redact_url("postgresql+psycopg://sdc:secret@db/sdc") == \
        "postgresql+psycopg://sdc:***@db/sdc"
    assert cli.redact_url("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"


def test_config_never_prints_secrets() -> None:
    result = CliRunner().invoke(main, ["--json", "config"], env={
        "SDC_OPERATOR_TOKEN": "s3cret", "SDC_DATABASE_URL": "postgresql://u:pw@db/sdc"})
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.stdout and ":pw@" not in result.stdout
    rows = {r["name"]: r for r in json.loads(result.stdout) if r["process"] == "headnode"}
    assert rows["SDC_OPERATOR_TOKEN"]["value"] == "(set)"
    assert rows["SDC_DATABASE_URL"]["value"] == "postgresql://u:***@db/sdc"
