"""Machines moving between two real Linux nodes (issue 17): the head node's processes and two
`sdc agent run --backend linux`, each with its own btrfs pool and its node network in a
namespace this test makes (joined by a veth link that carries the nodes' VXLAN uplinks, as in
test_linux_network). The data goes node to node by `btrfs send | receive` over the agents'
migration streams.

What is asserted is what the nodes say: runc's state, the files in the machine's root, `ip`
inside the machine, the pools' subvolumes and the agents' records, `ip link` and `nft list
ruleset` in the node namespaces; and what the head node says: the migration record, the
servers' room and `sdc doctor`.

One cloud serves the module (the suite has a time budget): the tests run in file order and
each leaves every machine running on exactly one node with no unfinished migration.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns
from tests.support.btrfs import missing_host

MISSING = missing_host() or netns.missing_host()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

# Imported after the skip decision: these drive btrfs, runc and namespaces on the host.
from agents.backends.host import btrfs  # noqa: E402
from agents.backends.linux.netlines import host_veth  # noqa: E402
from agents.backends.linux.nft import chain_name  # noqa: E402
from agents.backends.linux.runtime import netns_dir  # noqa: E402
from tests.support.linux_cloud import (  # noqa: E402
    LinuxCloud,
    LinuxNode,
    cloud_with_namespaces,
)
from tests.support.wait import wait_until  # noqa: E402

PACKAGE: dict[str, Any] = {"name": "lx-mig", "memory": 128, "disk": 512}
LAN = {"name": "lan0", "subnet": "10.71.0.0/24", "gateway": "10.71.0.1",
       "provision_start_ip": "10.71.0.10", "provision_end_ip": "10.71.0.99",
       "nic_tag": "external", "vlan_id": 0, "public": True}
UNDERLAY_LINK = "ul0"
UNDERLAY_ADDRESSES = ("192.0.2.1/24", "192.0.2.2/24")
#: what the heavy machine holds: enough that one full sync takes seconds on this VM
HEAVY_MB = 300
#: the server fields that say how much room its machines and migrations hold
ROOM = ("ram_inflight_mb", "ram_committed_mb", "disk_inflight_mb", "disk_committed_mb",
        "machine_count")
JOB_TIMEOUT = 300
#: room for every machine of the module on one node (the evacuation's target); sparse
POOL_SIZE = 4 << 30


class MigrationCloud(LinuxCloud):
    def place(self, alias: str, node: LinuxNode, **extra: Any) -> dict[str, Any]:
        return self.provision(alias, PACKAGE["name"], server_uuid=node.server,
                              networks=[LAN["name"]], **extra)

    def other(self, node: LinuxNode) -> LinuxNode:
        return next(n for n in self.nodes if n is not node)

    # -- migrations through the operator API ---------------------------------------------------

    def migrate(self, machine_uuid: str, action: str, **body: Any) -> dict[str, Any]:
        """Start ``action``; the migration as the answer gives it (with its job's uuid)."""
        return dict(self.api.post(f"/ops/machines/{machine_uuid}/migrate",
                                  {"action": action, **body}))

    def migrate_ok(self, machine_uuid: str, action: str, **body: Any) -> dict[str, Any]:
        """``action`` run to its end, which must succeed; the migration after it."""
        job = self.wait_job(self.migrate(machine_uuid, action, **body)["job_uuid"],
                            timeout=JOB_TIMEOUT)
        assert job["execution"] == "succeeded", (job["error"], self.migration(machine_uuid))
        return self.migration(machine_uuid)

    def migrate_failed(self, machine_uuid: str, action: str, **body: Any) -> dict[str, Any]:
        job = self.wait_job(self.migrate(machine_uuid, action, **body)["job_uuid"],
                            timeout=JOB_TIMEOUT)
        assert job["execution"] == "failed", self.migration(machine_uuid)
        return self.migration(machine_uuid)

    def migration(self, machine_uuid: str) -> dict[str, Any]:
        return dict(self.api.get(f"/ops/migrations/{machine_uuid}"))

    # -- what the head node holds -------------------------------------------------------------

    def room(self) -> dict[str, tuple[int, ...]]:
        """Each server's room held, by server uuid."""
        return {s["uuid"]: tuple(s[f] for f in ROOM) for s in self.api.get("/ops/servers")}

    def doctor_findings(self) -> list[dict[str, Any]]:
        return list(self.api.get("/ops/doctor")["findings"])

    def wait_doctor_clean(self) -> None:
        wait_until(lambda: self.doctor_findings() == [], timeout=30, interval=0.5,
                   message=lambda: f"sdc doctor to find nothing: {self.doctor_findings()}")

    # -- what a node holds --------------------------------------------------------------------

    def node_says(self, node: LinuxNode, *argv: str) -> str:
        assert node.netns is not None
        return netns.run_in(node.netns, list(argv)).stdout

    def running_on(self, node: LinuxNode, machine_uuid: str) -> bool:
        state = self.runc_state(machine_uuid, node)
        return state is not None and state.get("status") == "running"

    def holds(self, node: LinuxNode, machine: dict[str, Any]) -> list[str]:
        """Everything of ``machine`` on ``node``: subvolumes (its root, its snapshots, a
        received or partial one anywhere in the pool), its record, its container, its
        network namespace, its NICs' veths and nft chains."""
        uuid, pool = machine["uuid"], node.pool.mount
        found = [f"subvolume:{line.split(' path ', 1)[1]}"
                 for line in btrfs_list(pool) if uuid in line]
        found += [f"path:{p.relative_to(pool)}" for p in (pool / "migrations").glob(f"{uuid}*")]
        if (pool / ".sdc" / "machines" / uuid).exists():
            found.append("record")
        if self.runc_state(uuid, node) is not None:
            found.append("container")
        if (netns_dir(node.pool.runc_root) / uuid).exists():
            found.append("netns")
        links, rules = self.node_says(node, "ip", "-o", "link"), \
            self.node_says(node, "nft", "list", "ruleset")
        for mac in machine["macs"]:
            found += [f"veth:{host_veth(mac)}"] if f"{host_veth(mac)}@" in links else []
            found += [f"nft:{chain_name(mac)}"] if chain_name(mac) in rules else []
        return found

    def file_digest(self, machine_uuid: str, path: str) -> str:
        """sha256 of a file in the machine's root, read on the node it is recorded on."""
        root = self.node_of(machine_uuid).pool.mount / "zones" / machine_uuid
        with open(root / path.lstrip("/"), "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    def identity(self, machine_uuid: str) -> dict[str, Any]:
        """What the machine's kernel says of its NIC, and the records' uuid, server, IPs."""
        link = self.inside(machine_uuid, "ip", "-o", "link", "show", "dev", "net0")
        addr = self.inside(machine_uuid, "ip", "-o", "-4", "addr", "show", "dev", "net0")
        return {"mac": link.split("link/ether ", 1)[1].split()[0],
                "ip": addr.split("inet ", 1)[1].split("/")[0],
                "hostname": self.inside(machine_uuid, "hostname").strip()}


def btrfs_list(pool: Path) -> list[str]:
    """``btrfs subvolume list`` of the pool, one line per subvolume ("... path <path>")."""
    from agents.backends.host.cmd import run

    return [line for line in run([btrfs.BTRFS, "subvolume", "list", str(pool)]).splitlines()
            if " path " in line]


def with_macs(cloud: MigrationCloud, machine: dict[str, Any]) -> dict[str, Any]:
    nics = cloud.api.get(f"/ops/machines/{machine['uuid']}/nics")
    return {**machine, "macs": [nic["mac"] for nic in nics], "ips": [nic["ip"] for nic in nics]}


@pytest.fixture(scope="module")
def cloud(postgres_server: Any, redis_server: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationCloud]:
    workdir = tmp_path_factory.mktemp("linux-migration")
    spaces = netns.workdir("mig")
    nodes = [netns.create(spaces / "node0"), netns.create(spaces / "node1")]
    netns.link(nodes[0], UNDERLAY_LINK, UNDERLAY_ADDRESSES[0],
               nodes[1], UNDERLAY_LINK, UNDERLAY_ADDRESSES[1], mtu=1600)
    with cloud_with_namespaces(postgres_server, redis_server, workdir, MigrationCloud, spaces,
                               SDC_USER_MIGRATION_ALLOWED="true") as c:
        for i, space in enumerate(nodes):
            c.add_node(f"mig{i}", space, {"SDC_NIC_TAGS": f"external:{UNDERLAY_LINK}",
                                          "SDC_NIC_UPLINK": "vxlan"}, pool_size=POOL_SIZE)
        c.seed([PACKAGE])
        c.api.post("/ops/networks", LAN)
        yield c


@pytest.fixture(scope="module")
def peer(cloud: MigrationCloud) -> dict[str, Any]:
    """A machine that stays on the first node, for the moved ones to reach."""
    return with_macs(cloud, cloud.place("peer", cloud.nodes[0]))


@pytest.fixture(scope="module")
def roamer(cloud: MigrationCloud) -> dict[str, Any]:
    """A running machine on the first node with a file written inside."""
    machine = with_macs(cloud, cloud.place("roamer", cloud.nodes[0]))
    cloud.inside(machine["uuid"], "sh", "-c", "echo written-before > /root/note")
    return machine


@pytest.fixture(scope="module")
def heavy(cloud: MigrationCloud) -> dict[str, Any]:
    """A running machine on the first node with HEAVY_MB of random data written inside."""
    machine = with_macs(cloud, cloud.place("heavy", cloud.nodes[0]))
    cloud.inside(machine["uuid"], "dd", "if=/dev/urandom", "of=/root/data", "bs=1M",
                 f"count={HEAVY_MB}")
    cloud.inside(machine["uuid"], "sync")
    return {**machine, "digest": cloud.file_digest(machine["uuid"], "/root/data")}


def migration_snapshots(cloud: MigrationCloud, node: LinuxNode,
                        machine: dict[str, Any]) -> list[str]:
    """The machine's migration snapshots (sent or received) on ``node``."""
    return [p for p in cloud.holds(node, machine)
            if p.startswith("subvolume:") and "migration" in p]


def assert_only_on(cloud: MigrationCloud, machine: dict[str, Any], node: LinuxNode,
                   state: str = "running") -> None:
    """The machine is on ``node`` in ``state`` (records and runc agree) and nothing of it is
    left on the other node."""
    record = cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert (record["server_uuid"], record["state"]) == (node.server, state)
    assert cloud.running_on(node, machine["uuid"]) is (state == "running")
    assert cloud.holds(cloud.other(node), machine) == []


def assert_failed_cleanly(cloud: MigrationCloud, machine: dict[str, Any], source: LinuxNode,
                          room_before: dict[str, tuple[int, ...]], reason: str) -> None:
    """Point 5 of the issue: the machine running on its source only with its data and
    address, the migration failed with the reason, the room as before, no leftover."""
    migration = cloud.migration(machine["uuid"])
    assert migration["state"] == "failed", migration
    assert migration["error"] and migration["error"]["message"], migration
    assert reason in json.dumps(migration["error"]), migration["error"]
    assert_only_on(cloud, machine, source)
    # the source's clean-up is sent without waiting (a restarted agent takes it from its queue)
    wait_until(lambda: migration_snapshots(cloud, source, machine) == [], timeout=30,
               message="the source's migration snapshots to go")
    assert cloud.identity(machine["uuid"])["ip"] == machine["ips"][0]
    assert cloud.file_digest(machine["uuid"], "/root/data") == machine["digest"]
    assert cloud.room() == room_before
    cloud.wait_doctor_clean()


# -- the happy paths ---------------------------------------------------------------------------


def test_automatic_moves_a_running_machine_with_its_file_and_address_then_finalize_empties_the_source(  # noqa: E501
        cloud: MigrationCloud, roamer: dict[str, Any], peer: dict[str, Any]) -> None:
    source, target = cloud.nodes
    before = cloud.identity(roamer["uuid"])
    done = cloud.sdc("vm", "migrate", "automatic", roamer["uuid"], "--watch")
    assert done.returncode == 0, done.stderr
    migration = cloud.migration(roamer["uuid"])
    assert (migration["state"], migration["phase"]) == ("successful", "switch"), migration
    assert migration["target_server_uuid"] == target.server
    assert migration["downtime_ms"] is not None and migration["downtime_ms"] > 0
    # the machine runs on the target: same uuid, MAC, address, file; reachable
    record = cloud.api.get(f"/ops/machines/{roamer['uuid']}")
    assert (record["server_uuid"], record["state"]) == (target.server, "running")
    assert cloud.running_on(target, roamer["uuid"])
    assert cloud.identity(roamer["uuid"]) == before == {
        "mac": roamer["macs"][0], "ip": roamer["ips"][0], "hostname": before["hostname"]}
    assert cloud.inside(roamer["uuid"], "cat", "/root/note") == "written-before\n"
    ping = ["ping", "-c", "1", "-W", "2", peer["ips"][0]]
    wait_until(lambda: cloud.inside(roamer["uuid"], *ping) is not None, timeout=10,
               message="the moved machine to reach the peer on its old node")
    # until finalize the source keeps a hidden, stopped copy; then nothing
    assert not cloud.running_on(source, roamer["uuid"])
    assert f"subvolume:zones/{roamer['uuid']}" in cloud.holds(source, roamer)
    done = cloud.sdc("vm", "migrate", "finalize", roamer["uuid"], "--watch")
    assert done.returncode == 0, done.stderr
    assert cloud.holds(source, roamer) == []
    assert cloud.migration(roamer["uuid"])["finished_timestamp"] is not None
    cloud.wait_doctor_clean()


def test_data_written_between_the_first_sync_and_the_switch_is_on_the_target(
        cloud: MigrationCloud, roamer: dict[str, Any]) -> None:
    source = cloud.node_of(roamer["uuid"])
    target = cloud.other(source)
    room_before = cloud.room()
    cloud.migrate_ok(roamer["uuid"], "begin")
    first = cloud.migrate_ok(roamer["uuid"], "sync")
    assert first["syncs"] == 1 and first["sent_bytes"] > 0, first
    cloud.inside(roamer["uuid"], "sh", "-c", "echo written-between > /root/between")
    switched = cloud.migrate_ok(roamer["uuid"], "switch")
    assert switched["state"] == "successful" and switched["syncs"] == 2, switched
    assert cloud.inside(roamer["uuid"], "cat", "/root/between") == "written-between\n"
    assert cloud.inside(roamer["uuid"], "cat", "/root/note") == "written-before\n"
    cloud.migrate_ok(roamer["uuid"], "finalize")
    assert_only_on(cloud, roamer, target)
    # the machine's room moved with it
    size = (PACKAGE["memory"], PACKAGE["disk"])
    moved = {source.server: -1, target.server: 1}
    for server, sign in moved.items():
        held, now = room_before[server], cloud.room()[server]
        assert (now[1], now[3], now[4]) == (held[1] + sign * size[0], held[3] + sign * size[1],
                                            held[4] + sign), (server, held, now)
    cloud.wait_doctor_clean()


def test_begin_sync_abort_leaves_the_source_untouched_and_the_target_clean(
        cloud: MigrationCloud, roamer: dict[str, Any]) -> None:
    source = cloud.node_of(roamer["uuid"])
    target = cloud.other(source)
    room_before = cloud.room()
    pid = cloud.runc_state(roamer["uuid"], source)["pid"]  # type: ignore[index]
    cloud.migrate_ok(roamer["uuid"], "begin")
    # the target's room is held from begin
    assert cloud.room()[target.server] != room_before[target.server]
    cloud.migrate_ok(roamer["uuid"], "sync")
    assert cloud.holds(target, roamer) != []  # a received copy is there, hidden
    aborted = cloud.migrate_ok(roamer["uuid"], "abort")
    assert aborted["state"] == "aborted", aborted
    # the machine never stopped, and nothing of the migration is left on either node
    assert cloud.runc_state(roamer["uuid"], source)["pid"] == pid  # type: ignore[index]
    assert_only_on(cloud, roamer, source)
    assert migration_snapshots(cloud, source, roamer) == []
    assert cloud.room() == room_before
    cloud.wait_doctor_clean()


def test_switch_then_rollback_brings_the_machine_back_to_its_source(
        cloud: MigrationCloud, roamer: dict[str, Any]) -> None:
    source = cloud.node_of(roamer["uuid"])
    target = cloud.other(source)
    room_before = cloud.room()
    cloud.migrate_ok(roamer["uuid"], "begin")
    cloud.migrate_ok(roamer["uuid"], "sync")
    cloud.migrate_ok(roamer["uuid"], "switch")
    assert cloud.running_on(target, roamer["uuid"])
    rolled = cloud.migrate_ok(roamer["uuid"], "rollback")
    assert rolled["state"] == "rolled_back", rolled
    assert_only_on(cloud, roamer, source)
    assert cloud.identity(roamer["uuid"])["ip"] == roamer["ips"][0]
    assert cloud.inside(roamer["uuid"], "cat", "/root/note") == "written-before\n"
    assert cloud.room() == room_before
    cloud.wait_doctor_clean()


# -- failures: the machine stays on exactly one node ---------------------------------------


def agent_pids(cloud: MigrationCloud, node: LinuxNode) -> list[int]:
    """The node's agent and every process under it (its worker, a `btrfs receive`); not the
    machines: runc hands their processes to init."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [cloud.procs.procs[f"agent-{node.name}"].pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def kill_an_agent_mid_sync(cloud: MigrationCloud, machine: dict[str, Any],
                           which: str) -> tuple[LinuxNode, float]:
    """Begin, then a sync whose ``which`` ("source" or "target") agent is SIGKILLed while
    the target receives and started again (as its supervisor would); waits for the sync's
    job to fail. Returns the source and the seconds from the kill to the failure."""
    source = cloud.node_of(machine["uuid"])
    target = cloud.other(source)
    cloud.migrate_ok(machine["uuid"], "begin")
    sync = cloud.migrate(machine["uuid"], "sync")
    # the kill lands while the target receives: bytes have come, or the subvolume that
    # `btrfs receive` writes is there (where the Linux backend receives; none before)
    receiving = f"migrations/{machine['uuid']}/*/migration-*"
    wait_until(lambda: any(target.pool.mount.glob(receiving))
               or cloud.migration(machine["uuid"])["sent_bytes"] > 0,
               timeout=60, interval=0.02, message="the target to start receiving")
    assert cloud.api.get(f"/ops/jobs/{sync['job_uuid']}")["execution"] == "running"
    victim = source if which == "source" else target
    for pid in agent_pids(cloud, victim):
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: not cloud.procs.procs[f"agent-{victim.name}"].alive(), timeout=10)
    cloud.start_agent(victim)
    job = cloud.wait_job(sync["job_uuid"], timeout=JOB_TIMEOUT)
    assert job["execution"] == "failed"
    return source, time.monotonic() - killed_at


def test_killing_the_target_agent_during_a_sync_leaves_the_machine_on_its_source(
        cloud: MigrationCloud, heavy: dict[str, Any]) -> None:
    room_before = cloud.room()
    source, _ = kill_an_agent_mid_sync(cloud, heavy, "target")
    assert_failed_cleanly(cloud, heavy, source, room_before, "")


def test_killing_the_source_agent_during_a_sync_fails_it_at_once_and_leaves_the_machine(
        cloud: MigrationCloud, heavy: dict[str, Any]) -> None:
    """The source's reply never comes; the target's receive sees the stream cut and says
    so, so the sync fails in seconds rather than after the stream's quiet time."""
    room_before = cloud.room()
    source, took = kill_an_agent_mid_sync(cloud, heavy, "source")
    assert took < 60  # not the stream's 300 s of quiet
    assert_failed_cleanly(cloud, heavy, source, room_before, "MigrationStreamCut")


def test_a_target_pool_too_small_fails_the_migration_and_leaves_the_machine_on_its_source(
        cloud: MigrationCloud, heavy: dict[str, Any]) -> None:
    source = cloud.node_of(heavy["uuid"])
    target = cloud.other(source)
    room_before = cloud.room()
    filler = target.pool.mount / "filler"
    free = btrfs.filesystem_usage(target.pool.mount)["Free (estimated)"]
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, free - (HEAVY_MB // 3 << 20))
    try:
        failed = cloud.migrate_failed(heavy["uuid"], "automatic")
        assert failed["target_server_uuid"] == target.server
        assert_failed_cleanly(cloud, heavy, source, room_before, "InsufficientResources")
        assert str(target.pool.mount) in failed["error"]["message"]
    finally:
        filler.unlink()


# -- evacuation ------------------------------------------------------------------------------


def test_evacuate_moves_every_machine_off_the_node_and_leaves_it_empty(
        cloud: MigrationCloud) -> None:
    node = cloud.nodes[1]
    others = {m["uuid"] for m in cloud.api.get("/ops/machines")
              if m["server_uuid"] == node.server and m["state"] != "destroyed"}
    assert others == set(), "earlier tests left machines on the node"
    machines = [with_macs(cloud, cloud.place(f"evac{i}", node)) for i in range(3)]
    cloud.act(machines[2]["uuid"], action="stop")  # a stopped one moves without a start
    before = {m["uuid"]: cloud.identity(m["uuid"]) for m in machines[:2]}
    started = time.monotonic()
    done = cloud.sdc("server", "evacuate", node.server, "--parallel", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    for machine in machines:
        assert machine["uuid"] in done.stdout
    print(f"evacuation of 3 machines: {time.monotonic() - started:.1f} s")
    server = cloud.api.get(f"/ops/servers/{node.server}")
    assert server["maintenance"] is True and server["machine_count"] == 0
    for machine in machines:
        state = "stopped" if machine is machines[2] else "running"
        assert_only_on(cloud, machine, cloud.nodes[0], state)
        assert cloud.holds(node, machine) == []
    for uuid, identity in before.items():
        assert cloud.identity(uuid) == identity
    # the stopped one moved without a stop or a start: no downtime to speak of
    assert cloud.migration(machines[2]["uuid"])["was_running"] is False
    cloud.wait_doctor_clean()
