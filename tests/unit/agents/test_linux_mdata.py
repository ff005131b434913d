"""The metadata service of real runc machines on a Linux node: each running machine's socket
(``<runc_root>-mdata/<uuid>/metadata.sock``, ``/.zonecontrol/metadata.sock`` inside) answers
for that machine only, from the node's records, through a stop, a start and an agent restart.

The test process is the guest here: it talks to the host socket with the guest's own client
(:mod:`agents.backends.linux.mdata_client`); the busybox image has no Python to run it inside.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.backends.host import runc
from agents.backends.host.cmd import HostCommandError
from agents.backends.linux import LinuxBackend
from agents.backends.linux.mdata_client import MetadataClient, ProtocolError
from schemas.nics import NicSpecSchema
from tests.support import netns
from tests.support.btrfs import LoopPool, missing_host
from tests.unit.agents.conftest import make_linux, make_network, spec_factory

pytestmark = [
    pytest.mark.skipif(missing_host() is not None, reason=str(missing_host())),
    pytest.mark.skipif(netns.missing_host() is not None, reason=str(netns.missing_host())),
]
SpecFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def spec(busybox_image: dict[str, Any]) -> SpecFactory:
    return spec_factory(busybox_image["uuid"], alias="meta", ram_mb=128, disk_mb=256)


def client(node: LinuxBackend, machine_uuid: str) -> MetadataClient:
    """A V2 connection to the machine's host socket."""
    connection = MetadataClient(str(node.metadata.socket_path(machine_uuid)), timeout=10.0)
    connection.negotiate()
    return connection


def get(node: LinuxBackend, machine_uuid: str, key: str) -> str | None:
    with client(node, machine_uuid) as c:
        return c.get(key)


def test_a_machine_reads_what_the_node_knows_of_it(node: LinuxBackend,
                                                   spec: SpecFactory) -> None:
    middle = ":".join(f"{b:02x}" for b in os.urandom(2))
    net0: dict[str, Any] = NicSpecSchema().load({
        "mac": f"90:b8:d0:{middle}:41", "interface": "net0", "nic_tag": "external",
        "ips": ["10.88.4.10/24"], "gateways": ["10.88.4.1"], "primary": True, "mtu": 1400})
    machine = node.machine_create(spec(
        alias="web7", nics=[net0], resolvers=["10.88.4.53"], routes={"10.99.0.0/16": "10.88.4.2"},
        metadata={"user-script": "#!/bin/sh\necho hi\n", "role": "web"}))
    with client(node, machine["uuid"]) as c:
        assert c.get("sdc:uuid") == machine["uuid"]
        assert c.get("sdc:server_uuid") == node.server_uuid
        assert c.get("sdc:hostname") == c.get("sdc:alias") == "web7"
        assert c.get("sdc:owner_uuid") == node.records.get(machine["uuid"])["owner_uuid"]
        assert json.loads(c.get("sdc:nics") or "") == [
            {"mac": net0["mac"], "interface": "net0", "ips": ["10.88.4.10/24"],
             "gateways": ["10.88.4.1"], "primary": True, "nic_tag": "external", "vlan_id": 0,
             "mtu": 1400}]
        assert json.loads(c.get("sdc:resolvers") or "") == ["10.88.4.53"]
        assert json.loads(c.get("sdc:routes") or "") == [
            {"linklocal": False, "dst": "10.99.0.0/16", "gateway": "10.88.4.2"}]
        assert c.get("user-script") == "#!/bin/sh\necho hi\n"
        assert c.keys() == ["role", "user-script"]
        assert c.get("sdc:nope") is None
        with pytest.raises(ProtocolError, match="read-only"):
            c.put("sdc:uuid", "someone else")
        with pytest.raises(ProtocolError, match="read-only"):
            c.delete("sdc:alias")
    assert get(node, machine["uuid"], "sdc:uuid") == machine["uuid"]


def test_each_machine_answers_for_itself(node: LinuxBackend, spec: SpecFactory) -> None:
    first = node.machine_create(spec())
    second = node.machine_create(spec())
    assert get(node, first["uuid"], "sdc:uuid") == first["uuid"]
    assert get(node, second["uuid"], "sdc:uuid") == second["uuid"]


def test_customer_metadata_both_ways(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec(metadata={"old": "1"}))
    uuid_ = machine["uuid"]
    node.machine_update_metadata({"uuid": uuid_, "set_customer_metadata": {"color": "blue"},
                                  "remove_customer_metadata": ["old"]})
    with client(node, uuid_) as c:
        assert c.get("color") == "blue"
        assert c.get("old") is None
        c.put("from-guest", "hello")
        c.put("user-data", "line1\nline2")
        c.delete("color")
        c.delete("never-there")
        assert c.keys() == ["from-guest", "user-data"]
    meta = node.machine_update_metadata({"uuid": uuid_})  # an empty change reads them
    assert meta["customer_metadata"] == {"from-guest": "hello", "user-data": "line1\nline2"}
    assert meta["tags"] == {}


def test_the_socket_is_inside_the_machine(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec())
    out = runc.exec_(node.runc_root, machine["uuid"], ["ls", "/.zonecontrol/metadata.sock"])
    assert out.strip() == "/.zonecontrol/metadata.sock"
    # read-only for the guest: it can neither replace its socket nor leave files there
    with pytest.raises(HostCommandError, match="Read-only file system"):
        runc.exec_(node.runc_root, machine["uuid"], ["touch", "/.zonecontrol/x"])


def test_stop_removes_the_socket_and_start_brings_it_back(node: LinuxBackend,
                                                          spec: SpecFactory) -> None:
    machine = node.machine_create(spec())
    sock = node.metadata.socket_path(machine["uuid"])
    node.machine_stop(machine["uuid"])
    assert not sock.exists()
    node.machine_start(machine["uuid"])
    assert get(node, machine["uuid"], "sdc:uuid") == machine["uuid"]
    out = runc.exec_(node.runc_root, machine["uuid"], ["ls", "/.zonecontrol"])
    assert out.split() == ["metadata.sock"]
    node.machine_reboot(machine["uuid"])
    assert get(node, machine["uuid"], "sdc:uuid") == machine["uuid"]


def test_an_agent_restart_serves_the_running_machines_again(
    node: LinuxBackend, spec: SpecFactory, btrfs_pool: LoopPool, node_netns: Path
) -> None:
    running = node.machine_create(spec(metadata={"k": "v"}))
    stopped = node.machine_create(spec())
    node.machine_stop(stopped["uuid"])
    again = make_linux(btrfs_pool, make_network(btrfs_pool, node_netns,
                                                node.network.state_dir),
                       node.server_uuid)
    assert get(again, running["uuid"], "sdc:uuid") == running["uuid"]
    assert get(again, running["uuid"], "k") == "v"
    assert not again.metadata.socket_path(stopped["uuid"]).exists()
    # the new socket file shows inside: the machine's directory is mounted, not the file
    out = runc.exec_(again.runc_root, running["uuid"], ["ls", "/.zonecontrol"])
    assert out.split() == ["metadata.sock"]


def test_destroy_leaves_no_socket_or_directory(node: LinuxBackend, spec: SpecFactory) -> None:
    machine = node.machine_create(spec())
    where = node.metadata.machine_dir(machine["uuid"])
    assert (where / "metadata.sock").exists()
    node.machine_destroy(machine["uuid"])
    assert not where.exists()
