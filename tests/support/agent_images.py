"""Real image files for agent tests: a busybox root filesystem as a tarball, and a tiny
HTTP server on 127.0.0.1 that serves files (GET) and stores uploads (PUT), as the head node's
image store does for an agent."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the applets the tests run inside a machine: those of the image `sdc image build-busybox` makes
from headnode.imagebuild import APPLETS

BUSYBOX = Path("/bin/busybox")
DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "root")


def busybox_tarball(compression: str = "gzip", applets: tuple[str, ...] = APPLETS) -> bytes:
    """A root filesystem with bin/busybox and symlinks for ``applets``."""
    mode = {"gzip": "w:gz", "bzip2": "w:bz2", "xz": "w:xz", "none": "w"}[compression]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name in DIRS:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            archive.addfile(info)
        archive.add(str(BUSYBOX), "bin/busybox")
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(info)
        hostname = b"busybox\n"
        info = tarfile.TarInfo("etc/hostname")
        info.size = len(hostname)
        archive.addfile(info, io.BytesIO(hostname))
    return buffer.getvalue()


def file_entry(data: bytes, compression: str = "gzip") -> dict[str, Any]:
    """The ImageFileSchema dict of ``data``."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "compression": compression}


@dataclass
class FileServer:
    """GET /<name> serves ``files[name]``; PUT /<name> stores the body in ``uploads[name]``.
    Requests must carry ``required_headers``."""

    files: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    required_headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _authorized(self) -> bool:
                ok = all(self.headers.get(k) == v for k, v in server.required_headers.items())
                if not ok:
                    self.send_error(403)
                return ok

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(("GET", self.path))
                data = server.files.get(self.path.lstrip("/"))
                if not self._authorized():
                    return
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:  # noqa: N802
                server.requests.append(("PUT", self.path))
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length", "0"))
                server.uploads[self.path.lstrip("/")] = self.rfile.read(length)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        port = self._httpd.server_address[1]
        return f"http://127.0.0.1:{port}/{name}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
