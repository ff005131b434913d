"""Image files between a node and the head node's image store: GET with checks, PUT.

The URLs are signed for this node by the head node (schemas.agent.TransferSchema); this module
only sends the given headers. A download is hashed while it streams, so a file whose size or
sha256 differs from the manifest never reaches the pool.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.backends.base import BackendError

CHUNK = 1 << 20
TIMEOUT = 60.0


def image_file(image: Mapping[str, Any]) -> dict[str, Any]:
    """The one file of ``image`` (an ImageSpecSchema dict) with sha256, size, compression."""
    files = image.get("files") or []
    if not files or not image.get("source"):
        raise BackendError("ImageFileMissing",
                           f"image {image['uuid']} has no file to import (files and source)")
    first = dict(files[0])
    if "sha256" not in first or "size" not in first:
        raise BackendError("ImageFileMissing", f"image {image['uuid']}: file lacks sha256/size")
    first.setdefault("compression", "gzip")
    return first


def download(image: Mapping[str, Any], dest: Path) -> dict[str, Any]:
    """Fetch the image's file to ``dest`` and check it; on any mismatch ``dest`` is removed
    and BackendError("ImageChecksumMismatch" / "ImageDownloadFailed") raised."""
    expected = image_file(image)
    source = image["source"]
    request = urllib.request.Request(source["url"], headers=dict(source.get("headers") or {}))
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(dest, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if size > expected["size"]:
                    break  # a longer file is wrong already; do not fill the pool with it
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise BackendError("ImageDownloadFailed",
                           f"image {image['uuid']}: download failed: {exc}") from exc
    if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
        dest.unlink(missing_ok=True)
        raise BackendError(
            "ImageChecksumMismatch",
            f"image {image['uuid']}: got {size} bytes with sha256 {digest.hexdigest()}, "
            f"manifest says {expected['size']} bytes with sha256 {expected['sha256']}",
        )
    return expected


def file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


def upload(path: Path, target: Mapping[str, Any]) -> None:
    """PUT the file at ``path`` to ``target`` (a TransferSchema dict)."""
    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(path.stat().st_size), **dict(target.get("headers") or {})}
    try:
        with open(path, "rb") as body:
            request = urllib.request.Request(target["url"], data=body, headers=headers,
                                             method="PUT")
            with urllib.request.urlopen(request, timeout=TIMEOUT * 10) as response:
                response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise BackendError("ImageUploadFailed",
                           f"upload refused: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError("ImageUploadFailed", f"upload failed: {exc}") from exc
