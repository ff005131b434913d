"""HTTP Signature authentication against real keys in PostgreSQL and the replay cache in Redis."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import pytest
import redis

from headnode.auth import httpsig
from headnode.auth.httpsig import (
    AuthError,
    NotAuthorized,
    RedisReplayCache,
    ReplayCacheUnavailable,
    authenticate,
)
from headnode.services import keys
from headnode.services.errors import NotFound
from tests.support.net import free_port
from tests.unit.headnode.api.conftest import make_account
from tests.unit.headnode.auth.conftest import KEY_KINDS, private_key, public_line, signed_headers


class Tenant:
    def __init__(self, ctx: Any, login: str, kind: str = "rsa", operator: bool = False):
        self.account = make_account(ctx, login=login, operator=operator)
        self.kind = kind
        self.key = private_key(kind)
        self.row = keys.create_key(ctx, self.account.uuid, "main", public_line(self.key))
        self.login = login

    def key_id(self, sha256: bool = False) -> str:
        fingerprint = self.row.fingerprint_sha256 if sha256 else self.row.fingerprint_md5
        return f"/{self.login}/keys/{fingerprint}"

    def headers(self, method: str, target: str, **kwargs: Any) -> dict[str, str]:
        key_id = kwargs.pop("key_id", None) or self.key_id()
        return signed_headers(self.key, self.kind, key_id, method, target, **kwargs)


@pytest.fixture
def alice(ctx: Any) -> Tenant:
    return Tenant(ctx, "alice")


def refused(ctx: Any, method: str, target: str, headers: dict[str, str], **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as err:
        authenticate(ctx, method, target, headers, **kw)
    assert err.value.status == 401
    return err.value


# -- what passes ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_each_key_type_signs_requests(ctx: Any, kind: str) -> None:
    tenant = Tenant(ctx, "alice", kind)
    target = "/alice/machines?limit=5&state=running"
    caller = authenticate(ctx, "GET", target, tenant.headers("GET", target))
    assert caller.login == "alice" and caller.account_uuid == tenant.account.uuid
    assert caller.key_fingerprint == tenant.row.fingerprint_md5
    assert caller.operator is False and caller.acting_as is None
    assert caller.target_uuid == tenant.account.uuid and caller.target_login == "alice"


def test_date_alone_and_the_default_headers(ctx: Any, alice: Tenant) -> None:
    only_date = alice.headers("GET", "/my/keys", signed=("date",))
    assert authenticate(ctx, "GET", "/my/keys", only_date).login == "alice"
    implicit = alice.headers("POST", "/my/keys", signed=("date",))
    implicit["Authorization"] = implicit["Authorization"].replace(',headers="date"', "")
    assert authenticate(ctx, "POST", "/my/keys", implicit, body=b"{}").login == "alice"


def test_the_key_is_found_by_its_sha256_fingerprint_too(ctx: Any, alice: Tenant) -> None:
    headers = alice.headers("GET", "/alice", key_id=alice.key_id(sha256=True))
    assert authenticate(ctx, "GET", "/alice", headers).login == "alice"


def test_header_names_are_case_insensitive(ctx: Any, alice: Tenant) -> None:
    headers = {k.upper(): v for k, v in alice.headers("GET", "/alice").items()}
    assert authenticate(ctx, "GET", "/alice", headers).login == "alice"


# -- what fails -----------------------------------------------------------------------------


def test_unknown_key_and_unknown_account(ctx: Any, alice: Tenant) -> None:
    other = private_key("rsa")
    forged = signed_headers(other, "rsa", "/alice/keys/" + ":".join(["ab"] * 16), "GET",
                            "/alice")
    assert refused(ctx, "GET", "/alice", forged).code == "InvalidCredentials"
    nobody = alice.headers("GET", "/nobody", key_id=f"/nobody/keys/{alice.row.fingerprint_md5}")
    assert refused(ctx, "GET", "/nobody", nobody).code == "InvalidCredentials"


def test_a_deleted_key_no_longer_signs(ctx: Any, alice: Tenant) -> None:
    keys.delete_key(ctx, alice.account.uuid, "main")
    assert refused(ctx, "GET", "/alice", alice.headers("GET", "/alice")).code == \
        "InvalidCredentials"


def test_tampered_signature_or_request(ctx: Any, alice: Tenant) -> None:
    headers = alice.headers("GET", "/alice/machines")
    auth = headers["Authorization"]
    sig = auth.split('signature="')[1].rstrip('"')
    flipped = ("B" if sig[10] == "A" else "A").join([sig[:10], sig[11:]])
    tampered = {**headers, "Authorization": auth.replace(sig, flipped)}
    assert refused(ctx, "GET", "/alice/machines", tampered).code == "InvalidSignature"
    # the same signature on another path, method or date
    assert refused(ctx, "GET", "/alice/keys", headers).code == "InvalidSignature"
    assert refused(ctx, "DELETE", "/alice/machines", headers).code == "InvalidSignature"
    later = {**headers, "Date": formatdate(time.time() + 5, usegmt=True)}
    assert refused(ctx, "GET", "/alice/machines", later).code == "InvalidSignature"


def test_another_accounts_key_cannot_sign_for_alice(ctx: Any, alice: Tenant) -> None:
    bob = Tenant(ctx, "bob")
    # bob signs, but names his key as alice's
    headers = bob.headers("GET", "/alice", key_id=f"/alice/keys/{bob.row.fingerprint_md5}")
    assert refused(ctx, "GET", "/alice", headers).code == "InvalidCredentials"


@pytest.mark.parametrize("offset", [-360, 360])
def test_a_date_six_minutes_off_is_refused(ctx: Any, alice: Tenant, offset: int) -> None:
    date = formatdate(time.time() + offset, usegmt=True)
    err = refused(ctx, "GET", "/alice", alice.headers("GET", "/alice", date=date))
    assert err.code == "InvalidHeader" and "clock" in err.message


def test_a_date_within_the_window_passes(ctx: Any, alice: Tenant) -> None:
    date = formatdate(time.time() - 240, usegmt=True)
    assert authenticate(ctx, "GET", "/alice", alice.headers("GET", "/alice", date=date))


def test_a_replayed_change_is_refused(ctx: Any, alice: Tenant) -> None:
    headers = alice.headers("POST", "/alice/machines/x?action=stop")
    authenticate(ctx, "POST", "/alice/machines/x?action=stop", headers, body=b'{"a":1}')
    err = refused(ctx, "POST", "/alice/machines/x?action=stop", headers, body=b'{"a":1}')
    assert err.code == "InvalidCredentials" and "replay" in err.message


def test_a_replayed_read_is_refused_once_it_is_not_a_fast_poll(ctx: Any, alice: Tenant) -> None:
    now = time.time()
    headers = alice.headers("GET", "/alice/machines", date=formatdate(now, usegmt=True))
    authenticate(ctx, "GET", "/alice/machines", headers, now=now)
    # within the Date header's resolution a client may legitimately send it again
    authenticate(ctx, "GET", "/alice/machines", headers, now=now + 1)
    err = refused(ctx, "GET", "/alice/machines", headers, now=now + 30)
    assert "replay" in err.message


def test_one_signature_on_two_different_requests_is_not_a_replay(ctx: Any,
                                                                 alice: Tenant) -> None:
    # signing only the date makes the same signature for every request in that second
    headers = alice.headers("POST", "/alice/keys", signed=("date",))
    authenticate(ctx, "POST", "/alice/keys", headers, body=b'{"name": "a"}')
    authenticate(ctx, "POST", "/alice/keys", headers, body=b'{"name": "b"}')
    authenticate(ctx, "DELETE", "/alice/keys/a", headers)


def test_missing_headers(ctx: Any, alice: Tenant) -> None:
    assert refused(ctx, "GET", "/alice", {}).code == "InvalidCredentials"
    no_date = alice.headers("GET", "/alice")
    del no_date["Date"]
    assert refused(ctx, "GET", "/alice", no_date).code == "InvalidHeader"
    extra = alice.headers("GET", "/alice", signed=("(request-target)", "date", "x-thing"))
    assert "x-thing" in refused(ctx, "GET", "/alice", extra).message
    undated = alice.headers("GET", "/alice", signed=("(request-target)",))
    assert refused(ctx, "GET", "/alice", undated).code == "InvalidHeader"


@pytest.mark.parametrize("value", [
    "Basic YWxpY2U6c2VjcmV0",
    "Signature",
    "Signature garbage",
    'Signature keyId="/alice/keys/x",algorithm="rsa-sha256"',
    'Signature keyId="/alice/keys/x",algorithm="rsa-sha256",signature="***"',
    'Signature keyId="/alice/keys/x",keyId="/bob/keys/x",algorithm="rsa-sha256",signature="AA=="',
])
def test_malformed_authorization_headers(ctx: Any, value: str) -> None:
    headers = {"Date": formatdate(usegmt=True), "Authorization": value}
    assert refused(ctx, "GET", "/alice", headers).code == "InvalidHeader"


@pytest.mark.parametrize("key_id", ["alice/keys/x", "/alice/x/y", "/alice/users/bob/keys/x",
                                    "/alice/keys/not-a-fingerprint", "/alice/keys/"])
def test_malformed_key_ids(ctx: Any, alice: Tenant, key_id: str) -> None:
    headers = alice.headers("GET", "/alice", key_id=key_id)
    assert refused(ctx, "GET", "/alice", headers).code == "InvalidCredentials"


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "rsa-md5", "ecdsa-sha256", "ed25519"])
def test_algorithms_the_key_cannot_make(ctx: Any, alice: Tenant, algorithm: str) -> None:
    headers = alice.headers("GET", "/alice", algorithm=algorithm)
    assert refused(ctx, "GET", "/alice", headers).code == "InvalidCredentials"


# -- whose path -----------------------------------------------------------------------------


def test_an_operator_may_act_as_another_account(ctx: Any, alice: Tenant) -> None:
    admin = Tenant(ctx, "admin", operator=True)
    caller = authenticate(ctx, "GET", "/alice/machines", admin.headers("GET", "/alice/machines"))
    assert (caller.login, caller.operator, caller.acting_as) == ("admin", True, "alice")
    assert caller.target_uuid == alice.account.uuid and caller.target_login == "alice"
    recorded = caller.as_job_caller()
    assert recorded["login"] == "admin" and recorded["acting_as"] == "alice"
    assert recorded["key_fingerprint"] == admin.row.fingerprint_md5
    with pytest.raises(NotFound):
        authenticate(ctx, "GET", "/nobody/machines", admin.headers("GET", "/nobody/machines"))


def test_a_tenant_may_not_use_another_logins_path(ctx: Any, alice: Tenant) -> None:
    Tenant(ctx, "bob")
    with pytest.raises(NotAuthorized) as err:
        authenticate(ctx, "GET", "/bob/machines", alice.headers("GET", "/bob/machines"))
    assert err.value.status == 403 and err.value.code == "NotAuthorized"
    with pytest.raises(NotAuthorized):  # a login that does not exist answers the same
        authenticate(ctx, "GET", "/carol", alice.headers("GET", "/carol"))


def test_my_is_the_signer(ctx: Any, alice: Tenant) -> None:
    caller = authenticate(ctx, "GET", "/my/machines", alice.headers("GET", "/my/machines"))
    assert caller.acting_as is None and caller.target_login == "alice"


def test_request_target_keeps_the_bytes_the_client_signed() -> None:
    assert httpsig.request_target({"RAW_URI": "/my/machines?tag.role=db%20x"}) == \
        "/my/machines?tag.role=db%20x"
    assert httpsig.request_target({"PATH_INFO": "/my/keys/a b", "QUERY_STRING": "x=1"}) == \
        "/my/keys/a%20b?x=1"


def test_an_ecdsa_key_signing_with_its_curves_hash_under_a_sha256_name(ctx: Any) -> None:
    tenant = Tenant(ctx, "alice", "ecdsa-p384")
    # signed with SHA-384 (the curve's hash) but announced as ecdsa-sha256
    headers = tenant.headers("GET", "/alice", algorithm="ecdsa-sha256")
    assert authenticate(ctx, "GET", "/alice", headers).login == "alice"


def test_an_unreachable_replay_cache_refuses_with_503(ctx: Any, alice: Tenant) -> None:
    dead = RedisReplayCache(redis.Redis(port=free_port(), socket_connect_timeout=1))
    with pytest.raises(ReplayCacheUnavailable) as err:
        authenticate(ctx, "GET", "/alice", alice.headers("GET", "/alice"), replay=dead)
    assert err.value.status == 503


# -- replays the date window and the cache must stop (issue 14, 1 and 2) -------------------


def test_an_old_signed_x_date_with_a_fresh_unsigned_date_is_refused(ctx: Any,
                                                                    alice: Tenant) -> None:
    old = formatdate(time.time() - 30 * 86400, usegmt=True)
    signed = alice.headers("DELETE", "/alice/machines/x/tags/a",
                           signed=("(request-target)", "x-date"), date=old)
    headers = {"Authorization": signed["Authorization"], "X-Date": old,
               "Date": formatdate(time.time(), usegmt=True)}  # the replayer's, unsigned
    err = refused(ctx, "DELETE", "/alice/machines/x/tags/a", headers)
    assert err.code == "InvalidHeader" and "X-Date" in err.message


def test_a_fresh_signed_x_date_passes_and_a_signed_header_must_be_there(
        ctx: Any, alice: Tenant) -> None:
    now = formatdate(time.time(), usegmt=True)
    signed = alice.headers("GET", "/alice", signed=("(request-target)", "x-date"), date=now)
    assert authenticate(ctx, "GET", "/alice", {"Authorization": signed["Authorization"],
                                               "X-Date": now})
    err = refused(ctx, "GET", "/alice", {"Authorization": signed["Authorization"],
                                         "Date": now})
    assert err.code == "InvalidHeader" and "absent" in err.message


def test_one_request_under_other_spellings_of_its_key_id_is_a_replay(
        ctx: Any, alice: Tenant) -> None:
    md5 = alice.row.fingerprint_md5
    spellings = [f"/alice/keys/MD5:{md5}", f"/alice/keys/{md5.upper()}",
                 f"/alice/keys/{md5.replace(':', '')}", alice.key_id(sha256=True),
                 f"/%61lice/keys/{md5}"]
    date = formatdate(time.time(), usegmt=True)
    target = "/alice/machines/x/tags"
    first = alice.headers("POST", target, date=date)
    authenticate(ctx, "POST", target, first, body=b'{"a":"b"}')
    signature = first["Authorization"].rsplit("signature=", 1)[1]
    for key_id in spellings:
        again = {"Date": date, "Authorization": (
            f'Signature keyId="{key_id}",algorithm="rsa-sha256",'
            f'headers="(request-target) date",signature={signature}')}
        # refused: as a replay, or for a key id this server does not read; never accepted
        assert refused(ctx, "POST", target, again, body=b'{"a":"b"}').code == \
            "InvalidCredentials", key_id
