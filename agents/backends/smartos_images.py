"""A SmartOS node's images: installing the head node's images with ``imgadm`` and making an
image from a zone's dataset with ``zfs send``.

Split out of :mod:`agents.backends.smartos` (issue 13) so that the zone code and the image code
can change apart; the backend's ``image_*`` methods delegate here and keep only their caches.
The head node is not an IMGAPI that ``imgadm import`` could use: the agent fetches the file
(a signed URL, checked against size and sha256) and runs ``imgadm install -m MANIFEST -f FILE``.

imgadm pipes the file of every image type but docker into ``zfs receive``: such an image's
file must be a ZFS send stream (format ``zfs``, schemas/image_manifest.py); a docker image's
is a layer tarball (``tar``). The node says so in sysinfo (:func:`install_formats`), placement
keeps other images away, and an image that comes anyway is refused before its download.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.backends import transfer
from agents.backends.base import BackendError
from agents.backends.host import imgadm, zfs
from agents.backends.names import plain_name
from agents.backends.vmadm_payloads import imgapi_manifest
from schemas.image_manifest import TAR, ZFS, file_format

#: the one image type imgadm installs from a tarball (its layers) instead of a ZFS stream
DOCKER = "docker"


def installed_record(image_uuid: str) -> dict[str, Any] | None:
    """The node's record of an installed image, None when imgadm does not have it."""
    installed = imgadm.get(image_uuid)
    return None if installed is None else _image_record(installed["manifest"])


def install_formats(types: list[str]) -> dict[str, list[str]]:
    """Sysinfo's ``runs.format``: each file format imgadm installs -> the image types."""
    formats = {ZFS: [t for t in types if t != DOCKER]}
    if DOCKER in types:
        formats[TAR] = [DOCKER]
    return formats


def install(work_dir: Path, image: dict[str, Any],
            store: transfer.ImageStoreLink) -> dict[str, Any]:
    """Installs the image unless another agent task did meanwhile (one file lock per image);
    its file comes from the node's image ``store`` only."""
    plain_name(image["uuid"], "image uuid")
    _check_format(image)
    store.check_source(image)
    with _file_lock(work_dir, image["uuid"]):
        installed = imgadm.get(image["uuid"])
        if installed is None:
            _install(work_dir, image, store)
            installed = imgadm.get(image["uuid"])
    if installed is None:
        raise BackendError("ImageInstallFailed", f"image {image['uuid']} did not install")
    return _image_record(installed["manifest"])


def installed_ids() -> list[str]:
    return sorted(i["manifest"]["uuid"] for i in imgadm.list_images())


def create_from_dataset(work_dir: Path, dataset: str, image: dict[str, Any],
                        upload: dict[str, Any],
                        store: transfer.ImageStoreLink) -> dict[str, Any]:
    """A full ZFS send stream of a snapshot of the zone's dataset, gzip'd and PUT to the
    node's image ``store``."""
    store.check(upload["url"], "upload.url")
    snapshot = f"{dataset}@image-{plain_name(image['uuid'], 'image uuid')}"
    stream = work_dir / f"{image['uuid']}.zfs"
    archive = work_dir / f"{image['uuid']}.zfs.gz"
    zfs.snapshot(snapshot)
    try:
        zfs.send(snapshot, stream)
        with open(stream, "rb") as src, gzip.open(archive, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        size, sha256 = transfer.file_digest(archive)
        store.upload(archive, upload)
    finally:
        stream.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        zfs.destroy(snapshot)
    return {"uuid": image["uuid"], "size": size, "sha256": sha256, "compression": "gzip",
            "format": ZFS}


def _check_format(image: dict[str, Any]) -> None:
    image_type = image.get("type") or "zone-dataset"
    have = file_format(image_type, image.get("files"))
    want = TAR if image_type == DOCKER else ZFS
    if have != want:
        raise BackendError("ImageFormatNotSupported",
                           f"image {image['uuid']} ({image_type}) has a {have} file; imgadm "
                           f"installs a {image_type} image from a {want} file")


def _install(work_dir: Path, image: dict[str, Any], store: transfer.ImageStoreLink) -> None:
    file_path = work_dir / f"{image['uuid']}.file"
    manifest_path = work_dir / f"{image['uuid']}.json"
    try:
        file = store.download(image, file_path)
        manifest_path.write_text(json.dumps(imgapi_manifest(image, file, file_path)))
        imgadm.install(manifest_path, file_path)
    finally:
        file_path.unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(work_dir: Path, image_uuid: str) -> Iterator[None]:
    with open(work_dir / f".{image_uuid}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _image_record(manifest: dict[str, Any]) -> dict[str, Any]:
    files = manifest.get("files") or [{}]
    return {"uuid": manifest["uuid"], "name": manifest.get("name", ""),
            "version": manifest.get("version", ""),
            "size_mb": math.ceil(int(files[0].get("size", 0)) / (1024 * 1024))}
