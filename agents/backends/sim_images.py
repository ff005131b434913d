"""A sim node's image of a machine: a small but real gzip'd tar (the machine's record)
stands in for its filesystem, uploaded like a real node's so the head node's upload path is
exercised."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.backends import transfer


def image_from_machine(machine: Mapping[str, Any], image: Mapping[str, Any],
                       upload: dict[str, Any] | None,
                       store: transfer.ImageStoreLink) -> dict[str, Any]:
    """The image's file facts; the file is PUT to ``upload`` when given (its URL checked by
    the caller before anything else)."""
    archive = fake_archive(machine)
    if upload:
        with tempfile.NamedTemporaryFile(suffix=".tar.gz") as fh:
            fh.write(archive)
            fh.flush()
            store.upload(Path(fh.name), upload)
    return {"uuid": image["uuid"], "size": len(archive),
            "sha256": hashlib.sha256(archive).hexdigest(), "compression": "gzip",
            "format": "tar"}


def fake_archive(machine: Mapping[str, Any]) -> bytes:
    record = json.dumps(dict(machine), sort_keys=True).encode()
    buffer = io.BytesIO()
    # mtime 0: the same machine gives the same bytes
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as archive:
        info = tarfile.TarInfo("etc/sim-machine.json")
        info.size = len(record)
        archive.addfile(info, io.BytesIO(record))
    return buffer.getvalue()
