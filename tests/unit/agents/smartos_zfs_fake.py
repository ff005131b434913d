"""The datasets of the fake SmartOS global zone (smartos_host.py) as a migration uses them:
snapshots, properties, send streams read as zfs writes them and receives fed as the data
comes (through the streaming seam, ``agents.backends.host.cmd.use_streamer``).

Facts, from the zfs(8) man pages of OpenZFS and illumos: ``zfs send -nP`` prints
tab-separated lines, ``full``/``incremental`` then ``size\tBYTES``; ``zfs receive -s`` of a
stream cut short fails ("checksum mismatch or incomplete stream. Partially received snapshot
is saved. A resuming stream can be generated on the sending system by running: zfs send -t
TOKEN") and leaves ``receive_resume_token`` set on the dataset (``zfs get`` prints ``-``
when none); a new stream into a dataset holding such a partial receive fails ("destination
... contains partially-complete state from "zfs receive -s"") until ``zfs receive -A``
drops it; a pool without room fails the receive ("out of space").

What is not zfs: a stream here is a DRR_BEGIN record naming its snapshot
(tests/support/zfs_stream.py), a payload, and a DRR_END record; a resuming stream is simply
the bytes the cut one lacked.
"""

from __future__ import annotations

import io
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

from agents.backends.host.cmd import Completed
from tests.support.zfs_stream import RECORD_BYTES, is_zfs_stream, zfs_stream

#: the payload of every fake stream: more than one streaming chunk (1 MiB)
PAYLOAD = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
NAME_AT = 56  # drr_toname's offset in DRR_BEGIN


def stream_of(snapshot: str) -> bytes:
    whole = zfs_stream(snapshot)
    return whole[:RECORD_BYTES] + PAYLOAD + whole[RECORD_BYTES:]


def _complete(data: bytes) -> bool:
    return len(data) >= 2 * RECORD_BYTES and \
        struct.unpack_from("<I", data, len(data) - RECORD_BYTES)[0] == 5


def _toname(data: bytes) -> str:
    return data[NAME_AT:RECORD_BYTES].split(b"\0", 1)[0].decode()


@dataclass
class FakeZfs:
    #: dataset -> its snapshots' names (after the @), oldest first
    snapshots: dict[str, list[str]] = field(default_factory=dict)
    #: (dataset, property) -> value set with ``zfs set``
    properties: dict[tuple[str, str], str] = field(default_factory=dict)
    #: dataset -> (its resume token, the bytes of the cut receive)
    partial: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    #: a receive fails for want of room (a full pool)
    full: bool = False
    #: zones' datasets destroyed (until a full receive makes them again)
    gone: set[str] = field(default_factory=set)

    def snapshot(self, name: str) -> None:
        dataset, snap = name.split("@", 1)
        self.snapshots.setdefault(dataset, []).append(snap)

    def destroy(self, name: str) -> None:
        if "@" in name:
            dataset, snap = name.split("@", 1)
            have = self.snapshots.get(dataset, [])
            if snap in have:
                have.remove(snap)
        else:
            self.gone.add(name)
            self.snapshots.pop(name, None)
            self.partial.pop(name, None)

    def exists(self, name: str) -> bool:
        dataset, _, snap = name.partition("@")
        return snap in self.snapshots.get(dataset, [])

    def get(self, args: list[str]) -> str:
        prop, dataset = args[-2], args[-1]
        if prop == "receive_resume_token":
            return (self.partial[dataset][0] if dataset in self.partial else "-") + "\n"
        return self.properties.get((dataset, prop), "-") + "\n"

    def set(self, args: list[str]) -> str:
        prop, _, value = args[0].partition("=")
        self.properties[(args[1], prop)] = value
        return ""

    def abort_receive(self, dataset: str) -> str:
        if self.partial.pop(dataset, None) is None:
            raise LookupError(f"'{dataset}' does not have any resumable receive state to abort")
        return ""

    def dry_run(self, args: list[str]) -> str:
        """``zfs send -n -P ...``: what would be sent, its size last."""
        if args[0] == "-t":
            name, offset = self._resumed(args[1])
            return f"full\t{name}\t{len(stream_of(name)) - offset}\nsize\t" \
                   f"{len(stream_of(name)) - offset}\n"
        name = args[-1]
        self._check_snapshot(name)
        size = len(stream_of(name))
        kind = f"incremental\t{args[1]}" if args[0] == "-I" else "full"
        return f"{kind}\t{name}\t{size}\nsize\t{size}\n"

    # -- streams --------------------------------------------------------------------------

    def start(self, args: list[str], pipe_stdin: bool, pipe_stdout: bool) -> FakeStream:
        if args[0] == "send" and pipe_stdout:
            return FakeStream(self, args, io.BytesIO(self._send(args[1:])))
        if args[:4] == ["receive", "-u", "-s", "-F"] and pipe_stdin:
            return FakeStream(self, args, None)
        raise LookupError(f"fake zfs: no streaming {args}")

    def _send(self, args: list[str]) -> bytes:
        if args[0] == "-t":
            name, offset = self._resumed(args[1])
            return stream_of(name)[offset:]
        self._check_snapshot(args[-1])
        if args[0] == "-I":
            self._check_snapshot(args[-1].split("@", 1)[0] + args[1])
        return stream_of(args[-1])

    def _check_snapshot(self, name: str) -> None:
        if not self.exists(name):
            raise LookupError(f"cannot open '{name}': dataset does not exist")

    def _resumed(self, token: str) -> tuple[str, int]:
        """A token the fake made (it names its snapshot and offset, as zfs's do)."""
        _, name_hex, offset, _ = token.split("-", 3)
        return bytes.fromhex(name_hex).decode(), int(offset, 16)

    def receive(self, dataset: str, data: bytes) -> tuple[int, str]:
        if self.full:
            return 1, "cannot receive new filesystem stream: out of space\n"
        if dataset in self.partial:
            if is_zfs_stream(data):
                return 1, (f"cannot receive new filesystem stream: destination {dataset} "
                           f"contains partially-complete state from \"zfs receive -s\".\n")
            data = self.partial.pop(dataset)[1] + data
        if not is_zfs_stream(data):
            return 1, "cannot receive: invalid stream (bad magic number)\n"
        name = _toname(data)
        if not _complete(data):
            token = f"1-{name.encode().hex()}-{len(data):x}-{secrets.token_hex(8)}"
            self.partial[dataset] = (token, data)
            return 1, ("cannot receive new filesystem stream: checksum mismatch or incomplete "
                       "stream.\nPartially received snapshot is saved.\nA resuming stream can "
                       f"be generated on the sending system by running:\n    zfs send -t "
                       f"{token}\n")
        self.snapshots.setdefault(dataset, []).append(name.split("@", 1)[1])
        self.gone.discard(dataset)
        return 0, ""


class FakeStream:
    """A started ``zfs send`` (its stdout ready) or ``zfs receive`` (its stdin taken in)."""

    def __init__(self, zfs: FakeZfs, args: list[str], stdout: io.BytesIO | None) -> None:
        self._zfs, self._args = zfs, args
        self.stdout: Any = stdout
        self.stdin: Any = io.BytesIO() if stdout is None else None
        self.killed = False

    def wait(self, timeout: float) -> Completed:
        argv = ("zfs", *self._args)
        if self.stdin is None:
            return Completed(argv, 0, "", "")
        code, said = self._zfs.receive(self._args[-1], self.stdin.getvalue())
        return Completed(argv, code, "", said)

    def kill(self) -> None:
        self.killed = True
