"""``sdc server setup`` (--key against a real sshd and the real operator API), ``sdc server
upgrade-agent`` rolling and stopping at the first failure, ``rollback-agent`` and ``sdc job
get --watch`` (against a canned API: the jobs' steps are the workflow tests' business)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import select

from headnode.cli import server_setup
from headnode.cli.main import main
from headnode.nodesetup.bundle import stored_versions
from headnode.ssh.keys import head_key
from headnode.store.models import Job, Server
from tests.support.procs import ProcessGroup
from tests.support.sshd import Sshd, operator_key, start_sshd
from tests.support.wsgi import served
from tests.unit.headnode.api.conftest import make_server
from tests.unit.headnode.api.test_node_setup_api import wheel

from .conftest import FakeApi

TOKEN = "test-token"


def sdc(url: str, data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--api-url", url, "--token", TOKEN, *args],
                              env={"SDC_DATA_DIR": str(data_dir)})


@pytest.fixture
def api_url(app: Flask) -> Iterator[str]:
    with served(app) as url:
        yield url


def setup_args(node: Sshd, tmp_path: Path, *extra: str) -> list[str]:
    return ["server", "setup", "127.0.0.1", "--port", str(node.port), "--user", node.user,
            "--prefix", str(tmp_path / "node-root"), "--backend", "sim", *extra]


def test_key_lets_the_head_node_in_once_and_goes_through_no_api(
        procs: ProcessGroup, tmp_path: Path, api_url: str, ctx: Any) -> None:
    key_file = tmp_path / "operator_ed25519"
    node = start_sshd(procs, tmp_path / "nodes", "node1", [operator_key(key_file)])
    head = tmp_path / "head"
    args = setup_args(node, tmp_path, "--key", str(key_file), "--accept-new-host-key",
                      "--no-wait", "--json")
    first = sdc(api_url, head, *args)
    assert first.exit_code == 0, first.output
    assert "Traceback" not in first.output
    head_b64 = head_key(head).get_base64()
    # the node's sshd reads its own AuthorizedKeysFile (sshd -f): that file got the key
    assert node.authorized_keys.read_text().count(head_b64) == 1
    started = json.loads(first.stdout)
    with ctx.read() as session:
        (job,) = session.scalars(select(Job)).all()
    assert job.uuid == started["job_uuid"] and job.name == "server_setup"
    assert job.params["accept_new_host_key"] is True
    assert key_file.read_text().splitlines()[1] not in json.dumps(job.params)

    # again while that job is queued: the key is not added twice, the job is refused
    again = sdc(api_url, head, *args)
    assert again.exit_code == 1 and "NodeBusy" in again.output, again.output
    assert node.authorized_keys.read_text().count(head_b64) == 1


def test_a_key_the_node_refuses_starts_nothing(procs: ProcessGroup, tmp_path: Path,
                                               api_url: str, ctx: Any) -> None:
    key_file = tmp_path / "operator_ed25519"
    operator_key(key_file)
    node = start_sshd(procs, tmp_path / "nodes", "node1",
                      [operator_key(tmp_path / "someone_else", "other@test")])
    result = sdc(api_url, tmp_path / "head", *setup_args(
        node, tmp_path, "--key", str(key_file), "--accept-new-host-key"))
    assert result.exit_code == 1
    assert "refused the key" in result.output and "Traceback" not in result.output
    with ctx.read() as session:
        assert session.scalars(select(Job)).all() == []


def test_a_uuid_keeps_its_meaning(tmp_path: Path, api_url: str, ctx: Any) -> None:
    server = make_server(ctx, setup=False)
    result = sdc(api_url, tmp_path, "server", "setup", server.uuid)
    assert result.exit_code == 0, result.output
    with ctx.read() as session:
        stored = session.get(Server, server.uuid)
        assert stored is not None and stored.setup
    refused = sdc(api_url, tmp_path, "server", "setup", server.uuid, "--port", "2222")
    assert refused.exit_code == 2 and "only for a setup over SSH" in refused.output


# -- against a canned API ----------------------------------------------------------------------

SERVERS = [{"uuid": f"0000000{i}-0000-4000-8000-000000000000", "hostname": f"cn{i}",
            "setup": True, "ssh_host": "10.0.0.1"} for i in (1, 2, 3)]


def node_job(uuid: str, execution: str, failed_step: str | None = None) -> dict[str, Any]:
    step = {"name": "inspect", "attempt": 2, "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:00:01+00:00", "result": {"version": "2.0"},
            "error": None}
    row: dict[str, Any] = {"uuid": uuid, "name": "agent_upgrade", "execution": execution,
                           "phase": "chain", "chain": ["inspect", "activate"],
                           "onerror": ["restore"], "chain_results": [step],
                           "onerror_results": [], "error": None,
                           "started_at": "2026-01-01T00:00:00+00:00",
                           "finished_at": "2026-01-01T00:00:02+00:00"}
    if failed_step:
        row["error"] = {"step": failed_step, "code": "NoHeartbeat", "message": "silent"}
        row["onerror_results"] = [{**step, "name": "restore", "result": {"changed": True}}]
    return row


def test_upgrade_rolls_one_at_a_time_and_stops_at_the_first_failure(
        fake_api: FakeApi, tmp_path: Path) -> None:
    fake_api.route("GET", "/ops/servers", (200, SERVERS))
    outcomes = {"cn1": "succeeded", "cn2": "failed", "cn3": "succeeded"}
    for srv in SERVERS:
        job_uuid = f"job-{srv['hostname']}"
        fake_api.route("POST", f"/ops/servers/{srv['uuid']}/upgrade-agent",
                       (202, {"job_uuid": job_uuid}))
        execution = outcomes[srv["hostname"]]
        fake_api.route("GET", f"/ops/jobs/{job_uuid}", [
            (200, node_job(job_uuid, "running")),
            (200, node_job(job_uuid, execution,
                           "wait_version" if execution == "failed" else None))])
    result = sdc(fake_api.url, tmp_path, "server", "upgrade-agent", "--version", "2.0")
    assert result.exit_code == 1, result.output
    assert "sdc server rollback-agent 00000002-0000-4000-8000-000000000000" in result.output
    assert "stopped: 1 of 3 server(s) upgraded" in result.output
    as_json = sdc(fake_api.url, tmp_path, "--json", "server", "upgrade-agent", "--version",
                  "2.0")
    assert as_json.exit_code == 1
    assert [r["execution"] for r in json.loads(as_json.stdout)] == ["succeeded", "failed"]
    started = [r.path for r in fake_api.requests if r.method == "POST"]
    # each run started cn1 and cn2, never cn3
    assert started == [f"/ops/servers/{s['uuid']}/upgrade-agent" for s in SERVERS[:2]] * 2
    assert all(r.body == {"version": "2.0"} for r in fake_api.requests if r.method == "POST")


def test_parallel_starts_the_batch_before_following_it_and_waits_out_a_busy_head_node(
        fake_api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_setup, "BUSY_RETRY_SECONDS", 0.01)
    fake_api.route("GET", "/ops/servers", (200, SERVERS))
    busy = (409, {"code": "TooManyNodeJobs", "message": "2 node jobs run already"})
    for srv in SERVERS:
        job_uuid = f"job-{srv['hostname']}"
        accepted = (202, {"job_uuid": job_uuid})
        fake_api.route("POST", f"/ops/servers/{srv['uuid']}/upgrade-agent",
                       [busy, accepted] if srv["hostname"] == "cn3" else accepted)
        fake_api.route("GET", f"/ops/jobs/{job_uuid}", (200, node_job(job_uuid, "succeeded")))
    result = sdc(fake_api.url, tmp_path, "--json", "server", "upgrade-agent", "--version",
                 "2.0", "--parallel", "3")
    assert result.exit_code == 0, result.output
    assert [r["execution"] for r in json.loads(result.stdout)] == ["succeeded"] * 3
    calls = [(r.method, r.path) for r in fake_api.requests if r.path != "/ops/servers"]
    posts = [f"/ops/servers/{s['uuid']}/upgrade-agent" for s in SERVERS]
    # cn3 asked twice (busy, then accepted), and every start before the first follow
    assert calls[:4] == [("POST", posts[0]), ("POST", posts[1]), ("POST", posts[2]),
                         ("POST", posts[2])]
    assert {path for method, path in calls[4:]} == {f"/ops/jobs/job-cn{i}" for i in (1, 2, 3)}


def test_rollback_and_job_watch(fake_api: FakeApi, tmp_path: Path) -> None:
    uuid = SERVERS[0]["uuid"]
    fake_api.route("POST", f"/ops/servers/{uuid}/upgrade-agent", (202, {"job_uuid": "j1"}))
    fake_api.route("GET", "/ops/jobs/j1", [(200, node_job("j1", "running")),
                                           (200, node_job("j1", "succeeded"))])
    result = sdc(fake_api.url, tmp_path, "server", "rollback-agent", uuid)
    assert result.exit_code == 0, result.output
    assert fake_api.sent("POST", f"/ops/servers/{uuid}/upgrade-agent")[0].body == {
        "rollback": True}
    assert "ok chain/inspect" in result.output

    fake_api.route("GET", "/ops/jobs/j2", (200, node_job("j2", "failed", "activate")))
    watched = sdc(fake_api.url, tmp_path, "job", "get", "j2", "--watch")
    assert watched.exit_code == 1
    assert "NoHeartbeat: silent" in watched.output
    plain = sdc(fake_api.url, tmp_path, "job", "get", "j2")
    assert plain.exit_code == 0


def test_a_wheel_is_uploaded_then_a_refusal_stops_the_rollout(
        tmp_path: Path, api_url: str, ctx: Any) -> None:
    path = tmp_path / "sdc-3.1.0-py3-none-any.whl"
    path.write_bytes(wheel("3.1.0"))
    bare = make_server(ctx, hostname="cn-no-ssh")
    result = sdc(api_url, tmp_path, "server", "upgrade-agent", "--servers", bare.uuid,
                 "--wheel", str(path))
    assert result.exit_code == 1, result.output
    assert "NoSshAddress" in result.output and "Traceback" not in result.output
    assert "rollback-agent" not in result.output  # nothing was changed on it
    listed = sdc(api_url, tmp_path, "--json", "server", "get", bare.uuid)
    assert json.loads(listed.stdout)["agent_version"] is None
    with ctx.read() as session:
        assert session.scalars(select(Job)).all() == []
    assert stored_versions(ctx.settings) == ["3.1.0"]
