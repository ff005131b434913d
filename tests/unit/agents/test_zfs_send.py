"""``zfs send`` through the real subprocess runner, with a stand-in ``zfs`` on PATH that
writes a stream to stdout and a warning to stderr, as zfs does (e.g. about a property it
cannot send): the stream file must hold the stream only, and a failure must carry the
warning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agents.backends.host import zfs
from agents.backends.host.cmd import HostCommandError

STREAM = bytes(range(256)) * 4  # binary, as a stream is


def stand_in_zfs(bin_dir: Path, exit_code: int) -> None:
    bin_dir.mkdir()
    script = bin_dir / "zfs"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.stdout.buffer.write({STREAM!r})\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('warning: cannot send some property\\n')\n"
        f"sys.exit({exit_code})\n")
    script.chmod(0o755)


def test_the_stream_file_holds_stdout_only(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_zfs(tmp_path / "bin", 0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}")
    out = tmp_path / "image.zfs"
    out.write_bytes(b"left over from an earlier try")
    zfs.send("zones/vm@image", out)
    assert out.read_bytes() == STREAM


def test_a_failed_send_says_what_zfs_said(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_zfs(tmp_path / "bin", 1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}")
    with pytest.raises(HostCommandError) as exc:
        zfs.send("zones/vm@image", tmp_path / "image.zfs")
    assert "cannot send some property" in exc.value.message
    assert b"warning" not in (tmp_path / "image.zfs").read_bytes()
