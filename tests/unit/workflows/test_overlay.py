"""The overlay directory on the real PostgreSQL and Redis: who gets which peers when nodes
register, are set up, go away, and report a version; the messages are read back from the
nodes' queues on Redis, where the head node's Celery app put them."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from celery import Celery

from headnode.services import overlay, servers
from headnode.store.models import Server, new_uuid
from schemas.agent import agent_queue, agent_task
from tests.unit.headnode.services.conftest import make_server
from tests.unit.workflows.test_nodes import status, sysinfo
from workflows import nodes
from workflows.celery_app import make_app
from workflows.dispatch import CeleryTransport

EXTERNAL = "external"


def node_info(uuid: str, underlay: str | None, **tags: str | None) -> dict[str, Any]:
    """Sysinfo of a node with tag ``external`` (over an overlay from ``underlay``, or
    host-local without one) and ``tags`` (name -> underlay or None)."""
    uplinks = {EXTERNAL: underlay, **tags}
    return sysinfo(uuid, **{
        "NIC Names": ["admin", *uplinks],
        "SDC NIC Tags": {"admin": {"link": None, "underlay": None},
                         **{tag: {"link": "eth1" if ip else None, "underlay": ip}
                            for tag, ip in uplinks.items()}}})


class Cloud:
    """The head node's side: register and report as the event tasks do, send what they
    would send after the commit, read the agents' queues."""

    def __init__(self, ctx: Any, app: Celery, interval: float = 30.0) -> None:
        self.ctx, self.app, self.interval = ctx, app, interval
        self.redis = redis.Redis.from_url(ctx.settings.redis_url)

    def send(self, messages: list[overlay.Message]) -> list[overlay.Message]:
        return nodes.send_overlay(messages, CeleryTransport(self.app).send_raw, self.redis,
                                  self.interval)

    def register(self, info: dict[str, Any]) -> list[overlay.Message]:
        out: list[overlay.Message] = []
        with self.ctx.transaction() as session:
            nodes.register_server(session, info, out)
        return self.send(out)

    def report(self, server_uuid: str, version: str, at: float) -> list[overlay.Message]:
        out: list[overlay.Message] = []
        with self.ctx.transaction() as session:
            nodes.apply_status(session, status(server_uuid, [], overlay_version=version,
                                               timestamp=at), out)
        return self.send(out)

    def long_ago(self, server_uuid: str) -> None:
        """As if the last message to the node went out more than an interval ago."""
        self.redis.delete(nodes.OVERLAY_SENT_KEY + server_uuid)

    def queued(self, server_uuid: str) -> list[dict[str, Any]]:
        """The params of every node_set_overlay_peers waiting for the node (taken off)."""
        taken = []
        with self.app.connection_for_read() as conn:
            while (message := conn.default_channel.basic_get(agent_queue(server_uuid),
                                                             no_ack=True)) is not None:
                assert message.headers["task"] == agent_task(overlay.SET_PEERS)
                target, params, reply = message.decode()[0]
                assert (target, reply) == (server_uuid, None)
                taken.append(params)
        return taken

    def peers(self, server_uuid: str) -> dict[str, list[str]] | None:
        """The peers last queued for the node, None when nothing was."""
        queued = self.queued(server_uuid)
        if not queued:
            return None
        assert all(p["version"] == overlay.version_of(p["peers"]) for p in queued)
        return dict(queued[-1]["peers"])


@pytest.fixture
def cloud(ctx: Any, settings: Any) -> Cloud:
    return Cloud(ctx, make_app(settings))


def set_up_node(ctx: Any, hostname: str, underlay: str | None, **tags: str | None) -> str:
    """A server an operator has set up, registered before with ``underlay``."""
    uuid = new_uuid()
    make_server(ctx, uuid=uuid, hostname=hostname, sysinfo=node_info(uuid, underlay, **tags))
    return uuid


@pytest.fixture
def trio(ctx: Any, cloud: Cloud) -> dict[str, str]:
    """a and b carry tag external over an overlay; c has external host-local. Each agent
    has (re)started and registered."""
    nodes_ = {"a": set_up_node(ctx, "a", "192.0.2.1"), "b": set_up_node(ctx, "b", "192.0.2.2"),
              "c": set_up_node(ctx, "c", None)}
    for name, ip in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", None)):
        cloud.register(node_info(nodes_[name], ip))
    return nodes_


# -- the directory --------------------------------------------------------------------------


