"""Image files between a node and the head node's image store: GET with checks, PUT.

The URLs are signed for this node by the head node (schemas.agent.TransferSchema); this module
only sends the given headers. A download is hashed while it streams, so a file whose size or
sha256 differs from the manifest never reaches the pool.

A node transfers files with its image store only (``SDC_IMAGE_STORE_URL``): a task whose URL
points anywhere else (another host, port or scheme, a path outside the store's, credentials in
the URL) is refused before anything is fetched, sent or made, and redirects are not followed,
so a forged task cannot make a node send a tenant's machine elsewhere or fetch from elsewhere.
An empty setting refuses every transfer. An HTTPS store's certificate is checked against
``SDC_IMAGE_STORE_CA`` (the CA of a head node's own certificate), else the system's CAs.
"""

from __future__ import annotations

import hashlib
import ssl
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
CA_SETTING = "SDC_IMAGE_STORE_CA"
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


def file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


class ImageStoreLink:
    """A node's way to its image store: where it is (``SDC_IMAGE_STORE_URL``; empty: nowhere,
    every transfer is refused) and the CA file its HTTPS certificate is checked with
    (``SDC_IMAGE_STORE_CA``; empty: the system's CAs)."""

    def __init__(self, url: str = "", ca_file: str = "") -> None:
        self.url = url
        self.ca_file = ca_file
        self._opener: urllib.request.OpenerDirector | None = None  # made at the first transfer

    def check(self, url: str, field: str) -> str:
        return check_url(url, self.url, field)

    def check_source(self, image: Mapping[str, Any]) -> None:
        """Refuse (TransferRefused) an image whose source is not in the store; call before
        anything is made for the import."""
        image_file(image)
        self.check(image["source"]["url"], "image.source.url")

    def download(self, image: Mapping[str, Any], dest: Path) -> dict[str, Any]:
        """Fetch the image's file from the store to ``dest`` and check it; on any mismatch
        ``dest`` is removed and BackendError("ImageChecksumMismatch" / "ImageDownloadFailed")
        raised; a source outside the store is "TransferRefused"."""
        expected = image_file(image)
        source = image["source"]
        self.check(source["url"], "image.source.url")
        request = urllib.request.Request(source["url"],
                                         headers=dict(source.get("headers") or {}))
        digest = hashlib.sha256()
        size = 0
        try:
            with self.opener().open(request, timeout=TIMEOUT) as response, \
                    open(dest, "wb") as out:
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

    def upload(self, path: Path, target: Mapping[str, Any]) -> None:
        """PUT the file at ``path`` to ``target`` (a TransferSchema dict) in the store."""
        self.check(target["url"], "upload.url")
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(path.stat().st_size),
                   **dict(target.get("headers") or {})}
        try:
            with open(path, "rb") as body:
                request = urllib.request.Request(target["url"], data=body, headers=headers,
                                                 method="PUT")
                with self.opener().open(request, timeout=TIMEOUT * 10) as response:
                    response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise BackendError("ImageUploadFailed",
                               f"upload refused: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise BackendError("ImageUploadFailed", f"upload failed: {exc}") from exc

    def opener(self) -> urllib.request.OpenerDirector:
        """No redirects; HTTPS checked against the CA file (a mock cloud's hundreds of nodes
        that never transfer load no CA store)."""
        if self._opener is None:
            try:
                context = ssl.create_default_context(cafile=self.ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise BackendError("TransferRefused",
                                   f"{CA_SETTING} {self.ca_file!r}: {exc}") from exc
            self._opener = urllib.request.build_opener(
                _NoRedirects, urllib.request.HTTPSHandler(context=context))
        return self._opener
