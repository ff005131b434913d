"""A Linux node's metadata serial and the news of a guest's own changes: ``metadata.json``
keeps ``serial`` (0 at create, +1 per change from either side), ``machine_update_metadata``
answers it, and a guest's PUT/DELETE through the real socket reaches the node's listener and,
in the agent, the head node's queue on a real Redis as ``events.machine_metadata``. A
listener that fails never fails the guest's write, and the change is sent again at a later
status check.

The test process is the guest (see test_linux_mdata.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from agents import tasks
from agents.backends.linux import LinuxBackend
from agents.backends.linux.mdata_client import MetadataClient, ProtocolError
from schemas.agent import MachineMetadataEventSchema
from tests.support import netns
from tests.support.btrfs import LoopPool, missing_host
from tests.support.net import free_port
from tests.unit.agents.conftest import make_linux, spec_factory
from tests.unit.agents.test_agent_process import headnode_events

pytestmark = [
    pytest.mark.skipif(missing_host() is not None, reason=str(missing_host())),
    pytest.mark.skipif(netns.missing_host() is not None, reason=str(netns.missing_host())),
]
SpecFactory = Callable[..., dict[str, Any]]
Listener = Callable[[dict[str, Any]], None]
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5k2Xq0Xo4dXh5y1vFq8bTq7bq0bq0bq0bq0bq0bq0b "
       "alice@laptop\n")


@pytest.fixture
def spec(busybox_image: dict[str, Any]) -> SpecFactory:
    return spec_factory(busybox_image["uuid"], alias="meta", ram_mb=128, disk_mb=256)


@pytest.fixture
def listening(linux_backend: LinuxBackend, busybox_image: dict[str, Any],
              btrfs_pool: LoopPool) -> Callable[[Listener], LinuxBackend]:
    """A node like ``linux_backend`` (same pool, network and uuid: its machines go at the
    fixture's teardown) whose guests' changes go to the listener given."""
    linux_backend.image_ensure_present(busybox_image)

    def build(listener: Listener) -> LinuxBackend:
        return make_linux(btrfs_pool, linux_backend.network, linux_backend.server_uuid,
                          metadata_listener=listener)

    return build


def client(node: LinuxBackend, machine_uuid: str) -> MetadataClient:
    connection = MetadataClient(str(node.metadata.socket_path(machine_uuid)), timeout=10.0)
    connection.negotiate()
    return connection


def metadata_file(node: LinuxBackend, machine_uuid: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (node.records.bundle(machine_uuid) / "metadata.json").read_text())
    return loaded


def test_the_serial_counts_changes_from_both_sides(listening: Callable[[Listener], LinuxBackend],
                                                   spec: SpecFactory) -> None:
    heard: list[dict[str, Any]] = []
    node = listening(heard.append)
    machine = node.machine_create(spec(tags={"role": "db"}, metadata={"motd": "hi"}))
    uuid_ = machine["uuid"]
    assert metadata_file(node, uuid_)["serial"] == 0
    assert node.machine_update_metadata({"uuid": uuid_}) == {
        "tags": {"role": "db"}, "customer_metadata": {"motd": "hi"}, "serial": 0}
    change = {"uuid": uuid_, "set_customer_metadata": {"color": "blue"},
              "remove_tags": ["role"]}
    assert node.machine_update_metadata(change) == {
        "tags": {}, "customer_metadata": {"motd": "hi", "color": "blue"}, "serial": 1}
    # a redelivered task, or the same values again, changes nothing and counts nothing
    assert node.machine_update_metadata(change)["serial"] == 1
    assert node.machine_update_metadata({"uuid": uuid_, "set_tags": {}})["serial"] == 1
    assert heard == []  # the head node's own changes are answered, not announced
    with client(node, uuid_) as c:
        c.put("from-guest", "1")
        c.put("from-guest", "1")  # the same value: no change
        c.delete("motd")
        c.delete("never-there")
        with pytest.raises(ProtocolError, match="read-only"):
            c.put("sdc:alias", "other")
    base = {"server_uuid": node.server_uuid, "uuid": uuid_}
    assert heard == [
        {**base, "customer_metadata": {"motd": "hi", "color": "blue", "from-guest": "1"},
         "serial": 2},
        {**base, "customer_metadata": {"color": "blue", "from-guest": "1"}, "serial": 3}]
    for change_ in heard:
        assert MachineMetadataEventSchema().validate(change_) == {}
    assert metadata_file(node, uuid_)["serial"] == 3
    assert node.machine_update_metadata({"uuid": uuid_, "remove_customer_metadata": ["color"]}
                                        ) == {"tags": {}, "serial": 4,
                                              "customer_metadata": {"from-guest": "1"}}


def test_a_serial_survives_an_agent_restart_and_old_files_start_at_zero(
    listening: Callable[[Listener], LinuxBackend], spec: SpecFactory
) -> None:
    node = listening(lambda change: None)
    machine = node.machine_create(spec())
    uuid_ = machine["uuid"]
    node.machine_update_metadata({"uuid": uuid_, "set_customer_metadata": {"a": "1"}})
    again = listening(lambda change: None)
    assert again.machine_update_metadata({"uuid": uuid_})["serial"] == 1
    # a metadata.json of an agent that kept no serial
    path = node.records.bundle(uuid_) / "metadata.json"
    path.write_text(json.dumps({"tags": {}, "customer_metadata": {"a": "1"}}))
    assert again.machine_update_metadata({"uuid": uuid_})["serial"] == 0
    assert again.machine_update_metadata(
        {"uuid": uuid_, "set_customer_metadata": {"b": "2"}})["serial"] == 1


class Broker:
    """A listener that takes changes while ``up``, and refuses them as a Redis away would."""

    def __init__(self) -> None:
        self.up = False
        self.taken: list[dict[str, Any]] = []

    def __call__(self, change: dict[str, Any]) -> None:
        if not self.up:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.taken.append(change)


def test_a_failing_listener_does_not_fail_the_guests_write_and_is_told_again(
    listening: Callable[[Listener], LinuxBackend], spec: SpecFactory,
    caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker()
    node = listening(broker)
    node.metadata_events.resend_interval = 2.0
    machine, other = node.machine_create(spec()), node.machine_create(spec())
    with caplog.at_level(logging.ERROR):
        with client(node, machine["uuid"]) as c:
            c.put("k", "v")
            assert c.get("k") == "v"
            c.put("k2", "v2")  # the newer map replaces the older one waiting
        with client(node, other["uuid"]) as c:
            c.put("x", "1")
    assert metadata_file(node, machine["uuid"])["customer_metadata"] == {"k": "v", "k2": "v2"}
    assert metadata_file(node, machine["uuid"])["serial"] == 2
    assert any("serial 1" in r.getMessage() and machine["uuid"] in r.getMessage()
               for r in caplog.records)
    node.status()  # still away: kept
    assert sorted(c["serial"] for c in node.metadata_events.unsent()) == [1, 2]
    broker.up = True
    node.status()  # too soon after the last failure: not yet
    assert broker.taken == []
    time.sleep(2.0)
    node.status()
    assert sorted((c["uuid"], c["serial"], c["customer_metadata"]) for c in broker.taken) == \
        sorted([(machine["uuid"], 2, {"k": "v", "k2": "v2"}), (other["uuid"], 1, {"x": "1"})])
    assert node.metadata_events.unsent() == []
    node.status()
    assert len(broker.taken) == 2  # sent once


def test_a_change_sent_later_replaces_one_waiting_and_destroy_forgets(
    listening: Callable[[Listener], LinuxBackend], spec: SpecFactory
) -> None:
    broker = Broker()
    node = listening(broker)
    machine, other = node.machine_create(spec()), node.machine_create(spec())
    with client(node, machine["uuid"]) as c:
        c.put("k", "v")
    with client(node, other["uuid"]) as c:
        c.put("x", "1")
    broker.up = True
    with client(node, machine["uuid"]) as c:
        c.delete("k")  # serial 2 goes through: serial 1 is no news any more
    assert [c["uuid"] for c in node.metadata_events.unsent()] == [other["uuid"]]
    node.machine_destroy(other["uuid"])
    assert node.metadata_events.unsent() == []


# -- through the agent's Celery app to a real Redis -------------------------------------------


@pytest.fixture
def agent_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Celery]]:
    """Points the agent's event sender at a broker of the test's choosing (tasks.app is the
    process's one app; a fresh one per test keeps others' connections out of it)."""
    made: list[Celery] = []

    def point_at(url: str) -> Celery:
        app = Celery("agents-test", broker=url, set_as_current=False)
        app.conf.broker_transport_options = tasks.app.conf.broker_transport_options
        app.conf.broker_connection_timeout = 1
        monkeypatch.setattr(tasks, "app", app)
        made.append(app)
        return app

    yield point_at
    for app in made:
        app.close()


def test_a_guests_put_reaches_the_head_node_queue(
    listening: Callable[[Listener], LinuxBackend], spec: SpecFactory, clean_redis: str,
    agent_app: Callable[[str], Celery]
) -> None:
    agent_app(clean_redis)
    node = listening(tasks.send_machine_metadata)
    machine = node.machine_create(spec(metadata={"keep": "me"}))
    with client(node, machine["uuid"]) as c:
        c.put("ready", "yes")
    events = headnode_events(redis.Redis.from_url(clean_redis))
    assert events == [(tasks.EVENT_MACHINE_METADATA, [{
        "server_uuid": node.server_uuid, "uuid": machine["uuid"],
        "customer_metadata": {"keep": "me", "ready": "yes"}, "serial": 1}])]


def test_with_redis_away_a_guests_put_succeeds_and_is_sent_when_it_is_back(
    listening: Callable[[Listener], LinuxBackend], spec: SpecFactory, clean_redis: str,
    agent_app: Callable[[str], Celery], caplog: pytest.LogCaptureFixture
) -> None:
    agent_app(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    node = listening(tasks.send_machine_metadata)
    node.metadata_events.resend_interval = 0.0
    machine = node.machine_create(spec())
    started = time.monotonic()
    with caplog.at_level(logging.ERROR), client(node, machine["uuid"]) as c:
        c.put("k", "v")
    took = time.monotonic() - started
    assert metadata_file(node, machine["uuid"])["customer_metadata"] == {"k": "v"}
    assert any("could not tell the head node" in r.getMessage() for r in caplog.records)
    assert took < 10.0, took  # the guest's client waits 45 s at most
    agent_app(clean_redis)  # Redis is back
    node.status()
    assert headnode_events(redis.Redis.from_url(clean_redis)) == [
        (tasks.EVENT_MACHINE_METADATA, [{"server_uuid": node.server_uuid,
                                         "uuid": machine["uuid"],
                                         "customer_metadata": {"k": "v"}, "serial": 1}])]


# -- the keys a tenant gives ------------------------------------------------------------------


def test_keys_user_script_and_user_data_are_plain_customer_metadata(
    listening: Callable[[Listener], LinuxBackend], spec: SpecFactory
) -> None:
    node = listening(lambda change: None)
    script = "#!/bin/sh\necho booted > /var/tmp/booted\n"
    data = "line 1\n\nline 3 with \u00e9\n"
    machine = node.machine_create(spec(metadata={
        "root_authorized_keys": KEY, "user-script": script, "user-data": data}))
    with client(node, machine["uuid"]) as c:
        assert c.get("root_authorized_keys") == KEY
        assert c.get("user-script") == script
        assert c.get("user-data") == data
        assert c.keys() == ["root_authorized_keys", "user-data", "user-script"]
        # a key added to the account reaches the guest at once (its next boot writes it)
        node.machine_update_metadata({"uuid": machine["uuid"], "set_customer_metadata": {
            "root_authorized_keys": KEY + KEY.replace("alice", "bob")}})
        assert c.get("root_authorized_keys") == KEY + KEY.replace("alice", "bob")
        for key in ("sdc:uuid", "sdc:hostname", "sdc:nics"):
            with pytest.raises(ProtocolError, match="read-only"):
                c.put(key, "x")
            with pytest.raises(ProtocolError, match="read-only"):
                c.delete(key)
        assert c.get("sdc:uuid") == machine["uuid"]


def test_the_agents_backend_sends_to_the_head_node(btrfs_pool: LoopPool, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """from_settings wires the guests' changes to tasks.send_machine_metadata."""
    from agents.backends.linux.build import from_settings
    from agents.config import load_settings

    for name in ("SDC_NIC_TAGS", "SDC_NODE_NETNS", "SDC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(pool=str(btrfs_pool.mount), runc_root=btrfs_pool.runc_root,
                             data_dir=tmp_path, nic_tags="admin")
    backend = from_settings(settings, "5b1e6a3c-0000-4000-8000-000000000042")
    assert backend.metadata_events.listener is tasks.send_machine_metadata
