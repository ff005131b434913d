"""Machines through CloudAPI: create, list (filters, paging), get, actions, delete, audit."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import jobs
from tests.unit.headnode.cloudapi.conftest import World, finish

MACHINE_FIELDS = {"id", "name", "type", "brand", "state", "image", "ips", "primaryIp",
                  "memory", "disk", "metadata", "tags", "created", "updated", "package",
                  "compute_node", "networks", "firewall_enabled", "dns_names"}


def test_create_answers_201_with_the_machine(call: Any, sdc: Any, world: World,
                                             jobqueue: Any) -> None:
    answer = call(world.alice, "post", "/my/machines", json={
        "name": "web-1", "package": "small", "image": world.public_image_uuid,
        "tag.role": "web", "tag.tier": 2, "metadata.motd": "hi", "firewall_enabled": True,
        "affinity": ["instance!=db*"]})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert set(body) >= MACHINE_FIELDS
    assert answer.headers["Location"] == f"/my/machines/{body['id']}"
    assert (body["name"], body["type"], body["brand"]) == ("web-1", "smartmachine", "joyent")
    assert body["state"] == "provisioning"
    assert body["package"] == "small"
    assert (body["memory"], body["disk"]) == (1024, 10240)
    assert body["tags"] == {"role": "web", "tier": 2}
    # the account's key, as CloudAPI adds it: what the guest writes to authorized_keys
    assert body["metadata"] == {"motd": "hi",
                                "root_authorized_keys": f"{world.alice.signer.public_line}\n"}
    assert body["image"] == world.public_image_uuid
    # one NIC on the public network, by default
    assert body["networks"] == [world.public_network_uuid]
    assert body["primaryIp"] == body["ips"][0]
    assert len(jobqueue.enqueued) == 1
    # the job records who asked: the account and the key it signed with
    job = jobs.get_job(sdc, jobqueue.enqueued[0])
    assert job["machine_uuid"] == body["id"]


def test_create_by_image_name_and_on_a_private_network(call: Any, world: World) -> None:
    answer = call(world.alice, "post", "/my/machines", json={
        "package": "small", "image": "base-64", "networks": [world.alice.network_uuid]})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["networks"] == [world.alice.network_uuid]
    assert answer.get_json()["ips"][0].startswith("192.168.1.")


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"image": "base-64"}, "MissingParameter", "package"),
    ({"package": "small"}, "MissingParameter", "image"),
    ({"package": "small", "image": "base-64", "name": "bad name!"}, "InvalidArgument", "name"),
    ({"package": "nope", "image": "base-64"}, "InvalidArgument", "package"),
    ({"package": "small", "image": "no-such-image"}, "InvalidArgument", "image"),
    ({"package": "small", "image": "base-64", "color": "red"}, "InvalidArgument", "color"),
    ({"package": "small", "image": "base-64", "networks": "x"}, "InvalidArgument", "networks"),
    ({"package": "small", "image": "base-64", "firewall_enabled": "maybe"},
     "InvalidArgument", "firewall_enabled"),
    ({"package": "small", "image": "base-64", "tag.x": {"nested": 1}}, "InvalidArgument",
     "tags"),
    ({"package": "small", "image": "base-64", "metadata.a,b": "x"}, "InvalidArgument",
     "metadata"),
])
def test_create_bad_bodies_name_the_field(call: Any, world: World, jobqueue: Any,
                                          body: dict[str, Any], code: str,
                                          field: str) -> None:
    answer = call(world.alice, "post", "/my/machines", json=body)
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["code"] == code
    assert field in answer.get_json()["message"]
    assert call(world.alice, "get", "/my/machines").get_json() == []
    assert jobqueue.enqueued == []


def test_create_from_another_tenants_private_image_is_refused(call: Any,
                                                              world: World) -> None:
    for image in (world.bob.image_uuid, "bob-private"):
        answer = call(world.alice, "post", "/my/machines",
                      json={"package": "small", "image": image})
        assert answer.status_code == 409
        assert answer.get_json()["code"] == "InvalidArgument"
    own = call(world.alice, "post", "/my/machines",
               json={"package": "small", "image": "alice-private"})
    assert own.status_code == 201


def test_duplicate_name_is_refused(machine_of: Any, call: Any, world: World) -> None:
    machine_of(world.alice, "web")
    # (a body of its own: the very same signed request within a second is a replay)
    again = call(world.alice, "post", "/my/machines",
                 json={"name": "web", "package": "small", "image": "base-64",
                       "tag.try": 2})
    assert again.status_code == 409
    # another tenant may use the same name
    assert machine_of(world.bob, "web")["name"] == "web"


def test_list_filters_and_paging(machine_of: Any, call: Any, sdc: Any, world: World) -> None:
    a = machine_of(world.alice, "a", **{"tag.role": "db"})
    b = machine_of(world.alice, "b", **{"tag.role": "web", "tag.on": True})
    c = machine_of(world.alice, "c", **{"tag.role": "web"})
    machine_of(world.bob, "bobs")
    finish(sdc, c["id"], state="stopped")

    def ids(query: str) -> list[str]:
        answer = call(world.alice, "get", f"/my/machines{query}")
        assert answer.status_code == 200, answer.get_json()
        return [m["id"] for m in answer.get_json()]

    assert ids("") == [a["id"], b["id"], c["id"]]
    assert ids("?name=b") == [b["id"]]
    assert ids("?state=stopped") == [c["id"]]
    assert ids("?state=running") == [a["id"], b["id"]]
    assert ids("?tag.role=web") == [b["id"], c["id"]]
    assert ids("?tag.role=web&tag.on=true") == [b["id"]]
    assert ids("?package=small") == [a["id"], b["id"], c["id"]]
    assert ids("?package=nope") == []
    assert ids(f"?image={world.public_image_uuid}") == [a["id"], b["id"], c["id"]]
    assert ids("?limit=2") == [a["id"], b["id"]]
    assert ids("?limit=2&offset=2") == [c["id"]]
    paged = call(world.alice, "get", "/my/machines?limit=1")
    assert paged.headers["x-resource-count"] == "3"
    assert paged.headers["x-query-limit"] == "1"
    head = call(world.alice, "head", "/my/machines")
    assert head.status_code == 200
    assert head.headers["x-resource-count"] == "3"


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?offset=-1", "?state=bogus",
                                   "?limit=x"])
def test_list_bad_queries(call: Any, world: World, query: str) -> None:
    answer = call(world.alice, "get", f"/my/machines{query}")
    assert answer.status_code == 409
    assert answer.get_json()["code"] == "InvalidArgument"


def test_get_machine_and_unknown_ids(machine_of: Any, call: Any, world: World) -> None:
    made = machine_of(world.alice)
    answer = call(world.alice, "get", f"/my/machines/{made['id']}")
    assert answer.status_code == 200
    assert answer.get_json()["state"] == "running"
    assert answer.get_json()["id"] == made["id"]
    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        missing = call(world.alice, "get", f"/my/machines/{bad}")
        assert missing.status_code == 404
        assert missing.get_json()["code"] == "ResourceNotFound"


def test_actions_start_jobs_in_body_or_query(machine_of: Any, call: Any, sdc: Any,
                                             world: World, jobqueue: Any) -> None:
    made = machine_of(world.alice)
    path = f"/my/machines/{made['id']}"
    stop = call(world.alice, "post", path, json={"action": "stop"})
    assert stop.status_code == 202, stop.get_json()
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "stop"
    busy = call(world.alice, "post", path, json={"action": "start"})
    assert busy.status_code == 409
    assert busy.get_json()["code"] == "InvalidState"
    finish(sdc, made["id"], state="stopped")
    start = call(world.alice, "post", f"{path}?action=start")
    assert start.status_code == 202
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "start"
    finish(sdc, made["id"])
    assert call(world.alice, "post", path, json={"action": "reboot"}).status_code == 202
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "reboot"


@pytest.mark.parametrize(("body", "code", "field"), [
    ({}, "MissingParameter", "action"),
    ({"action": "explode"}, "InvalidArgument", "action"),
    ({"action": "resize"}, "MissingParameter", "package"),
    ({"action": "rename"}, "MissingParameter", "name"),
    ({"action": "rename", "name": "no spaces"}, "InvalidArgument", "name"),
    ({"action": "resize", "package": "nope"}, "InvalidArgument", "package"),
])
def test_bad_actions_name_the_field(machine_of: Any, call: Any, world: World,
                                    jobqueue: Any, body: dict[str, Any], code: str,
                                    field: str) -> None:
    made = machine_of(world.alice)
    before = len(jobqueue.enqueued)
    answer = call(world.alice, "post", f"/my/machines/{made['id']}", json=body)
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["code"] == code
    assert field in answer.get_json()["message"]
    assert len(jobqueue.enqueued) == before


def test_resize_and_rename(machine_of: Any, call: Any, sdc: Any, world: World,
                           jobqueue: Any) -> None:
    from tests.unit.headnode.api.conftest import make_package

    make_package(sdc, name="medium", memory=2048, disk=20480)
    made = machine_of(world.alice)
    path = f"/my/machines/{made['id']}"
    assert call(world.alice, "post", path,
                json={"action": "resize", "package": "medium"}).status_code == 202
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "resize"
    finish(sdc, made["id"])
    assert call(world.alice, "post", path,
                json={"action": "rename", "name": "renamed"}).status_code == 202
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "rename"
    assert call(world.alice, "get", path).get_json()["name"] == "renamed"


def test_delete_then_get_is_410_gone(machine_of: Any, call: Any, sdc: Any,
                                     world: World) -> None:
    made = machine_of(world.alice)
    path = f"/my/machines/{made['id']}"
    assert call(world.alice, "delete", path).status_code == 204
    finish(sdc, made["id"], state="destroyed")
    gone = call(world.alice, "get", path)
    assert gone.status_code == 410
    assert gone.get_json()["state"] == "deleted"
    assert call(world.alice, "get", "/my/machines").get_json() == []
    assert [m["id"] for m in call(world.alice, "get", "/my/machines?state=deleted")
            .get_json()] == [made["id"]]
    # bob learns nothing of it
    assert call(world.bob, "get", f"/bob/machines/{made['id']}").status_code == 404


def test_audit_lists_finished_jobs_newest_first_with_the_caller(
        machine_of: Any, call: Any, sdc: Any, world: World) -> None:
    made = machine_of(world.alice)
    path = f"/my/machines/{made['id']}"
    call(world.operator, "post", f"/alice/machines/{made['id']}", json={"action": "stop"})
    finish(sdc, made["id"], state="stopped")
    audit = call(world.alice, "get", f"{path}/audit")
    assert audit.status_code == 200
    entries = audit.get_json()
    assert [e["action"] for e in entries] == ["stop", "provision"]
    assert all(e["success"] == "yes" and e["time"].endswith("Z") for e in entries)
    stop, provision = entries
    assert provision["caller"]["type"] == "signature"
    assert provision["caller"]["keyId"] == f"/alice/keys/{world.alice.signer.fingerprint}"
    assert provision["caller"]["account"] == "alice"
    # the operator acted as alice, with the operator's own key
    assert stop["caller"]["operator"] == "admin"
    assert stop["caller"]["account"] == "alice"
    assert stop["caller"]["keyId"] == f"/admin/keys/{world.operator.signer.fingerprint}"


def test_create_is_throttled_while_the_worker_is_behind(call: Any, sdc: Any, world: World,
                                                        jobqueue: Any) -> None:
    jobqueue.waiting = sdc.settings.provision_backlog_limit + 5
    answer = call(world.alice, "post", "/my/machines",
                  json={"name": "later", "package": "small", "image": "base-64"})
    assert answer.status_code == 429, answer.get_json()
    assert answer.get_json()["code"] == "RequestThrottled"
    assert answer.headers["Retry-After"] == "1"
    assert jobqueue.enqueued == []
    assert call(world.alice, "get", "/my/machines").get_json() == []
