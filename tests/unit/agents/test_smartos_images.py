"""Images on a SmartOS node by contract (issue 13): imgadm install takes a ZFS send stream
for every type but docker, refuses anything else with its own error codes and exit statuses
(smartos-live errors.js c35e02f), and the backend turns those into clear BackendErrors; an
image made from a zone is a ZFS send stream that another node installs."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.backends.base import BackendError
from agents.backends.host import imgadm
from agents.backends.host.cmd import HostCommandError
from agents.backends.smartos import SmartOSBackend
from schemas.agent import MachineSpecSchema
from tests.support.agent_images import FileServer, busybox_tarball, file_entry
from tests.support.zfs_stream import is_zfs_stream, zfs_stream
from tests.unit.agents.conftest import IMAGE_TOKEN
from tests.unit.agents.smartos_host import FakeSmartOS, recorded


@pytest.fixture
def node(smartos_host: FakeSmartOS, tmp_path: Path, image_store_url: str) -> SmartOSBackend:
    return SmartOSBackend(str(uuid.uuid4()), tmp_path / "node", image_store_url=image_store_url)


def served(image_server: FileServer, name: str, data: bytes, **fields: Any) -> dict[str, Any]:
    """An image spec (as the head node sends it) whose file ``image_server`` serves."""
    image_server.files[name] = data
    return {"uuid": str(uuid.uuid4()), "name": "busybox", "version": "1.35",
            "type": "zone-dataset", "os": "other", "requirements": {}, "tags": {},
            "files": [file_entry(data)],
            "source": {"url": image_server.url(name), "headers": dict(IMAGE_TOKEN)}, **fields}


def installs(host: FakeSmartOS) -> list[tuple[str, ...]]:
    return [a for a in host.argvs("imgadm") if a[1] == "install"]


def test_a_tarball_image_is_refused_before_its_download(
    node: SmartOSBackend, smartos_host: FakeSmartOS, image_server: FileServer
) -> None:
    image = served(image_server, "busybox.tar.gz", busybox_tarball())  # no format: a tarball
    before = len(image_server.requests)
    with pytest.raises(BackendError) as exc:
        node.image_ensure_present(image)
    assert exc.value.code == "ImageFormatNotSupported"
    assert "tar" in exc.value.message and "zfs" in exc.value.message
    assert len(image_server.requests) == before and installs(smartos_host) == []


def test_a_tarball_said_to_be_a_stream_fails_in_imgadm_as_on_a_node(
    node: SmartOSBackend, smartos_host: FakeSmartOS, image_server: FileServer
) -> None:
    tarball = busybox_tarball()
    image = served(image_server, "liar.gz", tarball,
                   files=[{**file_entry(tarball), "format": "zfs"}])
    with pytest.raises(BackendError) as exc:
        node.image_ensure_present(image)
    # zfs receive's "bad magic number" -> imgadm's InternalError, exit 1
    assert exc.value.code == "ImageFormatInvalid"
    assert isinstance(exc.value, imgadm.ImgadmError)
    assert (exc.value.imgadm_code, exc.value.returncode) == ("InternalError", 1)
    assert len(installs(smartos_host)) == 1 and image["uuid"] not in smartos_host.images
    assert not [p for p in node.work_dir.iterdir() if not p.name.startswith(".")]


def test_a_stream_installs_and_a_docker_layer_tarball_too(
    node: SmartOSBackend, smartos_host: FakeSmartOS, image_server: FileServer,
    zfs_stream_image: dict[str, Any]
) -> None:
    assert node.image_ensure_present(zfs_stream_image)["uuid"] in smartos_host.images
    tarball = busybox_tarball()
    docker = served(image_server, "layer.tar.gz", tarball, type="docker", os="linux",
                    files=[{**file_entry(tarball), "format": "tar"}])
    assert node.image_ensure_present(docker)["uuid"] in smartos_host.images


def test_the_node_says_which_formats_it_installs(node: SmartOSBackend) -> None:
    runs = node.sysinfo()["runs"]
    assert runs["format"]["zfs"] == [t for t in runs["type"] if t != "docker"]
    assert runs["format"]["tar"] == ["docker"]


def manifest_file(tmp_path: Path, data: bytes, **fields: Any) -> tuple[Path, Path]:
    import hashlib

    image_file = tmp_path / "file"
    image_file.write_bytes(data)
    manifest = {"v": 2, "uuid": str(uuid.uuid4()), "name": "busybox", "version": "1",
                "type": "zone-dataset", "os": "other", "state": "active",
                "files": [{"sha1": hashlib.sha1(data).hexdigest(), "size": len(data),
                           "compression": "none"}], **fields}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path, image_file


@pytest.mark.parametrize(("fields", "imgadm_code", "code"), [
    ({"name": "bad name!"}, "ManifestValidation", "ImageManifestInvalid"),
    ({"state": "disabled"}, "ImageNotActive", "ImageManifestInvalid"),
    ({"files": [{"sha1": "0" * 40, "size": 624, "compression": "none"}]}, "DownloadError",
     "ImageChecksumMismatch"),
    ({"files": [{"sha1": "0" * 40, "size": 624, "compression": "gzip"}]},
     "UncompressionError", "ImageFileCorrupt"),
])
def test_imgadm_refusals_become_clear_backend_errors(
    smartos_host: FakeSmartOS, tmp_path: Path, fields: dict[str, Any], imgadm_code: str,
    code: str
) -> None:
    manifest, image_file = manifest_file(tmp_path, zfs_stream(), **fields)
    with pytest.raises(imgadm.ImgadmError) as exc:
        imgadm.install(manifest, image_file)
    assert (exc.value.code, exc.value.imgadm_code, exc.value.returncode) == (
        code, imgadm_code, 1)
    assert f"imgadm {imgadm_code}" in exc.value.message


def test_imgadm_get_exit_3_is_not_installed_and_other_failures_raise(
    smartos_host: FakeSmartOS
) -> None:
    assert imgadm.get(str(uuid.uuid4())) is None
    assert imgadm.said('imgadm get: error (ImageNotInstalled): image "x" was not found on '
                       'zpool "zones"') == ("ImageNotInstalled",
                                            'image "x" was not found on zpool "zones"')
    with pytest.raises(HostCommandError):
        imgadm.install(Path("/nonexistent/manifest.json"), Path("/nonexistent/file"))


def test_an_image_made_from_a_zone_is_a_stream_another_node_installs(
    node: SmartOSBackend, smartos_host: FakeSmartOS, tmp_path: Path, image_server: FileServer,
    image_store_url: str
) -> None:
    smartos_host.images[IMAGE] = json.loads(recorded("imgadm-get.json"))["manifest"]
    vm = node.machine_create(MachineSpecSchema().load({
        "uuid": str(uuid.uuid4()), "alias": "web0", "owner_uuid": str(uuid.uuid4()),
        "image_uuid": IMAGE, "ram_mb": 256, "disk_mb": 1024}))["uuid"]
    new = {"uuid": str(uuid.uuid4()), "name": "golden", "version": "1"}
    made = node.image_create_from_machine(
        vm, new, {"url": image_server.url(f"up-{new['uuid']}"), "headers": dict(IMAGE_TOKEN)})
    sent = image_server.uploads[f"up-{new['uuid']}"]
    assert made["format"] == "zfs" and is_zfs_stream(gzip.decompress(sent))
    # the head node hands it to another SmartOS node, which installs it
    image_server.files[f"{new['uuid']}.zfs.gz"] = sent
    image = {**new, "type": "zone-dataset", "os": "other", "requirements": {}, "tags": {},
             "files": [{**file_entry(sent), "format": made["format"]}],
             "source": {"url": image_server.url(f"{new['uuid']}.zfs.gz"),
                        "headers": dict(IMAGE_TOKEN)}}
    other = SmartOSBackend(str(uuid.uuid4()), tmp_path / "other",
                           image_store_url=image_store_url)
    assert other.image_ensure_present(image)["uuid"] == new["uuid"]


IMAGE = "e75c9d82-3156-11e5-9d5e-1b5d6c1a9e4f"
