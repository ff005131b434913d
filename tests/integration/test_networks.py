"""Networks and keys through real processes: `sdc network`/`sdc key` against the API, a
provision on two networks gets one address on each, and the addresses come back when the
machine is destroyed or its provision fails."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from headnode.cli.client import ApiError
from schemas.agent import agent_queue, agent_task
from tests.integration.conftest import sdc
from tests.unit.headnode.auth.conftest import private_key, public_line


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    seed = cloud.seed()
    for args in (["front", "--subnet", "10.88.0.0/24", "--gateway", "10.88.0.1",
                  "--range", "10.88.0.10-10.88.0.250", "--resolver", "10.88.0.2"],
                 ["back", "--subnet", "10.77.0.0/24", "--range", "10.77.0.5-10.77.0.6",
                  "--owner", "alice", "--vlan", "77", "--nic-tag", "external"]):
        result = sdc(cloud, "network", "create", *args)
        assert result.returncode == 0, result.stderr
    return seed


def in_use(cloud: Any, network: str) -> list[str]:
    return [ip["ip"] for ip in cloud.api.get(f"/ops/networks/{network}/ips")
            if not ip.get("reserved")]


def test_network_commands(cloud: Any, seeded: dict[str, Any]) -> None:
    table = sdc(cloud, "network", "list")
    assert table.returncode == 0 and "front" in table.stdout
    listed = json.loads(sdc(cloud, "--json", "network", "list").stdout)
    assert {(n["name"], n["subnet"], n["public"]) for n in listed} == {
        ("front", "10.88.0.0/24", True), ("back", "10.77.0.0/24", False)}
    got = sdc(cloud, "--json", "network", "get", "back")
    assert got.returncode == 0 and '"vlan_id": 77' in got.stdout and '"public": false' in got.stdout
    bad = sdc(cloud, "network", "create", "x", "--subnet", "10.88.0.0/25")  # overlaps front
    assert bad.returncode == 1 and "subnet" in bad.stderr and "overlaps" in bad.stderr
    bad_range = sdc(cloud, "network", "create", "y", "--subnet", "10.66.0.0/24",
                    "--range", "10.66.0.1")
    assert bad_range.returncode == 2 and "--range" in bad_range.stderr
    assert {n["name"] for n in cloud.api.get("/ops/networks")} == {"front", "back"}


def test_default_network_command(cloud: Any, seeded: dict[str, Any]) -> None:
    def default(*args: str) -> str:
        result = sdc(cloud, "--json", "network", "default", "alice", *args)
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["name"])

    assert default() == "front"  # the first public network
    assert default("back") == "back" and default() == "back"
    refused = sdc(cloud, "network", "default", "alice", "nope")
    assert refused.returncode == 1 and "default_network" in refused.stderr
    assert default("--reset") == "front" and default() == "front"


def test_key_commands(cloud: Any, seeded: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(public_line(private_key("ed25519"), "alice@laptop") + "\n")
    added = sdc(cloud, "--json", "key", "add", "alice", str(path), "--name", "laptop")
    assert added.returncode == 0, added.stderr
    fingerprint = cloud.api.get("/ops/accounts/alice/keys")[0]["fingerprint"]
    table = sdc(cloud, "key", "list", "alice")
    assert table.returncode == 0 and "laptop" in table.stdout
    listed = sdc(cloud, "--json", "key", "list", "alice")
    assert [(k["name"], k["fingerprint"]) for k in json.loads(listed.stdout)] == [
        ("laptop", fingerprint)]
    again = sdc(cloud, "key", "add", "alice", str(path))
    assert again.returncode == 1 and "already" in again.stderr
    junk = tmp_path / "junk.pub"
    junk.write_text("ssh-rsa not-a-key\n")
    refused = sdc(cloud, "key", "add", "alice", str(junk))
    assert refused.returncode == 1 and "key" in refused.stderr
    assert len(cloud.api.get("/ops/accounts/alice/keys")) == 1


def test_two_networks_then_destroy_returns_the_addresses(cloud: Any,
                                                         seeded: dict[str, Any]) -> None:
    body = {"owner": "alice", "package": "small", "image": "base-64", "alias": "two-nics",
            "networks": ["back", "front"]}
    machine = cloud.api.post("/ops/machines", body)
    assert machine["ips"] == ["10.77.0.5", "10.88.0.10"]
    assert machine["primary_ip"] == "10.77.0.5"
    job = cloud.wait_job(machine["job_uuid"])
    assert job["execution"] == "succeeded", job
    running = cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert running["state"] == "running" and running["ips"] == machine["ips"]
    assert in_use(cloud, "back") == ["10.77.0.5"] and in_use(cloud, "front") == ["10.88.0.10"]

    # the default network is the first public one
    other = cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                             "image": "base-64", "alias": "default-nic"})
    assert other["ips"] == ["10.88.0.11"]
    assert cloud.wait_job(other["job_uuid"])["execution"] == "succeeded"

    deleted = cloud.api.delete(f"/ops/machines/{machine['uuid']}")
    job = cloud.wait_job(deleted["job_uuid"])
    assert job["execution"] == "succeeded", job
    assert "release_holdings" in [r["name"] for r in job["chain_results"]]
    assert in_use(cloud, "back") == [] and in_use(cloud, "front") == ["10.88.0.11"]
    # the freed lowest address is handed out again
    third = cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                             "image": "base-64", "networks": ["front"]})
    assert third["ips"] == ["10.88.0.10"]
    assert cloud.wait_job(third["job_uuid"])["execution"] == "succeeded"
    for m in (other, third):
        cloud.wait_job(cloud.api.delete(f"/ops/machines/{m['uuid']}")["job_uuid"])
    assert in_use(cloud, "front") == []


def test_a_full_network_refuses_and_writes_nothing(cloud: Any, seeded: dict[str, Any]) -> None:
    held = [cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                             "image": "base-64", "networks": ["back"]})
            for _ in range(2)]
    machines_before = len(cloud.api.get("/ops/machines"))
    with pytest.raises(ApiError) as err:
        cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                         "image": "base-64", "networks": ["back"]})
    assert (err.value.status, err.value.code) == (409, "SubnetFull")
    assert len(cloud.api.get("/ops/machines")) == machines_before
    for m in held:
        cloud.wait_job(m["job_uuid"])
        cloud.wait_job(cloud.api.delete(f"/ops/machines/{m['uuid']}")["job_uuid"])
    assert in_use(cloud, "back") == []


def test_a_failed_provision_returns_its_addresses(cloud: Any, seeded: dict[str, Any]) -> None:
    target = cloud.agents["agent0"]
    client = Celery(broker=cloud.env["SDC_REDIS_URL"], backend=cloud.env["SDC_REDIS_URL"])
    client.send_task(agent_task("sim_faults"),
                     args=[target, {"fail": {"machine_create": "no room at the inn"}}, None],
                     queue=agent_queue(target)).get(timeout=30)
    try:
        machine = cloud.api.post("/ops/machines", {
            "owner": "alice", "package": "small", "image": "base-64", "server_uuid": target,
            "networks": ["front", "back"]})
        assert machine["ips"] == ["10.88.0.10", "10.77.0.5"]
        job = cloud.wait_job(machine["job_uuid"])
    finally:
        client.send_task(agent_task("sim_faults"), args=[target, {"fail": {}}, None],
                         queue=agent_queue(target)).get(timeout=30)
    assert job["execution"] == "failed"
    assert "release_nics" in [r["name"] for r in job["onerror_results"]]
    failed = cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert failed["state"] == "failed" and failed["ips"] == []
    assert in_use(cloud, "front") == [] and in_use(cloud, "back") == []


def test_concurrent_provisions_through_the_api_get_distinct_addresses(
        cloud: Any, seeded: dict[str, Any]) -> None:
    body = {"owner": "alice", "package": "small", "image": "base-64", "networks": ["front"]}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        made = list(pool.map(lambda _: cloud.api.post("/ops/machines", body), range(12)))
    ips = [m["ips"][0] for m in made]
    assert len(set(ips)) == 12
    # together they took the bottom of the range, lowest first
    assert sorted(ips, key=ipaddress.IPv4Address) == [f"10.88.0.{n}" for n in range(10, 22)]
    assert sorted(in_use(cloud, "front"), key=ipaddress.IPv4Address) == \
        sorted(ips, key=ipaddress.IPv4Address)
    for m in made:
        cloud.wait_job(m["job_uuid"])
    deletes = [cloud.api.delete(f"/ops/machines/{m['uuid']}") for m in made]
    for d in deletes:
        assert cloud.wait_job(d["job_uuid"])["execution"] == "succeeded"
    assert in_use(cloud, "front") == []
