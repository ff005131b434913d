"""Images on a Linux node: downloaded, checked, unpacked into the pool (``Storage``) and
described by a manifest ``<state_dir>/images/<uuid>.json`` (with the image's ``init`` and
``tags`` for the operator to read; a machine boots the ``init`` of its own spec)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

from agents.backends import transfer
from agents.backends.base import BackendError
from agents.backends.host import tar
from agents.backends.jsonfile import write_json
from agents.backends.linux.records import file_lock
from agents.backends.linux.storage import Storage
from agents.backends.names import plain_name
from schemas.image_manifest import TAR, file_format

MIB = 1024 * 1024


class ImageStore:
    def __init__(self, storage: Storage, manifests_dir: Path, tmp_dir: Path,
                 link: transfer.ImageStoreLink) -> None:
        self.storage = storage
        #: the head node's image store (SDC_IMAGE_STORE_URL), the only source of image files
        self.link = link
        self.manifests_dir = manifests_dir
        self.tmp_dir = tmp_dir
        for path in (manifests_dir, tmp_dir):
            path.mkdir(parents=True, exist_ok=True)

    def ensure_present(self, image: dict[str, Any]) -> dict[str, Any]:
        """Import ``image`` (an ImageSpecSchema dict) unless the pool has it; its record."""
        uuid = plain_name(image["uuid"], "image uuid")
        if self.storage.image_present(uuid):
            return self.record(uuid)
        _check_format(image)
        self.link.check_source(image)
        with file_lock(self.manifests_dir / f".{uuid}.lock"):
            if not self.storage.image_present(uuid):  # another request imported it meanwhile
                self._import(image)
        return self.record(uuid)

    def record(self, uuid: str) -> dict[str, Any]:
        try:
            manifest = json.loads(self._manifest(uuid).read_text())
        except FileNotFoundError:
            manifest = {}
        size_mb = manifest.get("size_mb")
        if size_mb is None:  # imported by an older agent: measure the pool
            size_mb = math.ceil(self.storage.image_size(uuid) / MIB)
        return {"uuid": uuid, "name": manifest.get("name", ""),
                "version": manifest.get("version", ""), "size_mb": size_mb}

    def _manifest(self, uuid: str) -> Path:
        return self.manifests_dir / f"{plain_name(uuid, 'image uuid')}.json"

    def _import(self, image: dict[str, Any]) -> None:
        uuid = image["uuid"]
        download = self.tmp_dir / f"{plain_name(uuid, 'image uuid')}.download"
        manifest = self._manifest(uuid)
        try:
            file = self.link.download(image, download)
            root = self.storage.image_begin(uuid)
            tar.extract(download, root, file["compression"])
            unpacked_mb = math.ceil(_tree_bytes(root) / MIB)
            write_json(manifest, {"uuid": uuid, "name": image.get("name", ""),
                                  "version": image.get("version", ""), "file": file,
                                  "size_mb": unpacked_mb, "init": image.get("init"),
                                  "tags": dict(image.get("tags") or {})})
            self.storage.image_seal(uuid)
        except BaseException:
            # nothing of a failed import stays in the pool
            self.storage.image_discard(uuid)
            manifest.unlink(missing_ok=True)
            raise
        finally:
            download.unlink(missing_ok=True)


def _check_format(image: dict[str, Any]) -> None:
    """A Linux node unpacks tarballs; a ZFS send stream (a SmartOS image) is refused before
    its download (placement keeps such images away: sysinfo runs.format)."""
    have = file_format(image.get("type") or "zone-dataset", image.get("files"))
    if have != TAR:
        raise BackendError("ImageFormatNotSupported",
                           f"image {image['uuid']} has a {have} file; a Linux node installs "
                           "root filesystem tarballs")


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (an unpacked image, before it is sealed)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