def test_the_version_is_a_digest_of_the_peers_whatever_their_order() -> None:
    one = overlay.version_of({"external": ["192.0.2.2", "192.0.2.1"], "internal": []})
    assert len(one) == 16 and int(one, 16) >= 0
    assert one == overlay.version_of({"internal": [], "external": ["192.0.2.1", "192.0.2.2"]})
    assert one != overlay.version_of({"external": ["192.0.2.1", "192.0.2.2"]})
    assert overlay.version_of({}) == overlay.NO_OVERLAY == ""


def test_peers_are_the_other_set_up_nodes_on_each_of_its_overlay_tags(ctx: Any) -> None:
    a = set_up_node(ctx, "a", "192.0.2.1", internal="198.51.100.1")
    set_up_node(ctx, "b", "192.0.2.2", internal=None)  # internal host-local
    set_up_node(ctx, "c", "192.0.2.3", internal="198.51.100.3")
    down = set_up_node(ctx, "d", "192.0.2.4")
    with ctx.transaction() as session:
        session.get(Server, down).status = "unknown"  # liveness does not matter
    new = new_uuid()  # registered, not set up: nobody's peer
    make_server(ctx, uuid=new, setup=False, sysinfo=node_info(new, "192.0.2.9"))
    with ctx.read() as session:
        message = overlay.message_for(session, session.get(Server, a))
        newcomer = overlay.message_for(session, session.get(Server, new))
    assert message.peers == {"external": ["192.0.2.2", "192.0.2.3", "192.0.2.4"],
                             "internal": ["198.51.100.3"]}
    assert message.version == overlay.version_of(message.peers)
    assert newcomer.peers == {"external": ["192.0.2.1", "192.0.2.2", "192.0.2.3",
                                           "192.0.2.4"]}


# -- registration -----------------------------------------------------------------------------


def test_each_overlay_node_gets_the_other_and_a_host_local_one_nothing(
        cloud: Cloud, trio: dict[str, str]) -> None:
    assert cloud.peers(trio["a"]) == {"external": ["192.0.2.2"]}
    assert cloud.peers(trio["b"]) == {"external": ["192.0.2.1"]}
    assert cloud.peers(trio["c"]) is None


def test_a_set_up_node_that_now_has_an_underlay_updates_both(
        cloud: Cloud, trio: dict[str, str]) -> None:
    for name in trio:
        cloud.queued(trio[name])
    cloud.register(node_info(trio["c"], "192.0.2.3"))
    assert cloud.peers(trio["c"]) == {"external": ["192.0.2.1", "192.0.2.2"]}
    assert cloud.peers(trio["a"]) == {"external": ["192.0.2.2", "192.0.2.3"]}
    assert cloud.peers(trio["b"]) == {"external": ["192.0.2.1", "192.0.2.3"]}
    cloud.register(node_info(trio["c"], "192.0.2.3"))  # restarted, nothing changed
    assert cloud.peers(trio["c"]) == {"external": ["192.0.2.1", "192.0.2.2"]}
    assert (cloud.peers(trio["a"]), cloud.peers(trio["b"])) == (None, None)
    cloud.register(node_info(trio["c"], "192.0.2.33"))  # its address moved
    assert cloud.peers(trio["a"]) == {"external": ["192.0.2.2", "192.0.2.33"]}


def test_a_new_node_gets_its_peers_and_joins_theirs_once_set_up(
        ctx: Any, cloud: Cloud, trio: dict[str, str]) -> None:
    for name in trio:
        cloud.queued(trio[name])
    new = new_uuid()
    cloud.register(node_info(new, "192.0.2.4"))
    assert cloud.peers(new) == {"external": ["192.0.2.1", "192.0.2.2"]}
    assert cloud.peers(trio["a"]) is None  # not set up: nobody's peer yet
    servers.update_server(ctx, new, {"setup": True})
    # a's next report after the resend interval still has the old version: the repair
    # sends the new peers
    cloud.long_ago(trio["a"])
    old = overlay.version_of({"external": ["192.0.2.2"]})
    assert cloud.report(trio["a"], old, time.time())
    assert cloud.peers(trio["a"]) == {"external": ["192.0.2.2", "192.0.2.4"]}


def reconcile(cloud: Cloud) -> list[overlay.Message]:
    """What the reconciler's directory watch sends now."""
    with cloud.ctx.transaction() as session:
        return cloud.send(nodes.overlay_directory_changes(session, cloud.redis))


