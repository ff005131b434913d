"""Tags, metadata and snapshots of a machine through CloudAPI."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import jobs
from tests.unit.headnode.cloudapi.conftest import World, finish


@pytest.fixture
def web(machine_of: Any, world: World) -> str:
    return str(machine_of(world.alice, "web", **{"tag.role": "web"})["id"])


def test_tags_crud(call: Any, world: World, web: str) -> None:
    base = f"/my/machines/{web}/tags"
    assert call(world.alice, "get", base).get_json() == {"role": "web"}
    added = call(world.alice, "post", base, json={"env": "prod", "n": 3, "on": True})
    assert added.status_code == 200
    assert added.get_json() == {"role": "web", "env": "prod", "n": 3, "on": True}
    one = call(world.alice, "get", f"{base}/env")
    assert (one.status_code, one.get_json()) == (200, "prod")
    text = call(world.alice, "get", f"{base}/env", headers={"Accept": "text/plain"})
    assert text.get_data(as_text=True) == "prod"
    assert call(world.alice, "delete", f"{base}/env").status_code == 204
    assert call(world.alice, "get", f"{base}/env").status_code == 404
    assert call(world.alice, "delete", f"{base}/nope").status_code == 404
    replaced = call(world.alice, "put", base, json={"only": "this"})
    assert replaced.get_json() == {"only": "this"}
    assert call(world.alice, "get", f"/my/machines/{web}").get_json()["tags"] == \
        {"only": "this"}
    assert call(world.alice, "delete", base).status_code == 204
    assert call(world.alice, "get", base).get_json() == {}


def test_metadata_crud(call: Any, world: World, web: str) -> None:
    base = f"/my/machines/{web}/metadata"
    assert call(world.alice, "get", base).get_json() == {}
    added = call(world.alice, "post", base, json={"motd": "hello", "user-script": "#!/bin/sh"})
    assert added.get_json() == {"motd": "hello", "user-script": "#!/bin/sh"}
    assert call(world.alice, "get", f"{base}/motd").get_json() == "hello"
    assert call(world.alice, "delete", f"{base}/motd").status_code == 204
    assert call(world.alice, "put", base, json={"a": "b"}).get_json() == {"a": "b"}
    assert call(world.alice, "get", f"/my/machines/{web}").get_json()["metadata"] == \
        {"a": "b"}
    assert call(world.alice, "delete", base).status_code == 204
    assert call(world.alice, "get", base).get_json() == {}
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert [e["action"] for e in audit][:4] == ["replace_metadata", "replace_metadata",
                                                "remove_metadata", "set_metadata"]
    assert audit[0]["caller"]["keyId"] == f"/alice/keys/{world.alice.signer.fingerprint}"
    assert audit[3]["parameters"] == {"metadata": ["motd", "user-script"]}


@pytest.mark.parametrize(("kind", "body", "field"), [
    ("tags", {"x": {"nested": True}}, "x"),
    ("tags", {"": "empty"}, "key"),
    ("metadata", {"n": 3}, "n"),
    ("metadata", {"credentials": "mine"}, "credentials"),
    ("tags", ["not", "an", "object"], "body"),
])
def test_bad_tag_and_metadata_bodies(call: Any, world: World, web: str, kind: str,
                                     body: Any, field: str) -> None:
    base = f"/my/machines/{web}/{kind}"
    before = call(world.alice, "get", base).get_json()
    answer = call(world.alice, "post", base, json=body)
    assert answer.status_code in (400, 409), answer.get_json()
    assert answer.get_json()["code"] in ("InvalidArgument", "BadRequest")
    assert field in answer.get_json()["message"]
    assert call(world.alice, "get", base).get_json() == before


def test_tags_wait_for_a_busy_machine(call: Any, sdc: Any, world: World, web: str) -> None:
    assert call(world.alice, "post", f"/my/machines/{web}", json={"action": "stop"}) \
        .status_code == 202
    busy = call(world.alice, "post", f"/my/machines/{web}/tags", json={"a": "b"})
    assert busy.status_code == 409
    assert busy.get_json()["code"] == "InvalidState"
    finish(sdc, web, state="stopped")
    assert call(world.alice, "get", f"/my/machines/{web}/tags").get_json() == {"role": "web"}


def test_snapshots_create_list_get_start_delete(call: Any, sdc: Any, world: World, web: str,
                                                jobqueue: Any) -> None:
    base = f"/my/machines/{web}/snapshots"
    created = call(world.alice, "post", base, json={"name": "before-upgrade"})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["name"] == "before-upgrade"
    assert created.get_json()["state"] == "queued"
    assert created.headers["Location"].endswith("/snapshots/before-upgrade")
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "snapshot_create"
    finish(sdc, web)
    listed = call(world.alice, "get", base).get_json()
    assert [s["name"] for s in listed] == ["before-upgrade"]
    got = call(world.alice, "get", f"{base}/before-upgrade")
    assert got.status_code == 200
    assert call(world.alice, "get", f"{base}/nope").status_code == 404

    unnamed = call(world.alice, "post", base)
    assert unnamed.status_code == 201
    assert unnamed.get_json()["name"]
    finish(sdc, web)
    bad = call(world.alice, "post", base, json={"name": "no spaces"})
    assert bad.status_code == 409
    assert "name" in bad.get_json()["message"]


def test_start_from_snapshot_and_delete_start_jobs(call: Any, sdc: Any, world: World,
                                                   web: str, jobqueue: Any) -> None:
    from headnode.store.models import MachineSnapshot

    base = f"/my/machines/{web}/snapshots"
    call(world.alice, "post", base, json={"name": "s1"})
    finish(sdc, web)
    with sdc.transaction() as session:  # the node made it (the worker's part)
        session.get(MachineSnapshot, (web, "s1")).state = "created"
    assert call(world.alice, "post", f"{base}/s1").status_code == 202
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "snapshot_rollback"
    finish(sdc, web)
    assert call(world.alice, "delete", f"{base}/s1").status_code == 204
    assert jobs.get_job(sdc, jobqueue.enqueued[-1])["name"] == "snapshot_delete"
    finish(sdc, web)
    audit = call(world.alice, "get", f"/my/machines/{web}/audit").get_json()
    assert [e["action"] for e in audit][:3] == ["delete_snapshot", "rollback_snapshot",
                                                "create_snapshot"]
