"""Node-to-node streams of a migration: one HTTP listener per agent process, one-time tickets.

The target offers a ticket for one stream (:func:`offer`): a URL
``http://ADDR:PORT/migrations/<ticket>`` that takes one POST carrying the ticket's token in
:data:`~schemas.migrations.TOKEN_HEADER`. The head node hands the URL and the token to the
source, which streams its snapshot there (:func:`send_stream`). The data goes node to node,
never through the head node; the token was made by the head node for this one stream.

- A wrong token, or a ticket already used, is answered 403 and never reaches the handler; a
  ticket past its time is 410; an unknown one 404. A ticket is spent when its POST arrives,
  whatever comes of it (btrfs receive cannot resume: a new try is a new ticket).
- The handler gets the request body as a binary stream and answers a dict (200, JSON) or
  raises :class:`BackendError` (4xx/5xx, JSON ``{code, message}``). A body cut short makes its
  reads raise :class:`StreamCut`.
- Back-pressure is TCP's: the sender writes with plain blocking writes, the target reads as
  fast as its handler takes the data, nothing is buffered beyond the sockets.
- A target that answers before it read the whole body (an error, a snapshot it has already)
  is heard at once: the sender looks for an answer between chunks and stops sending.

The listener binds ``SDC_MIGRATION_ADDRESS`` (the address other nodes reach this one at,
default 127.0.0.1) on an ephemeral port, and starts with the first offer.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import io
import json
import logging
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from agents.backends.base import BackendError
from schemas.migrations import TOKEN_HEADER

log = logging.getLogger(__name__)

PATH_PREFIX = "/migrations/"
TICKET_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
#: seconds a connection may stay silent (either way) before the stream counts as cut
IDLE_TIMEOUT = 300.0
#: after an early answer, how long the target reads (and drops) what the sender still sends,
#: so that its close does not reset the connection before the sender has read the answer
DRAIN_SECONDS = 10.0
#: tickets are forgotten this long after they expired (until then a late POST hears 410)
FORGET_AFTER = 600.0
#: the HTTP status of an error code (any other BackendError is 500)
ERROR_STATUS = {"InsufficientResources": 507, "InvalidArgument": 400, "InvalidParams": 400,
                "MachineNotFound": 404, "SnapshotNotFound": 404, "InvalidState": 409}

Handler = Callable[[BinaryIO], dict[str, Any]]


class StreamCut(BackendError):
    """The stream ended before its end: the sender died or the connection broke."""

    def __init__(self, message: str) -> None:
        super().__init__("MigrationStreamCut", message)


# -- the receiving end ------------------------------------------------------------------------


@dataclass
class _Ticket:
    token: bytes
    handler: Handler
    expires_at: float  # time.monotonic()
    spent: bool = False


class _ChunkedBody(io.RawIOBase):
    """A chunked request body, decoded; raises StreamCut when it ends before its last chunk."""

    def __init__(self, rfile: BinaryIO) -> None:
        self._rfile = rfile
        self._left = 0  # bytes left in the current chunk
        self.finished = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes of the current chunk in one piece (no buffer of ``size``
        filled and copied for what may be a short read, as RawIOBase.read would)."""
        if size is None or size < 0:
            return self.readall()
        if self.finished or size == 0:
            return b""
        if self._left == 0:
            self._left = self._next_chunk_size()
            if self._left == 0:
                self._end()
                return b""
        try:
            data = self._rfile.read(min(size, self._left))
        except OSError as exc:
            raise StreamCut(f"the stream broke: {exc}") from exc
        if not data or len(data) < min(size, self._left):
            raise StreamCut("the stream ended inside a chunk")
        self._left -= len(data)
        if self._left == 0:
            self._crlf()
        return data

    def readinto(self, buffer: Any) -> int:
        if self.finished:
            return 0
        if self._left == 0:
            self._left = self._next_chunk_size()
            if self._left == 0:
                self._end()
                return 0
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        try:
            got = self._rfile.readinto(view[:want])  # type: ignore[attr-defined]
        except OSError as exc:
            raise StreamCut(f"the stream broke: {exc}") from exc
        if not got:
            raise StreamCut("the stream ended inside a chunk")
        self._left -= got
        if self._left == 0:
            self._crlf()
        return int(got)

    def _line(self) -> bytes:
        try:
            line = self._rfile.readline(1024)
        except OSError as exc:
            raise StreamCut(f"the stream broke: {exc}") from exc
        if not line.endswith(b"\n"):
            raise StreamCut("the stream ended between chunks")
        return line

    def _next_chunk_size(self) -> int:
        text = self._line().split(b";", 1)[0].strip()
        try:
            return int(text, 16)
        except ValueError as exc:
            raise StreamCut(f"not a chunk size: {text[:20]!r}") from exc

    def _crlf(self) -> None:
        if self._line().strip():
            raise StreamCut("a chunk longer than it said")

    def _end(self) -> None:
        while self._line().strip():  # trailers, if any, end with an empty line
            pass
        self.finished = True


