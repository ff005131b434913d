"""Signed messages (sdccommon/signing.py): what a receiver accepts, and what it refuses."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.app.task import Context

from sdccommon import signing
from sdccommon.signing import HEADNODE, Refused

MESSAGE_KEY = b"unit-message-key"
# fixed: parallel test workers must collect the same test ids (these appear in them)
NODE_A, NODE_B = "c4e7661a-a0df-49ca-ab4d-785cf4d50e49", "5d0f1d4e-8a51-4a0e-9f3b-2f1f0b8d7c11"


@pytest.fixture(autouse=True)
def fresh_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures the process's roles itself; the session's are put back after."""
    saved = copy.copy(signing._config)
    signing._config.keyring, signing._config.headnode = None, False
    signing._config.hosted = lambda: ()
    signing._config.revoked = lambda _node: False
    monkeypatch.delenv(signing.UNSIGNED_ENV, raising=False)
    yield
    signing._config.keyring, signing._config.headnode = saved.keyring, saved.headnode
    signing._config.hosted = saved.hosted
    signing._config.revoked = saved.revoked


def node_key(node: str) -> bytes:
    return signing.derive(MESSAGE_KEY, node)


def request(key: bytes | None, task: str, sender: str, audience: str, args: list[Any],
            **headers: Any) -> Context:
    """The request of a message as a worker sees it, signed with ``key`` (None: unsigned)."""
    task_id = str(uuid.uuid4())
    fields: dict[str, Any] = {"id": task_id}
    if key is not None:
        fields.update({signing.SENDER: sender, signing.AUDIENCE: audience,
                       signing.SIGNATURE: signing.digest(key, task, task_id, sender, audience,
                                                         args, {})})
    fields.update(headers)
    return Context(fields)


def as_headnode() -> None:
    signing.serve_headnode(lambda: MESSAGE_KEY)


def as_agent_of(node: str) -> None:
    signing.serve_nodes({node: node_key(node)}, hosted=lambda: {node})


def status(server: str) -> list[Any]:
    return [{"server_uuid": server, "machines": []}]


def test_the_digest_ignores_dict_order_and_covers_every_part() -> None:
    key = node_key(NODE_A)
    base = ("events.x", "id-1", NODE_A, HEADNODE, [{"a": 1, "b": 2}], {})
    same = signing.digest(key, "events.x", "id-1", NODE_A, HEADNODE, [{"b": 2, "a": 1}], {})
    assert signing.digest(key, *base) == same
    changed = [
        ("events.y", "id-1", NODE_A, HEADNODE, [{"a": 1, "b": 2}], {}),
        ("events.x", "id-2", NODE_A, HEADNODE, [{"a": 1, "b": 2}], {}),
        ("events.x", "id-1", NODE_B, HEADNODE, [{"a": 1, "b": 2}], {}),
        ("events.x", "id-1", NODE_A, NODE_A, [{"a": 1, "b": 2}], {}),
        ("events.x", "id-1", NODE_A, HEADNODE, [{"a": 1, "b": 3}], {}),
        ("events.x", "id-1", NODE_A, HEADNODE, [{"a": 1, "b": 2}], {"k": 0}),
    ]
    assert all(signing.digest(key, *c) != same for c in changed)
    assert signing.digest(node_key(NODE_B), *base) != same


def test_the_head_node_and_a_node_share_its_key_and_nodes_share_none() -> None:
    head = signing.Keyring(message_key_loader=lambda: MESSAGE_KEY)
    node = signing.Keyring(node_keys={NODE_A: node_key(NODE_A)})
    assert head.shared(HEADNODE, NODE_A) == node.shared(NODE_A, HEADNODE) == node_key(NODE_A)
    assert head.shared(NODE_A, NODE_B) is None and node.shared(NODE_A, NODE_A) is None
    assert node.shared(HEADNODE, NODE_B) is None  # another node's key is not here
    assert head.shared(HEADNODE, HEADNODE) != node_key(NODE_A)


def test_the_head_node_takes_a_nodes_event_about_itself() -> None:
    as_headnode()
    args = status(NODE_A)
    req = request(node_key(NODE_A), "events.server_status", NODE_A, HEADNODE, args)
    assert signing.check("events.server_status", req, args, {}) == NODE_A


