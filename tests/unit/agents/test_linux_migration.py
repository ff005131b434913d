"""Migration between two real Linux backends in one process, each on its own btrfs pool (loop
devices): btrfs send/receive through the real node-to-node stream, hidden copies, activation,
cleanup, a cut stream and a full pool."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agents import migration_stream, tasks
from agents.backends.base import BackendError
from agents.backends.host import cmd
from agents.backends.linux import LinuxBackend
from agents.backends.linux.migration import envelope, send_argv
from agents.backends.linux.storage import BtrfsStorage
from tests.support.btrfs import LoopPool, create_pool, destroy_pool
from tests.unit.agents.conftest import make_linux, spec_factory

MIB = 1 << 20


class Events(list[dict[str, Any]]):
    def __call__(self, event: Mapping[str, Any]) -> None:
        self.append(dict(event))


@pytest.fixture(scope="module")
def target_pool(btrfs_pool: LoopPool) -> Iterator[LoopPool]:
    pool = create_pool("mig-t", 1 << 30)  # short: socket paths live under it
    try:
        yield pool
    finally:
        destroy_pool(pool)


def _node(pool: LoopPool, events: Events, image_store_url: str = "") -> Iterator[LinuxBackend]:
    backend = make_linux(pool, image_store_url=image_store_url)
    backend.migration_progress = events
    try:
        yield backend
    finally:
        fresh = make_linux(pool)
        for record in fresh.records.all():  # hidden ones too
            fresh.machine_destroy(record["uuid"])


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def source(btrfs_pool: LoopPool, events: Events, image_store_url: str
           ) -> Iterator[LinuxBackend]:
    yield from _node(btrfs_pool, events, image_store_url)


@pytest.fixture
def target(target_pool: LoopPool, events: Events) -> Iterator[LinuxBackend]:
    yield from _node(target_pool, events)


@pytest.fixture
def machine(source: LinuxBackend, busybox_image: dict[str, Any]) -> dict[str, Any]:
    """A spec of a machine without NICs, created (running) on ``source``."""
    source.image_ensure_present(busybox_image)
    spec = spec_factory(busybox_image["uuid"], alias="mover", ram_mb=128, disk_mb=512)()
    source.machine_create(spec)
    return spec


def root(node: LinuxBackend, uuid_: str) -> Path:
    return node.storage.machine_root(uuid_)


def sync(source: LinuxBackend, target: LinuxBackend, spec: dict[str, Any], migration: str,
         snapshot: str, parent: str | None = None) -> dict[str, Any]:
    """One sync as the head node asks for it: the agent operations, their wire schemas."""
    params = {"uuid": spec["uuid"], "migration_uuid": migration,
              "token": secrets.token_urlsafe(32), "snapshot": snapshot, "parent": parent}
    with hosting_both(source, target):
        offered = agent_op("migration_receive", target, params)["receive"]
        return agent_op("migration_send", source, {**params, "url": offered["url"]})["sync"]


@contextlib.contextmanager
def hosting_both(*nodes: LinuxBackend) -> Iterator[None]:
    saved = dict(tasks.registry)
    tasks.registry.update({node.server_uuid: node for node in nodes})
    try:
        yield
    finally:
        tasks.registry.clear()
        tasks.registry.update(saved)


def agent_op(op: str, node: LinuxBackend, params: dict[str, Any]) -> dict[str, Any]:
    outcome = tasks.run_op(op, node.server_uuid, params)
    if not outcome["ok"]:
        raise BackendError(outcome["error"]["code"], outcome["error"]["message"])
    result: dict[str, Any] = outcome["result"]
    return result


def subvolumes_under(pool: LoopPool, where: str) -> list[str]:
    out = subprocess.run(["btrfs", "subvolume", "list", "-o", str(pool.mount / where)],
                         capture_output=True, text=True, check=False).stdout
    return [line.split(" path ", 1)[1] for line in out.splitlines() if " path " in line]


def write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.fixture(autouse=True)
def _stream_listener() -> Iterator[None]:
    migration_stream.configure("127.0.0.1")
    yield
    migration_stream.stop()


def test_a_running_machine_moves_with_what_it_wrote_between_syncs(
        source: LinuxBackend, target: LinuxBackend, machine: dict[str, Any], events: Events,
        btrfs_pool: LoopPool, target_pool: LoopPool) -> None:
    uuid_, migration = machine["uuid"], str(uuid.uuid4())
    source.snapshot_create(uuid_, "mine")  # a user's snapshot stays the user's
    first = write(root(source, uuid_) / "first.bin", 8 * MIB)

    with hosting_both(target):
        prepared = agent_op("migration_target_prepare", target,
                            {"migration_uuid": migration, "spec": machine})["machine"]
    assert prepared["state"] == "stopped"
    assert target.list_machines() == [] and target.status()["machines"] == []
    with pytest.raises(BackendError) as hidden_start:
        target.machine_start(uuid_)
    assert hidden_start.value.code == "InvalidState"

    full = sync(source, target, machine, migration, "migration-1")
    assert full["received_bytes"] == full["bytes"] > 8 * MIB
    second = write(root(source, uuid_) / "second.bin", MIB)  # the machine runs and writes
    source.machine_update_metadata({"uuid": uuid_, "set_customer_metadata": {"role": "db"},
                                    "set_tags": {"moved": True}})
    increment = sync(source, target, machine, migration, "migration-2", "migration-1")
    assert MIB < increment["bytes"] < full["bytes"] / 2
    # a redelivered receive of a snapshot the target has: answered at once, nothing sent
    again = sync(source, target, machine, migration, "migration-2", "migration-1")
    assert again["received_bytes"] == 0

    assert [s["name"] for s in source.snapshot_list(uuid_)] == ["mine"]
    # the first sync's clean-up, come late, leaves the second sync's snapshot alone
    assert target.migration_cleanup(uuid_, migration, "migration-1") == []
    assert target.migration_cleanup(uuid_, migration, "migration-2") == ["migration-1"]
    assert source.migration_cleanup(uuid_, migration, "migration-2") == ["migration-1"]

    # switch: stop, last increment, hide the source, activate the target
    with pytest.raises(BackendError) as running_hide:
        source.migration_hide(uuid_, True)
    assert running_hide.value.code == "InvalidState"
    source.machine_stop(uuid_)
    third = write(root(source, uuid_) / "third.bin", 4096)
    sync(source, target, machine, migration, "migration-3", "migration-2")
    source.migration_hide(uuid_, True)
    assert source.list_machines() == []
    with hosting_both(target):
        activated = agent_op("migration_activate", target, {
            "uuid": uuid_, "migration_uuid": migration, "snapshot": "migration-3"})["machine"]
    assert activated["state"] == "stopped"
    assert target.migration_activate(uuid_, migration, "migration-3")["state"] == "stopped"
    assert [m["uuid"] for m in target.list_machines()] == [uuid_]
    moved = root(target, uuid_)
    assert (moved / "first.bin").read_bytes() == first
    assert (moved / "second.bin").read_bytes() == second
    assert (moved / "third.bin").read_bytes() == third
    # the metadata as the guest left it, its change serial going on from the source's
    assert target.records.read_metadata(target.records.get(uuid_)) \
        == source.records.read_metadata(source.records.get(uuid_))
    assert target.records.read_metadata(target.records.get(uuid_))["serial"] == 1
    assert target.machine_start(uuid_)["state"] == "running"
    (moved / "after.txt").write_text("written on the target")  # its root is writable

    # both ends reported each stream, and its end
    finals = [(e["side"], e["snapshot"]) for e in events if e["done"]]
    for snapshot in ("migration-1", "migration-2", "migration-3"):
        assert ("send", snapshot) in finals and ("receive", snapshot) in finals
    assert all(e["server_uuid"] in (source.server_uuid, target.server_uuid) for e in events)

    # finalize: the hidden source copy goes with everything of its migration
    source.machine_destroy(uuid_)
    assert not (btrfs_pool.mount / "migrations" / uuid_).exists()
    assert not root(source, uuid_).exists()
    assert target.migration_cleanup(uuid_, migration, None) == ["migration-2", "migration-3"]
    assert not (target_pool.mount / "migrations" / uuid_).exists()
    assert (moved / "third.bin").read_bytes() == third


def test_a_cut_stream_leaves_no_partial_subvolume_and_a_new_try_works(
        source: LinuxBackend, target: LinuxBackend, machine: dict[str, Any],
        target_pool: LoopPool) -> None:
    uuid_, migration = machine["uuid"], str(uuid.uuid4())
    write(root(source, uuid_) / "data.bin", 8 * MIB)
    target.migration_target_prepare(migration, machine)
    token = secrets.token_urlsafe(32)
    params = {"uuid": uuid_, "migration_uuid": migration, "token": token,
              "snapshot": "migration-1", "parent": None}
    url = target.migration_receive(params)["url"]
    storage = source.storage
    assert isinstance(storage, BtrfsStorage)
    snapshot = storage.migration_snapshot_create(uuid_, migration, "migration-1")

    def dies_halfway() -> Iterator[bytes]:
        yield envelope({"serial": 0, "tags": {}, "customer_metadata": {}})
        sent = 0
        for chunk in cmd.stream_from(send_argv(snapshot, None)):
            yield chunk
            sent += len(chunk)
            if sent >= 4 * MIB:
                raise RuntimeError("the source died")

    with pytest.raises(RuntimeError):
        migration_stream.send_stream(url, token, dies_halfway(), lambda _n: None)
    # the target's receive runs in the listener's thread, under the machine's lock from
    # before it made the migration's directory to after it cleaned up
    wait_for((target_pool.mount / "migrations" / uuid_ / migration).is_dir)
    with target.records.machine(uuid_):
        pass
    assert subvolumes_under(target_pool, f"migrations/{uuid_}") == []
    with pytest.raises(BackendError) as missing:
        target.migration_activate(uuid_, migration, "migration-1")
    assert missing.value.code == "SnapshotNotFound"

    answer = sync(source, target, machine, migration, "migration-1")
    assert answer["received_bytes"] == answer["bytes"]
    assert [Path(p).name for p in subvolumes_under(target_pool, f"migrations/{uuid_}")] \
        == ["migration-1"]

    # an agent killed mid-receive leaves a writable subvolume, or a read-only one (btrfs
    # receive ends a stream cut at a command boundary as if whole): the next agent removes both
    partial, ended = (target_pool.mount / "migrations" / uuid_ / migration / f"migration-{n}"
                      for n in (2, 3))
    for path in (partial, ended):
        subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True,
                       capture_output=True)
    subprocess.run(["btrfs", "property", "set", "-ts", str(ended), "ro", "true"], check=True,
                   capture_output=True)
    make_linux(target_pool)
    assert [Path(p).name for p in subvolumes_under(target_pool, f"migrations/{uuid_}")] \
        == ["migration-1"]


@pytest.fixture(scope="module")
def small_pool(btrfs_pool: LoopPool) -> Iterator[LoopPool]:
    pool = create_pool("mig-s", 160 * MIB)
    try:
        yield pool
    finally:
        destroy_pool(pool)


@pytest.fixture
def small(small_pool: LoopPool, events: Events) -> Iterator[LinuxBackend]:
    yield from _node(small_pool, events)


def test_a_full_target_pool_is_insufficient_resources_and_leaves_nothing(
        source: LinuxBackend, machine: dict[str, Any], small_pool: LoopPool,
        small: LinuxBackend) -> None:
    uuid_, migration = machine["uuid"], str(uuid.uuid4())
    write(root(source, uuid_) / "big.bin", 96 * MIB)  # 79 MiB free
    small.migration_target_prepare(migration, machine)
    with pytest.raises(BackendError) as full:
        sync(source, small, machine, migration, "migration-1")
    assert full.value.code == "InsufficientResources"
    assert str(small_pool.mount) in full.value.message
    assert subvolumes_under(small_pool, f"migrations/{uuid_}") == []
    # the aborted copy goes whole
    small.machine_destroy(uuid_)
    assert not (small_pool.mount / "migrations" / uuid_).exists()
    assert small.records.find(uuid_) is None


def test_receive_refuses_what_is_not_its_migration(
        source: LinuxBackend, target: LinuxBackend, machine: dict[str, Any]) -> None:
    uuid_, migration = machine["uuid"], str(uuid.uuid4())
    params = {"uuid": uuid_, "migration_uuid": migration, "token": secrets.token_urlsafe(32),
              "snapshot": "migration-1", "parent": None}
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: target.migration_receive(params), "MachineNotFound"),
        # the source's own (shown) machine is no migration target
        (lambda: source.migration_receive(params), "InvalidState"),
        (lambda: target.migration_activate(uuid_, migration, "migration-1"), "MachineNotFound"),
    ]
    for call, code in cases:
        with pytest.raises(BackendError) as refused:
            call()
        assert refused.value.code == code
    target.migration_target_prepare(migration, machine)
    with pytest.raises(BackendError) as no_parent:
        target.migration_receive({**params, "snapshot": "migration-2", "parent": "migration-1"})
    assert no_parent.value.code == "SnapshotNotFound"
    with pytest.raises(BackendError) as no_root:
        target.migration_hide(uuid_, False)
    assert no_root.value.code == "InvalidState"
    # a stream that is no Linux node's: refused, nothing made
    url = target.migration_receive(params)["url"]
    with pytest.raises(BackendError) as garbage:
        migration_stream.send_stream(url, params["token"], iter([b"garbage" * 1000]),
                                     lambda _n: None)
    assert garbage.value.code == "MigrationStreamInvalid"
    assert not (target.storage.pool / "migrations" / uuid_ / migration / "migration-1").exists()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)

