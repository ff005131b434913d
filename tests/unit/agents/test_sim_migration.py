"""Two sim nodes move a machine between them over the real node-to-node stream (a listener on
127.0.0.1, one-time tokens): the hidden copy, full and incremental syncs of a simulated size
at a simulated rate, progress events from both ends, activation, cleanup, and what each end
refuses."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agents import migration_stream
from agents.backends.base import BackendError, InsufficientResources
from agents.backends.migration_progress import ProgressSink
from agents.backends.sim import SimBackend
from agents.backends.sim_migration import INCREMENT_SHARE, MIB
from schemas.agent import MachineStatusSchema
from schemas.migrations import MigrationProgressSchema, MigrationSendSchema
from schemas.nics import NicSpecSchema

#: MB/s: a 64 MiB disk's full stream (6.4 MiB) takes about 0.07 s
RATE = 100.0


@pytest.fixture(autouse=True)
def loopback_listener() -> Iterator[None]:
    migration_stream.configure("127.0.0.1")
    yield
    migration_stream.stop()


class Events(list[dict[str, Any]]):
    """Progress events as the agent would send them (each checked against the schema)."""

    def __call__(self, event: Mapping[str, Any]) -> None:
        assert MigrationProgressSchema().validate(dict(event)) == {}, event
        self.append(dict(event))


def node(tmp_path: Path, name: str, events: ProgressSink | None = None,
         **kw: Any) -> SimBackend:
    options: dict[str, Any] = {"ram_mb": 4096, "pool_size_mb": 10_000, **kw}
    return SimBackend(str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), name,
                      state_path=tmp_path / f"{name}.json", transfer_mbps=RATE,
                      migration_progress=events, **options)


def nic(index: int) -> dict[str, Any]:
    loaded: dict[str, Any] = NicSpecSchema().load({
        "mac": f"90:b8:d0:00:01:{index:02x}", "interface": f"net{index}", "nic_tag": "admin",
        "ips": [f"10.88.1.{10 + index}/24"], "primary": index == 0})
    return loaded


@pytest.fixture
def image() -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "name": "base", "version": "1", "size_mb": 100}


@pytest.fixture
def spec(image: dict[str, Any]) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "alias": "web0", "image_uuid": image["uuid"],
            "ram_mb": 512, "disk_mb": 64, "nics": [nic(0), nic(1)],
            "tags": {"role": "web"}}


class Move:
    """One migration of ``spec``'s machine from ``source`` to ``target``: each sync as the
    head node drives it (a receive offered on the target, then the send on the source)."""

    def __init__(self, source: SimBackend, target: SimBackend, spec: dict[str, Any]) -> None:
        self.source, self.target, self.spec = source, target, spec
        self.uuid = spec["uuid"]
        self.migration_uuid = str(uuid.uuid4())

    def params(self, snapshot: str, parent: str | None) -> dict[str, Any]:
        return {"uuid": self.uuid, "migration_uuid": self.migration_uuid,
                "token": secrets.token_urlsafe(32), "snapshot": snapshot, "parent": parent}

    def sync(self, number: int, token: str | None = None) -> dict[str, Any]:
        params = self.params(f"migration-{number}",
                             f"migration-{number - 1}" if number > 1 else None)
        offered = self.target.migration_receive(params)
        sent = {**params, "url": offered["url"], "token": token or params["token"]}
        assert MigrationSendSchema().validate(sent) == {}
        return self.source.migration_send(sent)


@pytest.fixture
def pair(tmp_path: Path, image: dict[str, Any],
         spec: dict[str, Any]) -> tuple[SimBackend, SimBackend, Events]:
    events = Events()
    source, target = node(tmp_path, "cn1", events), node(tmp_path, "cn2", events)
    source.image_ensure_present(image)
    source.machine_create(spec)
    return source, target, events


def shown(backend: SimBackend) -> list[str]:
    return [m["uuid"] for m in backend.list_machines()]


def test_a_machine_moves_with_its_nics_and_both_ends_report(
        pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any]) -> None:
    source, target, events = pair
    move = Move(source, target, spec)
    pool_before = target.status()["pool_used_mb"]
    copy = target.migration_target_prepare(move.migration_uuid, spec)
    assert MachineStatusSchema().validate(copy) == {}
    assert copy["state"] == "stopped" and [n["mac"] for n in copy["nics"]] == \
        [nic(0)["mac"], nic(1)["mac"]]
    # hidden: not reported, but it holds its room, and the node knows it
    assert shown(target) == [] and target.status()["machines"] == []
    assert target.status()["pool_used_mb"] == pool_before + spec["disk_mb"]
    assert target.machine_load(move.uuid)["state"] == "stopped"
    assert target.migration_target_prepare(move.migration_uuid, spec) == copy

    full = int(spec["disk_mb"] * MIB * 0.1)
    first = move.sync(1)
    assert first == {**first, "snapshot": "migration-1", "parent": None, "bytes": full,
                     "received_bytes": full}
    assert first["seconds"] >= full / (RATE * 1e6)
    # the machine runs: an increment carries what it wrote meanwhile
    second = move.sync(2)
    assert (second["parent"], second["bytes"]) == ("migration-1", int(full * INCREMENT_SHARE))
    assert move.target.migration_cleanup(move.uuid, move.migration_uuid, "migration-2") == \
        ["migration-1"]
    assert move.source.migration_cleanup(move.uuid, move.migration_uuid, "migration-2") == \
        ["migration-1"]

    # the switch: stopped, a last increment (it ran since migration-2), hidden, activated
    source.machine_stop(move.uuid)
    assert move.sync(3)["bytes"] == int(full * INCREMENT_SHARE)
    source.migration_hide(move.uuid, True)
    assert shown(source) == []
    active = target.migration_activate(move.uuid, move.migration_uuid, "migration-3")
    assert (active["state"], shown(target)) == ("stopped", [move.uuid])
    assert target.machine_start(move.uuid)["state"] == "running"
    # a redelivered activate leaves the running machine as it is
    assert target.migration_activate(move.uuid, move.migration_uuid,
                                     "migration-3")["state"] == "running"
    assert target.machine_nics(move.uuid) == source.machine_nics(move.uuid)
    assert target.migration_cleanup(move.uuid, move.migration_uuid, None) == \
        ["migration-2", "migration-3"]
    assert source.machine_destroy(move.uuid)["state"] == "destroyed"
    assert source.status()["machines"] == [] and source.migration_cleanup(
        move.uuid, move.migration_uuid, None) == []

    # one event per stream per side at least, the last one done, with the bytes of its stream
    for side in ("send", "receive"):
        last = {e["snapshot"]: e for e in events if e["side"] == side}
        assert sorted(last) == ["migration-1", "migration-2", "migration-3"]
        assert all(e["done"] and e["bytes"] == e["total"] for e in last.values())
        assert {e["server_uuid"] for e in events if e["side"] == side} == \
            {(source if side == "send" else target).server_uuid}


def test_a_stopped_machine_sends_empty_increments(
        pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any]) -> None:
    source, target, _ = pair
    source.machine_stop(spec["uuid"])
    move = Move(source, target, spec)
    target.migration_target_prepare(move.migration_uuid, spec)
    assert move.sync(1)["bytes"] > 0
    assert move.sync(2)["bytes"] == 0


def test_the_hidden_copy_and_its_snapshots_survive_a_restart(
        tmp_path: Path, pair: tuple[SimBackend, SimBackend, Events],
        spec: dict[str, Any]) -> None:
    source, target, _ = pair
    move = Move(source, target, spec)
    target.migration_target_prepare(move.migration_uuid, spec)
    move.sync(1)
    restarted = node(tmp_path, "cn2")
    assert shown(restarted) == [] and restarted.machine_load(move.uuid)["state"] == "stopped"
    assert restarted.migration_activate(move.uuid, move.migration_uuid,
                                        "migration-1")["state"] == "stopped"
    assert shown(node(tmp_path, "cn2")) == [move.uuid]


def test_a_hidden_machine_stays_down_across_a_restart(
        tmp_path: Path, pair: tuple[SimBackend, SimBackend, Events],
        spec: dict[str, Any]) -> None:
    source, _, _ = pair
    source.machine_stop(spec["uuid"])
    source.migration_hide(spec["uuid"], True)
    again = node(tmp_path, "cn1")
    assert shown(again) == [] and again.machine_load(spec["uuid"])["state"] == "stopped"
    with pytest.raises(BackendError) as exc:
        again.machine_start(spec["uuid"])
    assert exc.value.code == "InvalidState"
    again.migration_hide(spec["uuid"], False)
    assert shown(again) == [spec["uuid"]]
    assert again.machine_start(spec["uuid"])["state"] == "running"


def test_a_stream_goes_only_into_a_prepared_hidden_copy(
        pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any]) -> None:
    source, target, _ = pair
    move = Move(source, target, spec)
    # the source's own, visible machine is never written over
    with pytest.raises(BackendError) as exc:
        source.migration_receive(move.params("migration-1", None))
    assert exc.value.code == "MigrationNotPrepared"
    target.migration_target_prepare(move.migration_uuid, spec)
    other = Move(source, target, spec)  # another migration of the same machine
    with pytest.raises(BackendError) as exc:
        target.migration_receive(other.params("migration-1", None))
    assert exc.value.code == "MigrationNotPrepared"
    # an increment onto a snapshot the target has not received
    with pytest.raises(BackendError) as exc:
        target.migration_receive(move.params("migration-2", "migration-1"))
    assert exc.value.code == "SnapshotNotFound"
    with pytest.raises(BackendError) as exc:
        target.migration_activate(move.uuid, move.migration_uuid, "migration-1")
    assert exc.value.code == "SnapshotNotFound"
    assert shown(target) == []


def test_a_wrong_token_never_reaches_the_target(
        pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any]) -> None:
    source, target, _ = pair
    move = Move(source, target, spec)
    target.migration_target_prepare(move.migration_uuid, spec)
    with pytest.raises(BackendError) as exc:
        move.sync(1, token=secrets.token_urlsafe(32))
    assert exc.value.code == "NotAuthorized"
    with pytest.raises(BackendError) as exc:
        target.migration_activate(move.uuid, move.migration_uuid, "migration-1")
    assert exc.value.code == "SnapshotNotFound"


def test_an_increment_needs_its_parent_on_the_source(
        pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any]) -> None:
    source, target, _ = pair
    move = Move(source, target, spec)
    params = {**move.params("migration-2", "migration-1"),
              "url": "http://127.0.0.1:9/migrations/" + "a" * 32}
    with pytest.raises(BackendError) as exc:
        source.migration_send(params)
    assert exc.value.code == "SnapshotNotFound"


def test_faults_fail_migration_ops_and_the_stream(
        pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any]) -> None:
    source, target, _ = pair
    move = Move(source, target, spec)
    target.configure_faults(fail={"migration_target_prepare": "no room today"})
    with pytest.raises(BackendError) as exc:
        target.migration_target_prepare(move.migration_uuid, spec)
    assert (exc.value.code, exc.value.message) == ("InjectedFault", "no room today")
    target.configure_faults(fail={"migration_stream": "pool full"})
    target.migration_target_prepare(move.migration_uuid, spec)
    # the target's refusal reaches the source, and nothing was received
    with pytest.raises(BackendError) as exc:
        move.sync(1)
    assert (exc.value.code, exc.value.message) == ("InjectedFault", "pool full")
    target.configure_faults()
    with pytest.raises(BackendError):
        target.migration_activate(move.uuid, move.migration_uuid, "migration-1")
    assert move.sync(1)["received_bytes"] > 0  # the snapshot taken before is sent again


def test_the_target_copy_needs_room_not_the_image(
        tmp_path: Path, pair: tuple[SimBackend, SimBackend, Events],
        spec: dict[str, Any]) -> None:
    source, _, _ = pair
    small = node(tmp_path, "cn3", ram_mb=256)
    with pytest.raises(InsufficientResources):
        small.migration_target_prepare(str(uuid.uuid4()), spec)
    with pytest.raises(BackendError) as exc:
        node(tmp_path, "cn4", nic_tags={"external": None}).migration_target_prepare(
            str(uuid.uuid4()), spec)
    assert exc.value.code == "NicTagNotFound"
    assert node(tmp_path, "cn5").migration_target_prepare(
        str(uuid.uuid4()), spec)["state"] == "stopped"


def test_a_broker_that_takes_no_progress_does_not_stop_the_stream(
        tmp_path: Path, pair: tuple[SimBackend, SimBackend, Events], spec: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    source, _, _ = pair

    def broken(_event: Mapping[str, Any]) -> None:
        raise ConnectionError("broker away")

    target = node(tmp_path, "cn6", broken)
    move = Move(source, target, spec)
    target.migration_target_prepare(move.migration_uuid, spec)
    assert move.sync(1)["received_bytes"] > 0
    assert "progress event not sent: broker away" in caplog.text

