"""The head node's image store: image files on disk and the signed URLs nodes use for them.

Files live at ``SDC_DATA_DIR/images/<uuid>``. A file arrives under a temporary name, is
checked (size and sha256) while it streams, and is renamed into place only when it matches,
so a reader never sees half a file and a bad upload leaves nothing behind.

Nodes carry no operator token. Each transfer the head node hands to a node is a URL signed
for one method, one image and one server, valid for :data:`URL_LIFETIME` seconds: an
HMAC-SHA256 with a secret that never leaves the head node (``SDC_DATA_DIR/image-url-key``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from headnode.config import HeadnodeSettings

URL_LIFETIME = 3600.0
CHUNK = 1 << 20
KEY_FILE = "image-url-key"


class TransferRejected(Exception):
    """A node's signed URL is malformed, expired or not signed by us."""


class FileMismatch(Exception):
    """An uploaded file is not the one its manifest describes."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int


def base_url(settings: HeadnodeSettings) -> str:
    if settings.image_base_url:
        return settings.image_base_url.rstrip("/")
    host, _, port = settings.api_bind.rpartition(":")
    # A wildcard bind is not an address a node can connect to; loopback is, on one machine.
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{port}"


def manifest_file(image: Any) -> dict[str, Any] | None:
    """The manifest's description of its one file, if it lists one."""
    files = list(getattr(image, "files", None) or [])
    return dict(files[0]) if files else None


class ImageStore:
    def __init__(self, settings: HeadnodeSettings) -> None:
        self.settings = settings
        self.root = settings.data_dir / "images"

    # -- files -----------------------------------------------------------------------------

    def path(self, image_uuid: str) -> Path:
        return self.root / image_uuid

    def has_file(self, image_uuid: str) -> bool:
        return self.path(image_uuid).is_file()

    def remove(self, image_uuid: str) -> bool:
        try:
            self.path(image_uuid).unlink()
        except FileNotFoundError:
            return False
        return True

    def receive(self, image_uuid: str, chunks: Iterable[bytes],
                expect: Mapping[str, Any] | None) -> StoredFile:
        """Store a streamed file; with ``expect`` ({sha256, size}) keep it only if it
        matches. Raises FileMismatch (and keeps nothing) otherwise."""
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".{image_uuid}.{secrets.token_hex(4)}.part"
        digest = hashlib.sha256()
        size = 0
        limit = int(expect["size"]) if expect and "size" in expect else None
        try:
            with open(temp, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise FileMismatch("size", f"the file is larger than the manifest's "
                                                   f"{limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            stored = StoredFile(digest.hexdigest(), size)
            if expect is not None:
                _check(stored, expect)
            os.replace(temp, self.path(image_uuid))
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return stored

    def open(self, image_uuid: str) -> IO[bytes]:
        return open(self.path(image_uuid), "rb")  # noqa: SIM115 - the caller streams it

    # -- signed URLs -----------------------------------------------------------------------

    def _key(self) -> bytes:
        path = self.settings.data_dir / KEY_FILE
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            # O_EXCL: API workers starting together agree on whichever key was made first.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key

    def signature(self, method: str, image_uuid: str, server_uuid: str, expires: int) -> str:
        message = f"{method.upper()}\n{image_uuid}\n{server_uuid}\n{expires}".encode()
        return hmac.new(self._key(), message, hashlib.sha256).hexdigest()

    def signed_url(self, method: str, image_uuid: str, server_uuid: str,
                   now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + URL_LIFETIME)
        query = urlencode({"server": server_uuid, "expires": expires,
                           "signature": self.signature(method, image_uuid, server_uuid,
                                                       expires)})
        return f"{base_url(self.settings)}/images/{image_uuid}/file?{query}"

    def verify(self, method: str, image_uuid: str, query: Mapping[str, str],
               now: float | None = None) -> str:
        """Check a node's signed request; returns the server it was signed for."""
        server_uuid = query.get("server", "")
        signature = query.get("signature", "")
        try:
            expires = int(query.get("expires", ""))
        except ValueError as exc:
            raise TransferRejected("expires must be a unix time") from exc
        if not server_uuid or not signature:
            raise TransferRejected("server and signature are required")
        if expires < (time.time() if now is None else now):
            raise TransferRejected("the URL has expired")
        wanted = self.signature(method, image_uuid, server_uuid, expires)
        if not hmac.compare_digest(wanted, signature):
            raise TransferRejected("the signature does not match")
        return server_uuid

    def source_for(self, server_uuid: str, image: Any) -> dict[str, Any]:
        """A TransferSchema dict: where ``server_uuid`` downloads ``image``'s file."""
        return {"url": self.signed_url("GET", image.uuid, server_uuid), "headers": {}}

    def upload_for(self, server_uuid: str, image: Any) -> dict[str, Any]:
        """A TransferSchema dict: where ``server_uuid`` uploads the file of ``image``."""
        return {"url": self.signed_url("PUT", image.uuid, server_uuid),
                "headers": {"Content-Type": "application/octet-stream"}}


def _check(stored: StoredFile, expect: Mapping[str, Any]) -> None:
    if "size" in expect and stored.size != int(expect["size"]):
        raise FileMismatch("size", f"the file has {stored.size} bytes, the manifest says "
                                   f"{expect['size']}")
    if "sha256" in expect and stored.sha256 != str(expect["sha256"]).lower():
        raise FileMismatch("sha256", f"the file's sha256 is {stored.sha256}, the manifest "
                                     f"says {expect['sha256']}")
