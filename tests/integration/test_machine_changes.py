"""Resize, rename, snapshots and images made from machines, on the whole cloud as real
processes with sim agents (tests/integration/conftest.py), through the API and the CLI."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from headnode.cli.client import ApiError
from tests.integration.conftest import SIM_RAM_MB, Cloud, sdc


@pytest.fixture(scope="module")
def seeded(cloud: Cloud) -> dict[str, Any]:
    seeded = cloud.seed()
    seeded["xl"] = cloud.api.post("/ops/packages", {"name": "xl", "memory": SIM_RAM_MB,
                                                    "disk": 10240})
    return seeded


def provision(cloud: Cloud, alias: str) -> dict[str, Any]:
    machine = cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                               "image": "base-64", "alias": alias})
    assert cloud.wait_job(machine["job_uuid"])["execution"] == "succeeded"
    return dict(cloud.api.get(f"/ops/machines/{machine['uuid']}"))


def succeed(cloud: Cloud, answer: dict[str, Any]) -> dict[str, Any]:
    job = cloud.wait_job(answer["job_uuid"])
    assert job["execution"] == "succeeded", (job["error"], job["chain_results"])
    return job



def test_resize_up_and_down_moves_the_servers_usage(cloud: Cloud,
                                                    seeded: dict[str, Any]) -> None:
    machine = provision(cloud, "grow")
    server_uuid = machine["server_uuid"]
    before = cloud.server(server_uuid)
    job = succeed(cloud, cloud.api.post(f"/ops/machines/{machine['uuid']}",
                                        params={"action": "resize", "package": "large"}))
    assert job["name"] == "resize" and job["chain"] == ["update_machine"]
    assert job["chain_results"][0]["result"]["usage"] == "committed"
    after = cloud.server(server_uuid)
    assert after["ram_committed_mb"] - before["ram_committed_mb"] == 4096 - 1024
    assert after["disk_committed_mb"] - before["disk_committed_mb"] == 40960 - 10240
    assert after["ram_inflight_mb"] == before["ram_inflight_mb"]
    row = cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert (row["ram_mb"], row["package_uuid"]) == (4096, seeded["large"]["uuid"])

    # shrinking through the CLI, waiting for the job
    done = sdc(cloud, "vm", "resize", machine["uuid"], "small", "--wait")
    assert done.returncode == 0, done.stderr
    assert cloud.server(server_uuid)["ram_committed_mb"] == before["ram_committed_mb"]
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["ram_mb"] == 1024


def capacity_of(cloud: Cloud, server_uuid: str) -> dict[str, int]:
    server = cloud.server(server_uuid)
    return {k: v for k, v in server.items() if k.endswith(("_mb", "_count"))
            and k != "pool_used_mb"}


def test_resize_that_does_not_fit_its_server_is_refused(cloud: Cloud,
                                                        seeded: dict[str, Any]) -> None:
    machine = provision(cloud, "too-big")
    before = capacity_of(cloud, machine["server_uuid"])
    with pytest.raises(ApiError) as err:
        cloud.api.post(f"/ops/machines/{machine['uuid']}",
                       params={"action": "resize", "package": "xl"})
    assert err.value.status == 409 and err.value.code == "InsufficientCapacity"
    assert capacity_of(cloud, machine["server_uuid"]) == before
    jobs = cloud.api.get("/ops/jobs", {"machine_uuid": machine["uuid"]})
    assert [j["name"] for j in jobs] == ["provision"]


def test_rename_and_its_uniqueness(cloud: Cloud, seeded: dict[str, Any]) -> None:
    first = provision(cloud, "alpha")
    provision(cloud, "beta")
    succeed(cloud, cloud.api.post(f"/ops/machines/{first['uuid']}",
                                  params={"action": "rename", "alias": "gamma"}))
    assert cloud.api.get(f"/ops/machines/{first['uuid']}")["alias"] == "gamma"
    taken = sdc(cloud, "vm", "rename", first["uuid"], "beta")
    assert taken.returncode == 1 and "DuplicateName" in taken.stderr
    provision(cloud, "alpha")  # the old name is free again


def test_snapshots_through_the_api_and_cli(cloud: Cloud, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, "snappy")
    base = f"/ops/machines/{machine['uuid']}/snapshots"
    made = cloud.api.post(base, {"name": "s1"})
    assert made["snapshot"]["state"] == "queued"
    job = succeed(cloud, made)
    assert job["name"] == "snapshot_create"
    assert cloud.api.get(f"{base}/s1")["state"] == "created"

    created = sdc(cloud, "vm", "snapshot", "create", machine["uuid"], "s2", "--wait")
    assert created.returncode == 0, created.stderr
    listed = sdc(cloud, "--json", "vm", "snapshot", "list", machine["uuid"])
    assert [(s["name"], s["state"]) for s in json.loads(listed.stdout)] == [
        ("s1", "created"), ("s2", "created")]

    rolled = sdc(cloud, "vm", "snapshot", "rollback", machine["uuid"], "s1", "--wait")
    assert rolled.returncode == 0, rolled.stderr
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "running"

    succeed(cloud, cloud.api.delete(f"{base}/s1"))
    with pytest.raises(ApiError) as err:
        cloud.api.get(f"{base}/s1")
    assert err.value.status == 404
    names = [s["name"] for s in cloud.api.get(base)]
    assert "s1" not in names
    with pytest.raises(ApiError) as bad:
        cloud.api.post(base, {"name": "no spaces"})
    assert bad.value.status == 422 and "name" in bad.value.errors


def test_image_from_a_machine_is_uploaded_and_usable(cloud: Cloud,
                                                     seeded: dict[str, Any]) -> None:
    machine = provision(cloud, "golden-src")
    made = sdc(cloud, "--json", "image", "create-from", machine["uuid"], "golden", "1.0",
               "--wait")
    assert made.returncode == 0, made.stderr
    job = json.loads(made.stdout)["job"]
    assert job["name"] == "create_image" and job["execution"] == "succeeded"
    images = [i for i in cloud.api.get("/ops/images") if i["name"] == "golden"]
    assert len(images) == 1
    image = images[0]
    assert image["state"] == "active" and image["owner_uuid"] == machine["owner_uuid"]
    # the file the node uploaded is in the store and is what the manifest says
    data = cloud.api.session.get(cloud.api.url(f"/ops/images/{image['uuid']}/file"),
                                 timeout=30).content
    assert image["files"][0] == {"sha256": hashlib.sha256(data).hexdigest(),
                                 "size": len(data), "compression": "gzip", "format": "tar"}
    clone = cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                             "image": image["uuid"], "alias": "clone"})
    assert cloud.wait_job(clone["job_uuid"])["execution"] == "succeeded"
