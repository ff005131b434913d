"""`sdc image build-busybox` and `sdc image import` against the whole cloud as processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from headnode.imagebuild import DEFAULT_BUSYBOX
from tests.integration.conftest import Cloud, sdc

pytestmark = pytest.mark.skipif(not DEFAULT_BUSYBOX.is_file(),
                                reason="busybox-static is not installed (make deps)")



def build(cloud: Cloud, out: Path) -> dict[str, Any]:
    built = sdc(cloud, "--json", "image", "build-busybox", "--out", str(out))
    assert built.returncode == 0, built.stderr
    return dict(json.loads(built.stdout))


def test_import_checks_the_file_and_can_be_run_again(cloud: Cloud, tmp_path: Path) -> None:
    paths = build(cloud, tmp_path)
    manifest = json.loads(Path(paths["manifest"]).read_text())

    wrong = tmp_path / "wrong.tar.gz"
    wrong.write_bytes(b"not the image")
    refused = sdc(cloud, "image", "import", paths["manifest"], str(wrong))
    assert refused.returncode == 1
    # a file shorter than the manifest says: the size is named (and nothing is kept)
    assert "InvalidArgument" in refused.stderr and "size:" in refused.stderr
    assert cloud.api.get(f"/ops/images/{manifest['uuid']}")["state"] == "unactivated"

    done = sdc(cloud, "--json", "image", "import", paths["manifest"], paths["file"])
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)
    assert image["uuid"] == manifest["uuid"] and image["state"] == "active"
    served = cloud.api.session.get(cloud.api.url(f"/ops/images/{image['uuid']}/file"),
                                   timeout=30).content
    assert hashlib.sha256(served).hexdigest() == manifest["files"][0]["sha256"]

    again = sdc(cloud, "image", "import", paths["manifest"], paths["file"])
    assert again.returncode == 1 and "DuplicateUuid" in again.stderr


def test_import_of_a_manifest_without_files_measures_the_file(cloud: Cloud,
                                                              tmp_path: Path) -> None:
    data = b"a tiny root filesystem archive"
    archive = tmp_path / "tiny.tar.gz"
    archive.write_bytes(data)
    manifest = tmp_path / "tiny.json"
    manifest.write_text(json.dumps({"name": "tiny", "version": "1", "os": "linux"}))
    done = sdc(cloud, "--json", "image", "import", str(manifest), str(archive))
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)
    assert image["state"] == "active"
    assert image["files"] == [{"sha256": hashlib.sha256(data).hexdigest(),
                               "size": len(data), "compression": "gzip"}]
