"""Image files between a node and the head node's image store: GET with checks, PUT.

The URLs are signed for this node by the head node (schemas.agent.TransferSchema); this module
only sends the given headers. A download is hashed while it streams, so a file whose size or
sha256 differs from the manifest never reaches the pool.

A node transfers files with its image store only (``SDC_IMAGE_STORE_URL``): a task whose URL
points anywhere else (another host, port or scheme, a path outside the store's, credentials in
the URL) is refused before anything is fetched, sent or made, and redirects are not followed,
so a forged task cannot make a node send a tenant's machine elsewhere or fetch from elsewhere.
An empty setting refuses every transfer.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from agents.backends.base import BackendError

CHUNK = 1 << 20
TIMEOUT = 60.0
SETTING = "SDC_IMAGE_STORE_URL"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Url:
    """The parts of an http(s) URL without credentials, ``..`` or encoded separators in its
    path; ValueError says what is wrong with it."""
    if not isinstance(url, str) or not url.isascii() or any(
            c.isspace() or not c.isprintable() for c in url):
        raise ValueError("not a URL of printable ASCII characters without blanks")
    parts: SplitResult = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {parts.scheme!r} is not http or https")
    if "@" in parts.netloc:
        raise ValueError("a URL with user information")
    if not parts.hostname:
        raise ValueError("no host")
    port = parts.port  # ValueError for a port that is no number or out of range
    if parts.fragment:
        raise ValueError("a URL with a fragment")
    for segment in parts.path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or any(c in decoded for c in "/\\\0"):
            raise ValueError(f"path segment {segment!r} is a dot segment or holds a separator")
    return _Url(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], parts.path)


def check_url(url: str, store_url: str, field: str) -> str:
    """``url`` if it lies in the image store at ``store_url`` (same scheme, host and port, a
    path under the store's); else BackendError ``TransferRefused`` naming ``field``."""
    if not store_url:
        raise BackendError("TransferRefused", f"{field}: {SETTING} is not set on this node; "
                           "it transfers image files only with the head node's image store")
    try:
        store = _parse(store_url)
    except ValueError as exc:
        raise BackendError("TransferRefused",
                           f"{field}: {SETTING} {store_url!r} is not usable: {exc}") from exc
    try:
        target = _parse(url)
    except ValueError as exc:
        raise BackendError("TransferRefused", f"{field} {_shown(url)} is refused: {exc}") from exc
    prefix = store.path.rstrip("/") + "/"
    if (target.scheme, target.host, target.port) != (store.scheme, store.host, store.port) \
            or not target.path.startswith(prefix):
        raise BackendError("TransferRefused", f"{field} {_shown(url)} is not in the image store "
                           f"{store_url} ({SETTING})")
    return url


def _shown(url: str) -> str:
    """A URL for a message: a forged task's may be long."""
    text = repr(url)
    return text if len(text) <= 200 else text[:200] + "..."


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would lead a transfer out of the checked URL: it fails instead."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused",
                                     headers, fp)


_opener = urllib.request.build_opener(_NoRedirects)


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


def check_source(image: Mapping[str, Any], store_url: str) -> None:
    """Refuse (TransferRefused) an image whose source is not in the image store; call before
    anything is made for the import."""
    image_file(image)
    check_url(image["source"]["url"], store_url, "image.source.url")


def download(image: Mapping[str, Any], dest: Path, store_url: str) -> dict[str, Any]:
    """Fetch the image's file from the image store at ``store_url`` to ``dest`` and check it;
    on any mismatch ``dest`` is removed and BackendError("ImageChecksumMismatch" /
    "ImageDownloadFailed") raised; a source outside the store is "TransferRefused"."""
    expected = image_file(image)
    source = image["source"]
    check_url(source["url"], store_url, "image.source.url")
    request = urllib.request.Request(source["url"], headers=dict(source.get("headers") or {}))
    digest = hashlib.sha256()
    size = 0
    try:
        with _opener.open(request, timeout=TIMEOUT) as response, open(dest, "wb") as out:
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


def upload(path: Path, target: Mapping[str, Any], store_url: str) -> None:
    """PUT the file at ``path`` to ``target`` (a TransferSchema dict) in the image store at
    ``store_url``."""
    check_url(target["url"], store_url, "upload.url")
    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(path.stat().st_size), **dict(target.get("headers") or {})}
    try:
        with open(path, "rb") as body:
            request = urllib.request.Request(target["url"], data=body, headers=headers,
                                             method="PUT")
            with _opener.open(request, timeout=TIMEOUT * 10) as response:
                response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise BackendError("ImageUploadFailed",
                           f"upload refused: HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError("ImageUploadFailed", f"upload failed: {exc}") from exc
