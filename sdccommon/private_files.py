"""Files only their owner may read (keys, tokens, credentials): written whole beside their
place with mode 0600 from the first byte, then moved in, so no reader ever sees a partial
file or one readable by others."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_once(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` unless a file is there already: processes starting at once
    (API, worker, beat) all end up with the first one linked into place."""
    tmp = _written_beside(path, data)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()


def replace(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path``, replacing what was there."""
    os.replace(_written_beside(path, data), path)


def _written_beside(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return tmp
