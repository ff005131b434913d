"""The busybox image builder, on the machine's real busybox-static."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from headnode.imagebuild import (
    APPLETS,
    DEFAULT_BUSYBOX,
    BuildError,
    build_busybox_image,
    is_static_elf,
)

pytestmark = pytest.mark.skipif(not DEFAULT_BUSYBOX.is_file(),
                                reason="busybox-static is not installed (make deps)")


def test_build_gives_a_rootfs_and_a_matching_manifest(tmp_path: Path) -> None:
    built = build_busybox_image(tmp_path)
    data = built.file_path.read_bytes()
    manifest = json.loads(built.manifest_path.read_text())
    assert manifest == built.manifest
    assert manifest["files"] == [{"sha256": hashlib.sha256(data).hexdigest(),
                                  "size": len(data), "compression": "gzip",
                                  "format": "tar"}]  # a rootfs tarball, for Linux nodes
    assert manifest["os"] == "linux" and manifest["name"] == "busybox"
    with tarfile.open(built.file_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["./bin/busybox"].isfile() and members["./bin/busybox"].mode == 0o755
        for applet in APPLETS:
            assert members[f"./bin/{applet}"].issym()
            assert members[f"./bin/{applet}"].linkname == "busybox"
        tar.extractall(tmp_path / "root", filter="tar")
    # the packed binary runs, and is the one it was built from
    out = subprocess.run([str(tmp_path / "root/bin/busybox"), "echo", "hi"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "hi\n"
    assert (tmp_path / "root/bin/busybox").read_bytes() == DEFAULT_BUSYBOX.read_bytes()


def test_build_is_reproducible(tmp_path: Path) -> None:
    one = build_busybox_image(tmp_path / "a")
    two = build_busybox_image(tmp_path / "b")
    assert one.file_path.read_bytes() == two.file_path.read_bytes()
    assert one.manifest["uuid"] == two.manifest["uuid"]


def test_a_dynamic_binary_is_refused(tmp_path: Path) -> None:
    dynamic = Path(shutil.which("ls") or "/bin/ls")
    assert not is_static_elf(dynamic)
    with pytest.raises(BuildError, match="static"):
        build_busybox_image(tmp_path, dynamic)
    with pytest.raises(BuildError, match="not found"):
        build_busybox_image(tmp_path, tmp_path / "nothing")