def test_the_reconciler_brings_a_set_up_or_taken_out_server_to_the_others(
        ctx: Any, cloud: Cloud, trio: dict[str, str]) -> None:
    reconcile(cloud)  # its first look: everyone gets the directory as it is
    for name in trio:
        cloud.queued(trio[name])
    assert reconcile(cloud) == []  # nothing changed: nothing sent
    new = new_uuid()
    cloud.register(node_info(new, "192.0.2.4"))
    cloud.queued(new)
    assert reconcile(cloud) == []  # registered, not set up: nobody's peer yet
    servers.update_server(ctx, new, {"setup": True})
    assert {m.server_uuid for m in reconcile(cloud)} == {trio["a"], trio["b"], new}
    assert cloud.peers(trio["a"]) == {"external": ["192.0.2.2", "192.0.2.4"]}
    assert cloud.peers(trio["c"]) is None  # host-local: nothing to apply
    servers.update_server(ctx, new, {"setup": False})
    reconcile(cloud)
    assert cloud.peers(trio["a"]) == {"external": ["192.0.2.2"]}
    assert reconcile(cloud) == []


def test_a_server_gone_drops_out_of_its_peers(ctx: Any, cloud: Cloud,
                                              trio: dict[str, str]) -> None:
    cloud.queued(trio["a"])
    with ctx.transaction() as session:
        session.delete(session.get(Server, trio["b"]))
    had = overlay.version_of({"external": ["192.0.2.2"]})
    cloud.long_ago(trio["a"])
    cloud.report(trio["a"], had, time.time())
    assert cloud.peers(trio["a"]) == {"external": []}  # told that its last peer left


# -- repairs from status reports --------------------------------------------------------------


def test_a_stale_version_is_sent_again_at_most_once_per_interval(
        ctx: Any, settings: Any, trio: dict[str, str]) -> None:
    cloud = Cloud(ctx, make_app(settings), interval=0.5)
    a = trio["a"]
    cloud.queued(a)
    cloud.long_ago(a)  # as if its registration was long ago
    right = overlay.version_of({"external": ["192.0.2.2"]})
    now = time.time()
    assert cloud.report(a, "", now)  # an agent that lost its state (or never applied it)
    assert cloud.peers(a) == {"external": ["192.0.2.2"]}
    assert cloud.report(a, "", now + 1) == []  # slow to apply: not sent again yet
    assert cloud.peers(a) is None
    time.sleep(0.6)
    assert cloud.report(a, "", now + 2)  # still not applied after the interval
    assert cloud.peers(a) == {"external": ["192.0.2.2"]}
    time.sleep(0.6)
    assert cloud.report(a, right, now + 3) == []  # applied: nothing to send
    assert cloud.peers(a) is None


def test_a_change_is_sent_even_right_after_a_repair(ctx: Any, settings: Any,
                                                    trio: dict[str, str]) -> None:
    cloud = Cloud(ctx, make_app(settings), interval=60)
    a, c = trio["a"], trio["c"]
    cloud.queued(a)
    cloud.long_ago(a)
    assert cloud.report(a, "", time.time())
    cloud.register(node_info(c, "192.0.2.3"))
    assert cloud.peers(a) == {"external": ["192.0.2.2", "192.0.2.3"]}


def test_a_node_without_an_overlay_is_sent_nothing(cloud: Cloud, trio: dict[str, str]) -> None:
    assert cloud.report(trio["c"], "", time.time()) == []
    assert cloud.peers(trio["c"]) is None


def test_a_node_that_dropped_its_overlay_is_told_to_forget_its_peers(
        cloud: Cloud, trio: dict[str, str]) -> None:
    a = trio["a"]
    cloud.register(node_info(a, None))  # now host-local (or on 802.1Q)
    cloud.queued(a)
    cloud.long_ago(a)
    assert cloud.report(a, overlay.version_of({"external": ["192.0.2.2"]}), time.time())
    assert cloud.queued(a) == [{"peers": {}, "version": ""}]
    assert cloud.peers(trio["b"]) == {"external": []}  # a left b's peers at registration


def test_a_report_not_applied_asks_for_nothing(cloud: Cloud, trio: dict[str, str]) -> None:
    a = trio["a"]
    cloud.long_ago(a)
    assert cloud.report(a, "", 4_000_000_000.0)  # applied: a repair
    cloud.queued(a)
    cloud.long_ago(a)
    assert cloud.report(a, "", 3_000_000_000.0) == []  # older than the one applied
    assert cloud.report(new_uuid(), "", time.time()) == []  # no such server yet
    assert cloud.peers(a) is None
