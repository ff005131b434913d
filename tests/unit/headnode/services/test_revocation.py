"""A forgotten node's credentials are revoked: the head node's check (sdccommon.signing with
the database-backed predicate the workflow worker installs) refuses every message and
heartbeat its key signs, while other nodes are heard as before."""

from __future__ import annotations

import copy
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest
from celery.app.task import Context as Request

from headnode.services import revocation, servers
from headnode.services.revocation import RevokedNodes
from sdccommon import signing
from sdccommon.signing import HEADNODE, Refused
from tests.support.credentials import TEST_MESSAGE_KEY
from tests.unit.headnode.services.conftest import make_server

KEY = TEST_MESSAGE_KEY.encode()


@pytest.fixture(autouse=True)
def headnode_config() -> Iterator[None]:
    """This process checks as the head node does; the session's config is put back after."""
    saved = copy.copy(signing._config)
    signing.serve_headnode(lambda: KEY)
    yield
    signing._config.revoked = saved.revoked
    signing._config.keyring, signing._config.headnode = saved.keyring, saved.headnode


def signed_status(node: str) -> tuple[Request, list[Any]]:
    """A node's status report as the worker receives it, signed with the node's own key."""
    args = [{"server_uuid": node, "machines": []}]
    task_id = str(uuidlib.uuid4())
    digest = signing.digest(signing.derive(KEY, node), "events.server_status", task_id,
                            node, HEADNODE, args, {})
    return Request({"id": task_id, signing.SENDER: node, signing.AUDIENCE: HEADNODE,
                    signing.SIGNATURE: digest}), args


def heard(node: str) -> bool:
    request, args = signed_status(node)
    try:
        return signing.check("events.server_status", request, args, {}) == node
    except Refused as exc:
        assert "revoked" in str(exc)
        return False


def test_a_forgotten_nodes_messages_and_heartbeats_are_refused(ctx: Any) -> None:
    forgotten, kept = make_server(ctx, hostname="old"), make_server(ctx, hostname="cn2")
    signing.refuse_revoked(RevokedNodes(ctx.settings.resolved_database_url, ttl=0))
    assert heard(forgotten.uuid) and heard(kept.uuid)

    servers.forget_server(ctx, forgotten.uuid)

    assert not heard(forgotten.uuid)
    assert heard(kept.uuid)
    beat = signing.beat(signing.derive(KEY, forgotten.uuid), forgotten.uuid, 1234.5)
    assert signing.beat_time(forgotten.uuid, beat) is None
    other = signing.beat(signing.derive(KEY, kept.uuid), kept.uuid, 1234.5)
    assert signing.beat_time(kept.uuid, other) == 1234.5


def test_the_list_is_read_again_after_its_ttl_only(ctx: Any) -> None:
    node = make_server(ctx, hostname="old").uuid
    now = [100.0]
    revoked = RevokedNodes(ctx.settings.resolved_database_url, ttl=2.0, clock=lambda: now[0])
    assert not revoked(node)
    with ctx.transaction() as session:
        revocation.revoke(session, node, "old")
    now[0] += 1.9
    assert not revoked(node)  # the copy read at 100 s still holds
    now[0] += 0.1
    assert revoked(node)


def test_a_list_that_cannot_be_read_refuses_node_messages(ctx: Any) -> None:
    node = make_server(ctx).uuid

    def unreadable(_node: str) -> bool:
        raise OSError("database down")

    signing.refuse_revoked(unreadable)
    assert not heard(node)
    beat = signing.beat(signing.derive(KEY, node), node, 1.0)
    assert signing.beat_time(node, beat) is None


def test_revoking_twice_is_harmless(ctx: Any) -> None:
    with ctx.transaction() as session:
        revocation.revoke(session, "n1", "a")
    with ctx.transaction() as session:
        revocation.revoke(session, "n1", "a")
    with ctx.read() as session:
        assert revocation.revoked_among(session, ["n1", "n2"]) == {"n1"}
        assert revocation.is_revoked(session, "n1")
        assert not revocation.is_revoked(session, "n2")
