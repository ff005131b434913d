"""The host side of the SmartOS metadata protocol: one Unix stream socket per machine, served
from a :class:`MetadataProvider` (the wire format is described in
:mod:`agents.backends.linux.mdata_client`, whose codec this shares).

The Linux backend runs one per running machine (:mod:`agents.backends.linux.metadata`).

What the host does with input off the protocol's happy path (the docs leave it open):

- a V2 frame whose length or CRC does not match is dropped, no reply: its request id cannot
  be trusted, and the client resends after its timeout;
- a V2 frame that checks out but has an unknown method or a bad payload gets ``FAILURE`` with
  a reason;
- any other line (before or after negotiation) gets ``invalid command``, as a V1 host answers;
- a line longer than ``MAX_LINE`` closes the connection, a peer quiet for ``read_timeout`` too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from agents.backends.linux.mdata_client import (
    INVALID_COMMAND,
    NEGOTIATE,
    V2_OK,
    LineReader,
    ProtocolError,
    decode_body,
    decode_frame,
    decode_put_payload,
    dot_stuff,
    encode_body,
    encode_frame,
)

log = logging.getLogger(__name__)

READ_ONLY_PREFIX = "sdc:"
REQUEST_ID = re.compile(rb"[0-9a-f]{8}")
ACCEPT_POLL_S = 0.5


class ReadOnlyKeyError(Exception):
    """The guest tried to change an ``sdc:*`` key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"metadata key {key!r} is read-only")
        self.key = key


def is_read_only(key: str) -> bool:
    return key.startswith(READ_ONLY_PREFIX)


class MetadataProvider(Protocol):
    """One machine's metadata as its guest sees it."""

    def get(self, key: str) -> str | None: ...

    def keys(self) -> list[str]:
        """The customer keys, without the ``sdc:*`` ones."""
        ...

    def put(self, key: str, value: str) -> None:
        """Raises :class:`ReadOnlyKeyError` for an ``sdc:*`` key."""
        ...

    def delete(self, key: str) -> None:
        """Nothing for an absent key; raises :class:`ReadOnlyKeyError` for an ``sdc:*`` key."""
        ...


class DictProvider:
    """A provider over two dicts: the read-only ``sdc:*`` values and the customer ones."""

    def __init__(
        self, internal: Mapping[str, str] | None = None, customer: Mapping[str, str] | None = None
    ) -> None:
        self.internal = dict(internal or {})
        self.customer = dict(customer or {})
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            store = self.internal if is_read_only(key) else self.customer
            return store.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self.customer)

    def put(self, key: str, value: str) -> None:
        if is_read_only(key):
            raise ReadOnlyKeyError(key)
        with self._lock:
            self.customer[key] = value

    def delete(self, key: str) -> None:
        if is_read_only(key):
            raise ReadOnlyKeyError(key)
        with self._lock:
            self.customer.pop(key, None)


def v2_reply(provider: MetadataProvider, body: bytes) -> bytes:
    """The reply frame to one checked V2 request body."""
    try:
        request_id, method, payload = decode_body(body)
    except ProtocolError as e:
        return encode_frame(encode_body(_request_id_of(body), "FAILURE", str(e).encode()))
    try:
        code, reply = _dispatch(provider, method, payload)
    except (ProtocolError, ReadOnlyKeyError) as e:
        code, reply = "FAILURE", str(e).encode()
    except Exception:
        log.exception("metadata provider failed on %s", method)
        code, reply = "FAILURE", b"internal error"
    return encode_frame(encode_body(request_id, code, reply))


def _request_id_of(body: bytes) -> str:
    """The id to answer a body that does not parse: its first word when that is a request
    id, else zeros (the client then sees a reply to no request of its own)."""
    first = body.split(b" ", 1)[0]
    return first.decode() if REQUEST_ID.fullmatch(first) else "00000000"


def _dispatch(
    provider: MetadataProvider, method: str, payload: bytes | None
) -> tuple[str, bytes | None]:
    if method == "KEYS":
        names = provider.keys()
        return "SUCCESS", "\n".join(k for k in names if not is_read_only(k)).encode()
    if method not in ("GET", "PUT", "DELETE"):
        raise ProtocolError(f"unknown method {method[:32]!r}")
    if not payload:
        raise ProtocolError(f"{method} needs a payload")
    if method == "PUT":
        provider.put(*decode_put_payload(payload))
        return "SUCCESS", None
    key = _text(payload)
    if method == "DELETE":
        provider.delete(key)
        return "SUCCESS", None
    value = provider.get(key)
    return ("NOTFOUND", None) if value is None else ("SUCCESS", value.encode())


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError as e:
        raise ProtocolError("key is not UTF-8") from e


def v1_reply(provider: MetadataProvider, line: bytes) -> bytes:
    """The reply to one line that is not a V2 frame."""
    if line == NEGOTIATE:
        return V2_OK + b"\n"
    if not line.startswith(b"GET "):
        return INVALID_COMMAND + b"\n"
    try:
        value = provider.get(_text(line[4:]))
    except ProtocolError:
        return INVALID_COMMAND + b"\n"
    except Exception:
        log.exception("metadata provider failed on V1 GET")
        return b"FAILURE\n"
    return b"NOTFOUND\n" if value is None else b"SUCCESS\n" + dot_stuff(value)


def reply_to(provider: MetadataProvider, line: bytes) -> bytes | None:
    """The reply to one request line, None to drop it."""
    if not line.startswith(b"V2 "):
        return v1_reply(provider, line)
    try:
        body = decode_frame(line)
    except ProtocolError as e:
        log.warning("metadata: dropped a V2 frame: %s", e)
        return None
    return v2_reply(provider, body)


class MetadataServer:
    """Serves one machine's metadata socket from daemon threads: an accept loop, and one
    thread per connection, so a stuck guest never holds up another or the agent."""

    def __init__(
        self, socket_path: Path | str, provider: MetadataProvider, read_timeout: float = 60.0
    ) -> None:
        self.socket_path = Path(socket_path)
        self.provider = provider
        self.read_timeout = read_timeout
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)  # a stale socket from a previous agent
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o666)  # the guest's users run mdata-get, not only root
        listener.listen(16)
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        self._stopping.clear()
        self._accepting = threading.Thread(
            target=self._accept_loop, name=f"mdata-accept {self.socket_path}", daemon=True
        )
        self._accepting.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake_accept()
        if self._accepting is not None:
            self._accepting.join(timeout=5 * ACCEPT_POLL_S)
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._conns_lock:
            for conn in self._conns:
                _shutdown(conn)
        self.socket_path.unlink(missing_ok=True)

    def _wake_accept(self) -> None:
        """Connects once so a blocked accept returns now rather than at its next poll."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(ACCEPT_POLL_S)
            s.connect(str(self.socket_path))

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._stopping.is_set():
                    log.exception("metadata: accept on %s failed", self.socket_path)
                return
            if self._stopping.is_set():
                conn.close()
                return
            conn.settimeout(self.read_timeout)
            with self._conns_lock:
                self._conns.add(conn)
            threading.Thread(
                target=self._serve, args=(conn,), name="mdata-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            lines = LineReader(conn)
            while not self._stopping.is_set() and (line := lines.readline()) is not None:
                reply = reply_to(self.provider, line)
                if reply is not None:
                    conn.sendall(reply)
        except ProtocolError as e:
            log.warning("metadata: closing a connection on %s: %s", self.socket_path, e)
        except OSError:
            pass  # the guest went away or went quiet past read_timeout
        except Exception:
            log.exception("metadata: connection on %s failed", self.socket_path)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