@pytest.mark.parametrize(("case", "key", "task", "sender", "args", "reason"), [
    ("unsigned", None, "events.server_status", NODE_A, status(NODE_A), "not signed"),
    ("another node's key", node_key(NODE_B), "events.server_status", NODE_A, status(NODE_A),
     "does not hold"),
    ("about another node", node_key(NODE_B), "events.server_status", NODE_B, status(NODE_A),
     f"speak only for itself, not for {NODE_A}"),
    ("about no node", node_key(NODE_A), "events.server_status", NODE_A, [{"machines": []}],
     "not for no server"),
    ("about itself and another", node_key(NODE_A), "events.task_reply", NODE_A,
     [{"server_uuid": NODE_B}, {"server_uuid": NODE_A}], "speak only for itself"),
    ("a workflow step", node_key(NODE_A), "workflows.run_step", NODE_A, ["job", 1],
     "only events"),
    ("as the head node with a node's key", node_key(NODE_A), "workflows.run_step", HEADNODE,
     ["job", 1], "does not hold"),
])
def test_the_head_node_refuses(case: str, key: bytes | None, task: str, sender: str,
                               args: list[Any], reason: str) -> None:
    as_headnode()
    req = request(key, task, sender, HEADNODE, args)
    with pytest.raises(Refused, match=reason):
        signing.check(task, req, args, {})


def test_one_header_without_the_others_is_unsigned() -> None:
    as_headnode()
    args = status(NODE_A)
    full = request(node_key(NODE_A), "events.server_status", NODE_A, HEADNODE, args)
    for missing in (signing.SENDER, signing.AUDIENCE, signing.SIGNATURE):
        fields = {k: v for k, v in vars(full).items() if k != missing}
        with pytest.raises(Refused, match="not signed"):
            signing.check("events.server_status", Context(fields), args, {})


def test_an_agent_runs_the_head_nodes_tasks_for_its_own_node_only() -> None:
    as_agent_of(NODE_A)
    task, args = "agent.machine_load", [NODE_A, {"uuid": "x"}, None]
    good = request(node_key(NODE_A), task, HEADNODE, NODE_A, args)
    assert signing.check(task, good, args, {}) == HEADNODE
    # the head node's task for A, naming B first (B's queue is elsewhere)
    other = [NODE_B, {"uuid": "x"}, None]
    with pytest.raises(Refused, match="names another node"):
        signing.check(task, request(node_key(NODE_A), task, HEADNODE, NODE_A, other), other, {})
    with pytest.raises(Refused, match=f"for {NODE_B}, not served here"):
        signing.check(task, request(node_key(NODE_B), task, HEADNODE, NODE_B, other), other, {})
    with pytest.raises(Refused, match="for headnode, not served here"):
        signing.check(task, request(node_key(NODE_A), task, NODE_A, HEADNODE, args), args, {})


def test_a_process_with_no_keys_refuses_everything() -> None:
    signing._config.headnode = True
    args = status(NODE_A)
    req = request(node_key(NODE_A), "events.server_status", NODE_A, HEADNODE, args)
    with pytest.raises(Refused, match="no key shared"):
        signing.check("events.server_status", req, args, {})


def test_a_heartbeat_counts_only_with_its_nodes_mac() -> None:
    as_headnode()
    value = signing.beat(node_key(NODE_A), NODE_A, 1234.5)
    assert signing.beat_time(NODE_A, value) == 1234.5
    mac = value.partition(" ")[2]
    assert signing.beat_time(NODE_B, value) is None  # A's beat written for B
    assert signing.beat_time(NODE_A, signing.beat(node_key(NODE_B), NODE_A, 1234.5)) is None
    assert signing.beat_time(NODE_A, f"9999.0 {mac}") is None  # a later time, same MAC
    assert signing.beat_time(NODE_A, "1234.5") is None  # a bare time
    assert signing.beat_time(NODE_A, "soon " + mac) is None
    assert signing.beat_time(NODE_A, "") is None


def test_with_checking_turned_off_a_bare_heartbeat_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    as_headnode()
    monkeypatch.setenv(signing.UNSIGNED_ENV, "1")
    assert signing.beat_time(NODE_A, "1234.5") == 1234.5