class _LengthBody(io.RawIOBase):
    """A body of a known length; StreamCut when fewer bytes come."""

    def __init__(self, rfile: BinaryIO, length: int) -> None:
        self._rfile = rfile
        self._left = length
        self.finished = length == 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left == 0:
            self.finished = True
            return 0
        view = memoryview(buffer).cast("B")
        try:
            got = self._rfile.readinto(view[:min(len(view), self._left)])  # type: ignore[attr-defined]
        except OSError as exc:
            raise StreamCut(f"the stream broke: {exc}") from exc
        if not got:
            raise StreamCut(f"the stream ended {self._left} bytes early")
        self._left -= got
        return int(got)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.close_connection = True
        self.connection.settimeout(IDLE_TIMEOUT)
        ticket, status, error = self.server.listener.claim(self.path,
                                                            self.headers.get(TOKEN_HEADER))
        if ticket is None:
            self._answer(status, error)
            self._drain(None)
            return
        body = self._body()
        if body is None:
            self._answer(411, {"code": "LengthRequired",
                               "message": "a chunked body or a Content-Length is required"})
            return
        try:
            answer: dict[str, Any] = ticket.handler(body)  # type: ignore[arg-type]
            status = 200
        except BackendError as exc:
            answer, status = {"code": exc.code, "message": exc.message}, \
                ERROR_STATUS.get(exc.code, 500)
        except Exception as exc:  # the sender must hear of every failure
            log.exception("migration stream %s: the handler failed", self.path)
            answer, status = {"code": "InternalError",
                              "message": f"{type(exc).__name__}: {exc}"}, 500
        with contextlib.suppress(OSError):
            self._answer(status, answer)
            self._drain(body)

    def do_GET(self) -> None:  # noqa: N802
        self.close_connection = True
        self._answer(405, {"code": "MethodNotAllowed", "message": "POST a stream"})

    def _body(self) -> _ChunkedBody | _LengthBody | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return _ChunkedBody(self.rfile)  # type: ignore[arg-type]
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            return None
        return _LengthBody(self.rfile, int(length))  # type: ignore[arg-type]

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _drain(self, body: _ChunkedBody | _LengthBody | None) -> None:
        """Read what the sender still sends (it stops once it sees the answer) and drop it."""
        if body is not None and body.finished:
            return
        deadline = time.monotonic() + DRAIN_SECONDS
        self.connection.settimeout(1.0)
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("migration stream: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, listener: Listener) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.listener = listener
        super().__init__((address, 0), _RequestHandler)


class Listener:
    """The tickets of this process and the server that takes their streams."""

    def __init__(self, address: str) -> None:
        self._tickets: dict[str, _Ticket] = {}
        self._lock = threading.Lock()
        self._server = _Server(address, self)
        host = address if ":" not in address else f"[{address}]"
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="migration-stream", daemon=True)
        self._thread.start()

    def offer(self, token: str, handler: Handler, ttl: float) -> str:
        ticket_id = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            self._tickets[ticket_id] = _Ticket(token.encode(), handler, now + ttl)
        return f"{self.base_url}{PATH_PREFIX}{ticket_id}"

    def claim(self, path: str, token: str | None
              ) -> tuple[_Ticket | None, int, dict[str, str]]:
        """(the ticket, now spent, or None with the status and error to answer)."""
        ticket_id = path[len(PATH_PREFIX):] if path.startswith(PATH_PREFIX) else ""
        with self._lock:
            ticket = self._tickets.get(ticket_id) if TICKET_ID.match(ticket_id) else None
            if ticket is None:
                return None, 404, {"code": "MigrationTicketNotFound",
                                   "message": "no stream is offered at this URL"}
            if token is None or not hmac.compare_digest(ticket.token, token.encode()) \
                    or ticket.spent:
                return None, 403, {"code": "NotAuthorized",
                                   "message": "wrong token, or a ticket already used"}
            if time.monotonic() > ticket.expires_at:
                return None, 410, {"code": "MigrationTicketExpired",
                                   "message": "this stream was offered for a shorter time"}
            ticket.spent = True
            return ticket, 200, {}

    def _forget_old(self, now: float) -> None:
        for ticket_id in [t for t, ticket in self._tickets.items()
                          if now > ticket.expires_at + FORGET_AFTER]:
            del self._tickets[ticket_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_listener: Listener | None = None
_address: str | None = None
_listener_lock = threading.Lock()


def configure(address: str) -> None:
    """Listen on ``address`` (SDC_MIGRATION_ADDRESS) from the next start of the listener;
    without it the setting is read at the first offer."""
    global _address
    with _listener_lock:
        _address = address


def listener() -> Listener:
    """This process's listener, started the first time."""
    global _listener
    with _listener_lock:
        if _listener is None:
            address = _address if _address is not None else _setting()
            try:
                _listener = Listener(address)
            except OSError as exc:
                raise BackendError("MigrationListenerFailed", f"cannot listen for migration "
                                   f"streams on {address!r} (SDC_MIGRATION_ADDRESS): "
                                   f"{exc}") from exc
        return _listener


def _setting() -> str:
    from agents.config import load_settings  # agents.config is heavy for a sim-only import

    return load_settings().migration_address


def offer(token: str, handler: Handler, ttl: float = 120.0) -> str:
    """A one-time URL for one stream: its POST with ``token`` is handed to ``handler``."""
    return listener().offer(token, handler, ttl)


def stop() -> None:
    """Stop the listener (tests; a new one starts at the next offer)."""
    global _listener
    with _listener_lock:
        if _listener is not None:
            _listener.close()
            _listener = None


# -- the sending end ---------------------------------------------------------------------------


def check_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a stream URL: ``http://HOST:PORT/migrations/<ticket>`` and
    nothing else; BackendError ``TransferRefused`` otherwise."""
    def refuse(why: str) -> BackendError:
        shown = repr(url) if len(repr(url)) <= 200 else repr(url)[:200] + "..."
        return BackendError("TransferRefused", f"migration stream URL {shown}: {why}")

    if not isinstance(url, str) or not url.isascii() or any(
            c.isspace() or not c.isprintable() for c in url):
        raise refuse("not printable ASCII without blanks")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise refuse("not http")
    if "@" in parts.netloc:
        raise refuse("credentials in a URL")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise refuse("a query or a fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise refuse(f"a bad port: {exc}") from exc
    if not parts.hostname or not port:
        raise refuse("a host and a port are needed")
    ticket_id = parts.path[len(PATH_PREFIX):] if parts.path.startswith(PATH_PREFIX) else ""
    if not TICKET_ID.match(ticket_id):
        raise refuse(f"the path is not {PATH_PREFIX}<ticket>")
    return parts.hostname, port, parts.path


def send_stream(url: str, token: str, chunks: Iterable[bytes],
                on_progress: Callable[[int], None]) -> dict[str, Any]:
    """POST ``chunks`` to a target's ``url`` (chunked, blocking writes) and return its answer;
    ``on_progress`` hears the bytes sent so far after every chunk. The target's error, or a
    broken connection (``MigrationStreamCut``), is raised as BackendError; an error of
    ``chunks`` itself is raised as it is, the connection closed (the target sees a cut
    stream)."""
    host, port, path = check_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=IDLE_TIMEOUT)
    try:
        try:
            conn.putrequest("POST", path, skip_accept_encoding=True)
            conn.putheader(TOKEN_HEADER, token)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
        except OSError as exc:
            raise StreamCut(f"cannot reach {host}:{port}: {exc}") from exc
        _write_chunks(conn, chunks, on_progress)
        try:
            return _answer(conn.getresponse())
        except (OSError, http.client.HTTPException) as exc:
            raise StreamCut(f"no answer from {host}:{port}: {exc}") from exc
    finally:
        conn.close()


class _Broken(Exception):
    pass


def _write_chunks(conn: http.client.HTTPConnection, chunks: Iterable[bytes],
                  on_progress: Callable[[int], None]) -> None:
    """Send every chunk, unless the target answers first; a broken connection ends the
    sending too (the target may have answered before it broke it: that says more)."""
    sock = conn.sock
    assert sock is not None
    sent = 0
    try:
        for chunk in chunks:
            if not chunk:
                continue
            if _answered(sock):
                return  # the target has said its word: stop sending, read it
            _send(sock, b"%x\r\n" % len(chunk), chunk, b"\r\n")
            sent += len(chunk)
            on_progress(sent)
        if not _answered(sock):
            _send(sock, b"0\r\n\r\n")
    except _Broken:
        sock.settimeout(DRAIN_SECONDS)


def _send(sock: socket.socket, *parts: bytes) -> None:
    try:
        for part in parts:
            sock.sendall(part)
    except OSError as exc:
        raise _Broken() from exc


def _answered(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _answer(response: http.client.HTTPResponse) -> dict[str, Any]:
    data = response.read()
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if response.status == 200:
        return payload
    raise BackendError(str(payload.get("code") or f"HTTP{response.status}"),
                       str(payload.get("message") or f"the target answered {response.status}"))
