"""Ping, versions and headers, authentication failures, the path's login, account, keys,
datacenters and services."""

from __future__ import annotations

import time
from typing import Any

from tests.support.httpsig_client import Signer, http_date
from tests.unit.headnode.cloudapi.conftest import World


def test_ping_needs_no_signature_and_names_versions(client: Any) -> None:
    answer = client.get("/--ping")
    assert answer.status_code == 200
    assert answer.get_json()["ping"] == "pong"
    assert "9.0.0" in answer.get_json()["cloudapi"]["versions"]
    assert answer.headers["Api-Version"] == "9.0.0"
    assert answer.headers["Server"].startswith("sdc-cloudapi/")
    assert answer.headers["x-request-id"]


def test_accept_version_picks_a_version_or_refuses(client: Any) -> None:
    assert client.get("/--ping", headers={"Accept-Version": "~8"}).headers["Api-Version"] \
        == "8.0.0"
    assert client.get("/--ping", headers={"Accept-Version": "~9||~8"}) \
        .headers["Api-Version"] == "9.0.0"
    refused = client.get("/--ping", headers={"Accept-Version": "~6"})
    assert refused.status_code == 400
    assert refused.get_json()["code"] == "InvalidVersion"


def test_get_account_by_login_and_my(call: Any, world: World) -> None:
    for path in ("/alice", "/my"):
        answer = call(world.alice, "get", path)
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert body["id"] == world.alice.uuid
        assert body["login"] == "alice"
        assert body["email"] == "alice@example.com"
        assert body["created"].endswith("Z")
        assert answer.headers["Api-Version"]
        assert answer.headers["x-request-id"]


def test_update_account_email_and_bad_email(call: Any, world: World) -> None:
    answer = call(world.alice, "post", "/my", json={"email": "new@example.com"})
    assert answer.status_code == 200
    assert answer.get_json()["email"] == "new@example.com"
    bad = call(world.alice, "post", "/my", json={"email": "not-an-email"})
    assert bad.status_code == 409
    assert bad.get_json()["code"] == "InvalidArgument"
    assert "email" in bad.get_json()["message"]
    assert call(world.alice, "get", "/my").get_json()["email"] == "new@example.com"


def test_unsigned_request_is_401(client: Any, world: World) -> None:
    answer = client.get("/my")
    assert answer.status_code == 401
    assert answer.get_json()["code"] in ("InvalidCredentials", "InvalidHeader")
    assert answer.headers["Api-Version"]


def test_unknown_key_is_401(client: Any, world: World) -> None:
    stranger = Signer("alice")  # a key alice never added
    answer = client.get("/my", headers=stranger.headers("get", "/my"))
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "InvalidCredentials"


def test_tampered_signature_is_401(client: Any, world: World) -> None:
    headers = world.alice.signer.headers("get", "/my")
    # signed for another path: the signature no longer matches this request
    headers["Authorization"] = world.alice.signer.headers(
        "get", "/my/keys", date=headers["Date"])["Authorization"]
    answer = client.get("/my", headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "InvalidSignature"


def test_date_six_minutes_off_is_401(client: Any, world: World) -> None:
    for offset in (-360, 360):
        headers = world.alice.signer.headers("get", "/my", date=http_date(time.time() + offset))
        answer = client.get("/my", headers=headers)
        assert answer.status_code == 401
        assert answer.get_json()["code"] == "InvalidHeader"


def test_missing_date_header_is_401(client: Any, world: World) -> None:
    headers = world.alice.signer.headers("get", "/my")
    del headers["Date"]
    answer = client.get("/my", headers=headers)
    assert answer.status_code == 401


def test_replayed_change_is_401_and_changes_nothing(call: Any, client: Any,
                                                   world: World) -> None:
    headers = world.alice.signer.headers("post", "/my")
    first = client.post("/my", headers=headers, json={"email": "one@example.com"})
    assert first.status_code == 200
    call(world.alice, "post", "/my", json={"email": "two@example.com"})
    replay = client.post("/my", headers=headers, json={"email": "one@example.com"})
    assert replay.status_code == 401
    assert call(world.alice, "get", "/my").get_json()["email"] == "two@example.com"


def test_other_login_in_path_is_403_for_a_tenant(call: Any, world: World) -> None:
    answer = call(world.bob, "get", "/alice")
    assert answer.status_code == 403
    assert answer.get_json()["code"] == "NotAuthorized"
    assert call(world.bob, "get", "/alice/machines").status_code == 403


def test_operator_may_act_as_an_account(call: Any, world: World) -> None:
    answer = call(world.operator, "get", "/alice")
    assert answer.status_code == 200
    assert answer.get_json()["login"] == "alice"


def test_keys_list_get_create_delete(call: Any, world: World) -> None:
    listed = call(world.alice, "get", "/my/keys")
    assert listed.status_code == 200
    assert [k["name"] for k in listed.get_json()] == ["main"]
    assert listed.get_json()[0]["fingerprint"] == world.alice.signer.fingerprint

    second = Signer("alice", kind="ed25519")
    created = call(world.alice, "post", "/my/keys",
                   json={"name": "laptop", "key": second.public_line})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["fingerprint"] == second.fingerprint
    assert created.headers["Location"].endswith("/keys/laptop")

    by_name = call(world.alice, "get", "/my/keys/laptop")
    by_fp = call(world.alice, "get", f"/my/keys/{second.fingerprint}")
    assert by_name.get_json() == by_fp.get_json()
    # the new key signs requests too
    world.alice.signer, first = second, world.alice.signer
    assert call(world.alice, "get", "/my").status_code == 200
    world.alice.signer = first

    assert call(world.alice, "delete", "/my/keys/laptop").status_code == 204
    assert call(world.alice, "get", "/my/keys/laptop").status_code == 404


def test_create_key_bad_bodies(call: Any, world: World) -> None:
    missing = call(world.alice, "post", "/my/keys", json={"name": "x"})
    assert missing.status_code == 409
    assert missing.get_json()["code"] == "MissingParameter"
    assert "key" in missing.get_json()["message"]
    bad = call(world.alice, "post", "/my/keys", json={"name": "x", "key": "ssh-rsa nonsense"})
    assert bad.status_code == 409
    assert bad.get_json()["code"] == "InvalidArgument"
    assert "key" in bad.get_json()["message"]
    assert len(call(world.alice, "get", "/my/keys").get_json()) == 1


def test_datacenters_and_services(call: Any, world: World) -> None:
    dcs = call(world.alice, "get", "/my/datacenters")
    assert dcs.status_code == 200
    assert list(dcs.get_json().values()) == ["http://localhost"]
    services = call(world.alice, "get", "/my/services")
    assert services.get_json() == {"cloudapi": "http://localhost"}
