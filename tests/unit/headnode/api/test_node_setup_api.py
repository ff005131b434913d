"""POST /ops/servers/setup, POST /ops/servers/<uuid>/upgrade-agent and /ops/agent-bundles on
the real PostgreSQL: a job is started with the node's address and no secret; bad input is a
4xx naming the field and starts nothing; an unknown version, server or a forgotten one is
refused."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from sqlalchemy import select

from headnode.services import revocation
from headnode.store.models import Job
from tests.unit.headnode.api.conftest import count, make_server

NODE = {"host": "10.0.0.7", "port": 2222, "user": "root", "prefix": "/srv/node1",
        "backend": "sim"}


def wheel(version: str, name: str = "sdc", extra: str = "") -> bytes:
    """A wheel as pip builds one, as far as the head node reads it (its dist-info)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"sdc-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{extra}")
        zf.writestr(f"sdc-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
    return out.getvalue()


def put_wheel(api: Any, filename: str, data: bytes) -> Any:
    return api("put", f"/ops/agent-bundles/{filename}", data=data,
               headers={"Content-Type": "application/octet-stream"})


def jobs(sdc: Any) -> list[Job]:
    with sdc.read() as session:
        return list(session.scalars(select(Job)))


def test_a_setup_starts_a_job_with_the_nodes_address_and_no_secret(
        api: Any, sdc: Any, jobqueue: Any, settings: Any) -> None:
    answer = api("post", "/ops/servers/setup", json={**NODE, "accept_new_host_key": True})
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    (job,) = jobs(sdc)
    assert body["job_uuid"] == job.uuid and jobqueue.enqueued == [job.uuid]
    assert job.name == "server_setup" and job.server_uuid is None
    assert {k: job.params[k] for k in NODE} == NODE
    assert job.params["accept_new_host_key"] is True and job.params["version"] is None
    assert job.params["chain"][0] == "prepare_bundle"
    assert job.params["chain"][-1] == "mark_setup" and job.params["onerror"] == ["restore"]
    text = json.dumps(job.params)
    for secret in (settings.redis_url, settings.resolved_message_key().decode()):
        assert secret not in text


@pytest.mark.parametrize(("body", "field"), [
    ({"port": 22}, "host"),
    ({"host": "-oProxyCommand=sh"}, "host"),
    ({"host": "10.0.0.7", "port": 0}, "port"),
    ({"host": "10.0.0.7", "port": "22"}, "port"),
    ({"host": "10.0.0.7", "user": "root;reboot"}, "user"),
    ({"host": "10.0.0.7", "backend": "windows"}, "backend"),
    ({"host": "10.0.0.7", "prefix": "relative/dir"}, "prefix"),
    ({"host": "10.0.0.7", "prefix": "/srv/../etc"}, "prefix"),
    ({"host": "10.0.0.7", "prefix": "/srv/a b"}, "prefix"),
    ({"host": "10.0.0.7", "pool": "tank; rm -rf /"}, "pool"),
    ({"host": "10.0.0.7", "nic_tags": "admin,ext ernal"}, "nic_tags"),
    ({"host": "10.0.0.7", "nic_tags": "admin:eth0:x"}, "nic_tags"),
    ({"host": "10.0.0.7", "hostname": "a b"}, "hostname"),
    ({"host": "10.0.0.7", "accept_new_host_key": "yes"}, "accept_new_host_key"),
    ({"host": "10.0.0.7", "version": "latest; reboot"}, "version"),
    ({"host": "10.0.0.7", "key": "-----BEGIN OPENSSH PRIVATE KEY-----"}, "key"),
])
def test_a_bad_setup_request_is_named_and_starts_nothing(
        api: Any, sdc: Any, jobqueue: Any, body: dict[str, Any], field: str) -> None:
    answer = api("post", "/ops/servers/setup", json=body)
    assert answer.status_code == 422, answer.get_json()
    assert set(answer.get_json()["errors"]) == {field}
    assert jobs(sdc) == [] and jobqueue.enqueued == []


def test_a_setup_of_an_unknown_version_is_not_found(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/servers/setup", json={**NODE, "version": "9.9.9"})
    assert answer.status_code == 404
    assert "9.9.9" in answer.get_json()["message"]
    assert jobs(sdc) == []


def test_one_node_job_at_a_time_per_node(api: Any, sdc: Any) -> None:
    first = api("post", "/ops/servers/setup", json=NODE).get_json()
    again = api("post", "/ops/servers/setup", json={**NODE, "host": "10.0.0.7"})
    assert again.status_code == 409 and again.get_json()["code"] == "NodeBusy"
    assert first["job_uuid"] in again.get_json()["message"]
    # another prefix on the same host is another node
    other = api("post", "/ops/servers/setup", json={**NODE, "prefix": "/srv/node2"})
    assert other.status_code == 202
    assert len(jobs(sdc)) == 2


def test_an_upgrade_starts_a_job_on_the_servers_address(api: Any, sdc: Any) -> None:
    server = make_server(sdc, ssh_host="10.0.0.8", ssh_port=2200, ssh_user="ops",
                         agent_prefix="/srv/n8", backend="linux")
    assert put_wheel(api, "sdc-2.0.0-py3-none-any.whl", wheel("2.0.0")).status_code == 201
    answer = api("post", f"/ops/servers/{server.uuid}/upgrade-agent",
                 json={"version": "2.0.0"})
    assert answer.status_code == 202, answer.get_json()
    (job,) = jobs(sdc)
    assert (job.name, job.server_uuid) == ("agent_upgrade", server.uuid)
    wanted = {"host": "10.0.0.8", "port": 2200, "user": "ops", "prefix": "/srv/n8",
              "backend": "linux", "version": "2.0.0", "server_uuid": server.uuid,
              "rollback": False}
    assert {k: job.params[k] for k in wanted} == wanted
    assert job.params["chain"][-1] == "wait_version"

    rollback = api("post", f"/ops/servers/{server.uuid}/upgrade-agent",
                   json={"rollback": True})
    assert rollback.status_code == 409 and rollback.get_json()["code"] == "NodeBusy"


def test_upgrade_refusals_name_what_is_wrong(api: Any, sdc: Any) -> None:
    bare = make_server(sdc, hostname="bare")
    known = make_server(sdc, hostname="cn2", ssh_host="10.0.0.9")
    cases = [
        (f"/ops/servers/{known.uuid}/upgrade-agent", {"version": "7.7.7"}, 404, None),
        ("/ops/servers/00000000-0000-4000-8000-000000000000/upgrade-agent", {}, 404, None),
        (f"/ops/servers/{bare.uuid}/upgrade-agent", {}, 409, "NoSshAddress"),
        (f"/ops/servers/{known.uuid}/upgrade-agent", {"version": "1.0", "rollback": True},
         422, None),
        (f"/ops/servers/{known.uuid}/upgrade-agent", {"versio": "1.0"}, 422, None),
    ]
    for path, body, status, code in cases:
        answer = api("post", path, json=body)
        assert answer.status_code == status, (path, body, answer.get_json())
        if code:
            assert answer.get_json()["code"] == code
    assert api("post", f"/ops/servers/{known.uuid}/upgrade-agent",
               json={"version": "1.0", "rollback": True}).get_json()["errors"] == {
        "version": ["a rollback goes back to the node's previous release: give no version"]}
    assert jobs(sdc) == []


def test_a_forgotten_server_is_refused(api: Any, sdc: Any) -> None:
    gone = "11111111-2222-4333-8444-555555555555"
    with sdc.transaction() as session:
        revocation.revoke(session, gone, "old")
    answer = api("post", f"/ops/servers/{gone}/upgrade-agent", json={"rollback": True})
    assert answer.status_code == 409 and answer.get_json()["code"] == "ServerRevoked"
    assert jobs(sdc) == []


def test_agent_wheels_are_stored_and_listed(api: Any, sdc: Any) -> None:
    assert api("get", "/ops/agent-bundles").get_json() == []
    stored = put_wheel(api, "sdc-1.2.0-py3-none-any.whl", wheel("1.2.0"))
    assert stored.status_code == 201 and stored.get_json()["version"] == "1.2.0"
    # the same wheel again is harmless; another one of that version is refused
    assert put_wheel(api, "sdc-1.2.0-py3-none-any.whl", wheel("1.2.0")).status_code == 201
    other = put_wheel(api, "sdc-1.2.0-py3-none-any.whl", wheel("1.2.0", extra="Summary: x\n"))
    assert other.status_code == 409
    assert [b["version"] for b in api("get", "/ops/agent-bundles").get_json()] == ["1.2.0"]


@pytest.mark.parametrize(("filename", "data", "field"), [
    ("evil.whl", wheel("1.0"), "filename"),
    ("sdc-1.0-py3-none-any.tar.gz", wheel("1.0"), "filename"),
    ("sdc-1.0-py3-none-any.whl", b"not a zip", "body"),
    ("sdc-1.0-py3-none-any.whl", wheel("1.0", name="other"), "body"),
    ("sdc-1.0-py3-none-any.whl", wheel("1.1"), "body"),
])
def test_a_bad_wheel_is_named_and_nothing_is_stored(api: Any, filename: str, data: bytes,
                                                    field: str) -> None:
    answer = put_wheel(api, filename, data)
    assert answer.status_code == 422, answer.get_json()
    assert set(answer.get_json()["errors"]) == {field}
    assert api("get", "/ops/agent-bundles").get_json() == []


def test_the_api_needs_the_operator_token(client: Any, sdc: Any) -> None:
    refused = client.put("/ops/agent-bundles/sdc-1.0-py3-none-any.whl", data=wheel("1.0"))
    assert refused.status_code == 401
    assert client.post("/ops/servers/setup", json=NODE).status_code == 401
    assert count(sdc, Job) == 0


def test_a_server_shows_its_agent_version_and_prefix(api: Any, sdc: Any) -> None:
    server = make_server(sdc, sysinfo={"SDC Version": "1.2.0", "UUID": "x"},
                         agent_prefix="/srv/n1")
    bare = make_server(sdc, hostname="cn2")
    shown = {s["uuid"]: s for s in api("get", "/ops/servers").get_json()}
    assert (shown[server.uuid]["agent_version"], shown[server.uuid]["agent_prefix"]) == (
        "1.2.0", "/srv/n1")
    assert (shown[bare.uuid]["agent_version"], shown[bare.uuid]["agent_prefix"]) == (None, None)
    assert "sysinfo" not in shown[server.uuid]


def test_a_wheel_larger_than_the_bound_is_refused_unread(api: Any) -> None:
    answer = put_wheel(api, "sdc-1.0-py3-none-any.whl", b"\0" * (64 * 1024 * 1024 + 1))
    assert answer.status_code == 413, answer.get_json()
    assert api("get", "/ops/agent-bundles").get_json() == []


def test_node_jobs_leave_a_worker_thread_free(api: Any, sdc: Any) -> None:
    limit = sdc.settings.worker_concurrency - 1
    for i in range(limit):
        assert api("post", "/ops/servers/setup",
                   json={**NODE, "host": f"10.0.1.{i}"}).status_code == 202
    refused = api("post", "/ops/servers/setup", json={**NODE, "host": "10.0.2.1"})
    assert refused.status_code == 409 and refused.get_json()["code"] == "TooManyNodeJobs"
    assert len(jobs(sdc)) == limit
