"""SmartOS migration by contract: two SmartOS backends, each on its own fake global zone
(smartos_host.py, smartos_zfs_fake.py), move a zone over the real node-to-node stream on
127.0.0.1 -- the exact zfs and vmadm argument lists, the payloads checked against vmadm's
property table, a cut receive resumed with ``zfs send -t``, a full pool -- and the streaming
seam itself with real processes."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agents import migration_stream
from agents.backends.base import BackendError
from agents.backends.host.cmd import (
    Completed,
    HostCommandError,
    Streaming,
    stream_from,
    stream_into,
    use_runner,
    use_streamer,
)
from agents.backends.smartos import SmartOSBackend
from schemas.migrations import MigrationProgressSchema, MigrationSendSchema
from tests.unit.agents.smartos_host import FakeSmartOS
from tests.unit.agents.smartos_zfs_fake import PAYLOAD, stream_of
from tests.unit.agents.test_smartos import spec, with_image
from tests.unit.agents.test_vmadm_contract import problems


class TwoNodes:
    """Routes host commands to two fake global zones: those of the test's own thread to the
    node it is acting on (:meth:`on`), those of the stream listener's threads (the target's
    receive) to the target."""

    def __init__(self) -> None:
        self.source, self.target = FakeSmartOS(), FakeSmartOS()
        self._acting = self.source
        self._main = threading.current_thread()

    def _fake(self) -> FakeSmartOS:
        return self._acting if threading.current_thread() is self._main else self.target

    def __call__(self, argv: Any, input: bytes | None, timeout: float,
                 output: Path | None) -> Completed:
        return self._fake()(argv, input, timeout, output)

    def stream(self, argv: Any, pipe_stdin: bool, pipe_stdout: bool) -> Streaming:
        return self._fake().stream(argv, pipe_stdin, pipe_stdout)

    @contextlib.contextmanager
    def on(self, fake: FakeSmartOS) -> Iterator[None]:
        saved, self._acting = self._acting, fake
        try:
            yield
        finally:
            self._acting = saved


class Events(list[dict[str, Any]]):
    def __call__(self, event: Mapping[str, Any]) -> None:
        assert MigrationProgressSchema().validate(dict(event)) == {}, event
        self.append(dict(event))


@pytest.fixture
def nodes() -> Iterator[TwoNodes]:
    both = TwoNodes()
    migration_stream.configure("127.0.0.1")
    with use_runner(both), use_streamer(both.stream):
        yield both
    migration_stream.stop()


class Pair:
    def __init__(self, nodes: TwoNodes, tmp_path: Path) -> None:
        self.nodes = nodes
        self.events = Events()
        self.source = SmartOSBackend(str(uuid.uuid4()), tmp_path / "cn1",
                                     migration_progress=self.events)
        self.target = SmartOSBackend(str(uuid.uuid4()), tmp_path / "cn2",
                                     migration_progress=self.events)
        with_image(nodes.source)
        with_image(nodes.target)
        self.spec = spec(disk_mb=10240)
        self.uuid = self.spec["uuid"]
        self.migration_uuid = str(uuid.uuid4())
        with nodes.on(nodes.source):
            self.source.machine_create(self.spec)

    def params(self, number: int) -> dict[str, Any]:
        return {"uuid": self.uuid, "migration_uuid": self.migration_uuid,
                "token": secrets.token_urlsafe(32), "snapshot": f"migration-{number}",
                "parent": f"migration-{number - 1}" if number > 1 else None}

    def prepare(self) -> dict[str, Any]:
        with self.nodes.on(self.nodes.target):
            return self.target.migration_target_prepare(self.migration_uuid, self.spec)

    def receive(self, number: int) -> tuple[dict[str, Any], dict[str, Any]]:
        params = self.params(number)
        with self.nodes.on(self.nodes.target):
            return params, self.target.migration_receive(params)

    def sync(self, number: int) -> dict[str, Any]:
        params, offer = self.receive(number)
        sent = MigrationSendSchema().load({**params, "url": offer["url"],
                                           "resume_token": offer["resume_token"]})
        with self.nodes.on(self.nodes.source):
            return self.source.migration_send(sent)


@pytest.fixture
def pair(nodes: TwoNodes, tmp_path: Path) -> Pair:
    return Pair(nodes, tmp_path)


def updates(fake: FakeSmartOS, vm: str) -> list[dict[str, Any]]:
    return [json.loads(data or b"") for argv, data in fake.calls
            if argv == ("vmadm", "update", vm)]


def zfs_changes(fake: FakeSmartOS) -> list[tuple[str, ...]]:
    return [argv for argv, _ in fake.calls
            if argv[0] == "zfs" and argv[1] not in ("list", "get")]


def test_a_zone_moves_by_zfs_send_and_receive(pair: Pair, nodes: TwoNodes) -> None:
    vm, dataset = pair.uuid, f"zones/{pair.uuid}"
    copy = pair.prepare()
    # the hidden copy: the machine's own payload, out of inventory, not booted
    create = next(json.loads(data or b"") for argv, data in nodes.target.calls
                  if argv == ("vmadm", "create"))
    assert (create["uuid"], create["do_not_inventory"], create["autoboot"]) == (vm, True, False)
    assert problems(create, create["brand"], "create", image_type="zone-dataset") == []
    assert copy["state"] == "stopped"
    with nodes.on(nodes.target):
        assert pair.target.list_machines() == []
        assert pair.target.status()["machines"] == []
        assert pair.target.migration_target_prepare(pair.migration_uuid, pair.spec) == copy
    assert zfs_changes(nodes.target) == []

    first = pair.sync(1)
    whole = len(stream_of(f"{dataset}@migration-1"))
    assert first == {**first, "snapshot": "migration-1", "parent": None, "bytes": whole,
                     "received_bytes": whole}
    second = pair.sync(2)
    assert (second["parent"], second["bytes"]) == ("migration-1", whole)
    assert zfs_changes(nodes.source) == [
        ("zfs", "snapshot", f"{dataset}@migration-1"),
        ("zfs", "send", "-n", "-P", f"{dataset}@migration-1"),
        ("zfs", "send", f"{dataset}@migration-1"),
        ("zfs", "snapshot", f"{dataset}@migration-2"),
        ("zfs", "send", "-n", "-P", "-I", "@migration-1", f"{dataset}@migration-2"),
        ("zfs", "send", "-I", "@migration-1", f"{dataset}@migration-2"),
    ]
    # the first stream replaces the dataset vmadm made; the increment goes onto it
    receive = ("zfs", "receive", "-u", "-s", "-F", "-x", "encryption", dataset)
    assert zfs_changes(nodes.target) == [("zfs", "destroy", "-f", "-r", dataset), receive,
                                         receive]
    assert nodes.target.zfs.snapshots[dataset] == ["migration-1", "migration-2"]

    for fake, backend in ((nodes.source, pair.source), (nodes.target, pair.target)):
        with nodes.on(fake):
            assert backend.migration_cleanup(vm, pair.migration_uuid, "migration-2") == \
                ["migration-1"]
        assert zfs_changes(fake)[-1] == ("zfs", "destroy", f"{dataset}@migration-1")

    # the switch: the source hidden, the copy shown with its quota back
    with nodes.on(nodes.source):
        pair.source.machine_stop(vm)
        pair.source.migration_hide(vm, True)
        assert pair.source.list_machines() == []
    with nodes.on(nodes.target):
        active = pair.target.migration_activate(vm, pair.migration_uuid, "migration-2")
        assert active["state"] == "stopped"
        assert [m["uuid"] for m in pair.target.list_machines()] == [vm]
        # redelivered: the machine as it is
        assert pair.target.migration_activate(vm, pair.migration_uuid, "migration-2") == active
    assert updates(nodes.source, vm) == [{"do_not_inventory": True, "autoboot": False}]
    assert updates(nodes.target, vm) == [{"do_not_inventory": False, "quota": 10}]
    for payload in updates(nodes.source, vm) + updates(nodes.target, vm):
        assert problems(payload, create["brand"], "update") == []

    # both ends reported each stream, the last event done
    for side, server in (("send", pair.source.server_uuid), ("receive", pair.target.server_uuid)):
        done = [e for e in pair.events if e["side"] == side and e["done"]]
        assert [e["snapshot"] for e in done] == ["migration-1", "migration-2"]
        assert {e["server_uuid"] for e in done} == {server}
        assert all(e["bytes"] == whole for e in done)


def test_a_snapshot_received_before_is_answered_at_once(pair: Pair, nodes: TwoNodes) -> None:
    """A redelivered sync: the target answers before reading, and receives nothing again."""
    pair.prepare()
    pair.sync(1)
    receives = len([a for a in nodes.target.argvs("zfs") if a[1] == "receive"])
    again = pair.sync(1)
    assert (again["snapshot"], again["received_bytes"]) == ("migration-1", 0)
    assert len([a for a in nodes.target.argvs("zfs") if a[1] == "receive"]) == receives
    assert nodes.target.zfs.snapshots[f"zones/{pair.uuid}"] == ["migration-1"]


def test_a_cut_receive_is_resumed_with_send_t(pair: Pair, nodes: TwoNodes) -> None:
    dataset = f"zones/{pair.uuid}"
    pair.prepare()
    with nodes.on(nodes.source):
        nodes.source.zfs.snapshot(f"{dataset}@migration-1")
    params, offer = pair.receive(1)
    assert offer["resume_token"] is None
    whole = stream_of(f"{dataset}@migration-1")

    def cut() -> Iterator[bytes]:
        yield whole[: len(whole) // 2]
        raise ConnectionResetError("the source died")

    with pytest.raises(ConnectionResetError):
        migration_stream.send_stream(offer["url"], params["token"], cut(), lambda _n: None)
    # the target kept what came (once its receive saw the cut), and says where to go on from
    deadline = time.monotonic() + 10
    while dataset not in nodes.target.zfs.partial and time.monotonic() < deadline:
        time.sleep(0.02)
    params, offer = pair.receive(1)
    token = offer["resume_token"]
    assert token and token == nodes.target.zfs.partial[dataset][0]
    sent = MigrationSendSchema().load({**params, "url": offer["url"], "resume_token": token})
    with nodes.on(nodes.source):
        answer = pair.source.migration_send(sent)
    assert ("zfs", "send", "-t", token) in nodes.source.argvs("zfs")
    assert answer["received_bytes"] == len(whole) - len(whole) // 2 == answer["bytes"]
    assert nodes.target.zfs.snapshots[dataset] == ["migration-1"]
    assert dataset not in nodes.target.zfs.partial


def test_a_new_stream_onto_a_cut_one_drops_it_for_the_next_sync(
        pair: Pair, nodes: TwoNodes) -> None:
    dataset = f"zones/{pair.uuid}"
    pair.prepare()
    nodes.target.zfs.partial[dataset] = ("1-00-10-00", stream_of(f"{dataset}@migration-1")[:400])
    with pytest.raises(BackendError) as exc:
        _send_without_resuming(pair)
    assert exc.value.code == "MigrationResumeDropped"
    assert ("zfs", "receive", "-A", dataset) in nodes.target.argvs("zfs")
    assert pair.sync(1)["received_bytes"] > 0


def _send_without_resuming(pair: Pair) -> dict[str, Any]:
    params, offer = pair.receive(1)
    with pair.nodes.on(pair.nodes.source):
        return pair.source.migration_send({**params, "url": offer["url"]})


def test_a_full_pool_fails_the_stream_with_insufficient_resources(
        pair: Pair, nodes: TwoNodes) -> None:
    pair.prepare()
    nodes.target.zfs.full = True
    with pytest.raises(BackendError) as exc:
        pair.sync(1)
    assert exc.value.code == "InsufficientResources"
    assert "pool zones" in exc.value.message and "out of space" in exc.value.message
    assert nodes.target.zfs.snapshots.get(f"zones/{pair.uuid}", []) == []


def test_a_stream_goes_only_into_a_prepared_hidden_copy(pair: Pair, nodes: TwoNodes) -> None:
    # the source's own zone is no target
    with nodes.on(nodes.source), pytest.raises(BackendError) as exc:
        pair.source.migration_receive(pair.params(1))
    assert exc.value.code == "MigrationNotPrepared"
    pair.prepare()
    with nodes.on(nodes.target):
        with pytest.raises(BackendError) as exc:
            pair.target.migration_receive({**pair.params(1), "migration_uuid": str(uuid.uuid4())})
        assert exc.value.code == "MigrationNotPrepared"
        with pytest.raises(BackendError) as exc:
            pair.target.migration_receive(pair.params(2))
        assert exc.value.code == "SnapshotNotFound"
        with pytest.raises(BackendError) as exc:
            pair.target.migration_activate(pair.uuid, pair.migration_uuid, "migration-1")
        assert exc.value.code == "SnapshotNotFound"
    assert [argv for argv in nodes.target.argvs("zfs") if argv[1] == "receive"] == []


def test_destroying_the_hidden_copy_forgets_it(pair: Pair, nodes: TwoNodes,
                                               tmp_path: Path) -> None:
    pair.prepare()
    with nodes.on(nodes.target):
        assert pair.target.machine_destroy(pair.uuid)["state"] == "destroyed"
        assert pair.target.migration_cleanup(pair.uuid, pair.migration_uuid, None) == []
    assert list((tmp_path / "cn2" / "migrations").iterdir()) == []


# -- the streaming seam, with real processes ---------------------------------------------------


def stand_in(tmp_path: Path, name: str, body: str) -> str:
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_stream_from_a_command_is_its_stdout_and_its_failure_comes_last(
        tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: more than one chunk
    talker = stand_in(tmp_path, "send", "sys.stdout.buffer.write(bytes(range(256)) * 8192)\n"
                                         "sys.stderr.write('warning\\n')")
    assert b"".join(stream_from([talker])) == data
    failing = stand_in(tmp_path, "fail", "sys.stdout.buffer.write(b'part')\n"
                                         "sys.stderr.write('cannot send\\n')\nsys.exit(1)")
    pieces: list[bytes] = []
    with pytest.raises(HostCommandError) as exc:
        pieces.extend(stream_from([failing]))
    assert pieces == [b"part"] and "cannot send" in exc.value.message


def test_a_stream_into_a_command_feeds_its_stdin_and_a_cut_ends_it(tmp_path: Path) -> None:
    out = tmp_path / "received"
    receiver = stand_in(tmp_path, "receive",
                        f"data = sys.stdin.buffer.read()\nopen({str(out)!r}, 'wb').write(data)")
    stream_into([receiver], io.BytesIO(PAYLOAD))
    assert out.read_bytes() == PAYLOAD

    class Cut(io.RawIOBase):
        sent = False

        def read(self, size: int = -1, /) -> bytes:
            if self.sent:
                raise ConnectionResetError("cut")
            self.sent = True
            return b"first half"

    with pytest.raises(ConnectionResetError):
        stream_into([receiver], Cut())
    # the command saw its stdin end where the stream broke, and exited
    assert out.read_bytes() == b"first half"
