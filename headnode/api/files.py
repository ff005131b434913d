"""Raw image files over HTTP: streamed in (never held in memory) and sent out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from flask import Response, request, send_file

CHUNK = 1 << 20
#: an image file may be far larger than the API's JSON body limit
MAX_FILE_BYTES = 1 << 40
#: the paths whose PUT body is a raw file, not JSON (the operator's and the nodes'; an
#: agent wheel)
FILE_PATH = re.compile(r"^(/ops)?/images/[^/]+/file$|^/ops/agent-bundles/[^/]+$")


def is_file_upload() -> bool:
    return request.method == "PUT" and bool(FILE_PATH.match(request.path))


def upload_chunks() -> Iterator[bytes]:
    request.max_content_length = MAX_FILE_BYTES
    stream = request.stream
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def file_response(path: Path) -> Response:
    return send_file(path, mimetype="application/octet-stream", conditional=True, max_age=0)
