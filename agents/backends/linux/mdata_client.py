"""The guest side of the SmartOS metadata protocol over a Unix stream socket, and the wire
codec the host side (:mod:`agents.backends.linux.mdata`) shares with it.

Standard library only, no imports of ours: this file is meant to be copied into OS images as
the machine's ``mdata-get``/``mdata-list``/``mdata-put``/``mdata-delete`` (Joyent's
mdata-client opens ``/dev/ttyS1`` on Linux, not the socket).

Wire format (mdata-docs ``mdata/protocol.md``):

- negotiation: ``NEGOTIATE V2\\n`` answered ``V2_OK\\n``;
- V2 frame: ``V2 <body length> <crc32 of body, 8 lower-case hex digits> <body>\\n``, where the
  body is ``<request id, 8 lower-case hex> <CODE>[ <base64 payload>]`` (an absent payload has
  no separating space either); CRC32 is zlib's (polynomial 0xEDB88320);
- payloads: GET/DELETE the key; PUT ``base64(key) SP base64(value)``, base64'd again by the
  framing; KEYS none, its reply newline-separated key names;
- V1 (before negotiation): ``GET <key>\\n`` answered ``SUCCESS\\n``, the value's lines with a
  leading ``.`` doubled, then ``.\\n``; or ``NOTFOUND\\n``; anything else ``invalid command\\n``.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import sys
import zlib

SOCKET_PATH = "/.zonecontrol/metadata.sock"
#: where a guest finds the socket: a zone or a Linux node's machine, then a SmartOS lx zone
SOCKET_PATHS = (SOCKET_PATH, "/native/.zonecontrol/metadata.sock")
TIMEOUT_S = 45.0
MAX_LINE = 4 * 1024 * 1024  # a user-script is the biggest value; far above any real one
NEGOTIATE = b"NEGOTIATE V2"
V2_OK = b"V2_OK"
INVALID_COMMAND = b"invalid command"


class ProtocolError(Exception):
    """A frame or reply that does not follow the protocol."""


def crc32_hex(body: bytes) -> str:
    return f"{zlib.crc32(body) & 0xFFFFFFFF:08x}"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def unb64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as e:
        raise ProtocolError(f"payload is not base64: {e}") from e


def encode_body(request_id: str, code: str, payload: bytes | None) -> bytes:
    """The body of a frame; ``payload`` raw (this encodes it), None for no payload. An empty
    payload encodes to nothing, so it goes without its space as an absent one does."""
    head = f"{request_id} {code}".encode("ascii")
    return head + b" " + b64(payload) if payload else head


def encode_frame(body: bytes) -> bytes:
    return b"V2 %d %s %s\n" % (len(body), crc32_hex(body).encode("ascii"), body)


def decode_frame(line: bytes) -> bytes:
    """The body of one V2 frame (``line`` without its linefeed), its length and CRC checked."""
    parts = line.split(b" ", 3)
    if len(parts) != 4 or parts[0] != b"V2" or not parts[1].isdigit():
        raise ProtocolError("not a V2 frame")
    body = parts[3]
    if int(parts[1]) != len(body):
        raise ProtocolError("body length does not match")
    if parts[2] != crc32_hex(body).encode("ascii"):
        raise ProtocolError("body checksum does not match")
    return body


def decode_body(body: bytes) -> tuple[str, str, bytes | None]:
    """(request id, code, decoded payload or None)."""
    parts = body.split(b" ")
    if len(parts) not in (2, 3) or not all(parts):
        raise ProtocolError("body is not '<request id> <code> [<payload>]'")
    try:
        request_id, code = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError as e:
        raise ProtocolError("request id or code is not ASCII") from e
    return request_id, code, unb64(parts[2]) if len(parts) == 3 else None


def encode_put_payload(key: str, value: str) -> bytes:
    return b64(key.encode()) + b" " + b64(value.encode())


def decode_put_payload(payload: bytes) -> tuple[str, str]:
    key, sep, value = payload.partition(b" ")
    if not sep or not key:
        raise ProtocolError("PUT payload is not 'base64(key) base64(value)'")
    try:
        return unb64(key).decode(), unb64(value).decode()
    except UnicodeDecodeError as e:
        raise ProtocolError("PUT key or value is not UTF-8") from e


def dot_stuff(value: str) -> bytes:
    """A V1 SUCCESS reply's data lines and terminator for ``value``."""
    lines = ["." + ln if ln.startswith(".") else ln for ln in value.split("\n")]
    return ("\n".join(lines) + "\n.\n").encode()


class LineReader:
    """Linefeed-terminated lines from a socket, each at most ``MAX_LINE`` bytes."""

    def __init__(self, sock: socket.socket, max_line: int = MAX_LINE) -> None:
        self._sock = sock
        self._max = max_line
        self._buf = b""

    def readline(self) -> bytes | None:
        """The next line without its linefeed; None at end of stream. Raises ProtocolError
        for a line longer than the limit and socket.timeout when the peer goes quiet."""
        while b"\n" not in self._buf:
            if len(self._buf) > self._max:
                raise ProtocolError(f"line longer than {self._max} bytes")
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        if len(line) > self._max:
            raise ProtocolError(f"line longer than {self._max} bytes")
        return line


class MetadataClient:
    """One connection to the metadata socket, V2 once :meth:`negotiate` succeeded."""

    def __init__(self, path: str = SOCKET_PATH, timeout: float = TIMEOUT_S) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._lines = LineReader(self._sock)

    def __enter__(self) -> MetadataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read_line(self) -> bytes:
        line = self._lines.readline()
        if line is None:
            raise ProtocolError("the host closed the connection")
        return line

    def negotiate(self) -> None:
        self.send_raw(NEGOTIATE + b"\n")
        if self.read_line() != V2_OK:
            raise ProtocolError("the host does not speak V2")

    def request(self, method: str, payload: bytes | None = None) -> tuple[str, bytes | None]:
        """(reply code, reply payload) of one V2 request."""
        request_id = os.urandom(4).hex()
        self.send_raw(encode_frame(encode_body(request_id, method, payload)))
        reply_id, code, reply = decode_body(decode_frame(self.read_line()))
        if reply_id != request_id:
            raise ProtocolError(f"reply to request {reply_id}, not {request_id}")
        return code, reply

    def get(self, key: str) -> str | None:
        code, reply = self.request("GET", key.encode())
        if code == "NOTFOUND":
            return None
        return self._checked(code, reply).decode()

    def keys(self) -> list[str]:
        code, reply = self.request("KEYS")
        return self._checked(code, reply).decode().splitlines()

    def put(self, key: str, value: str) -> None:
        self._checked(*self.request("PUT", encode_put_payload(key, value)))

    def delete(self, key: str) -> None:
        self._checked(*self.request("DELETE", key.encode()))

    def get_v1(self, key: str) -> str | None:
        """GET without negotiation, as a host that only speaks V1 answers it."""
        self.send_raw(b"GET " + key.encode() + b"\n")
        head = self.read_line()
        if head == b"NOTFOUND":
            return None
        if head != b"SUCCESS":
            raise ProtocolError(f"unexpected V1 reply {head[:80]!r}")
        lines = []
        while (line := self.read_line()) != b".":
            lines.append(line[1:] if line.startswith(b".") else line)
        return b"\n".join(lines).decode()

    @staticmethod
    def _checked(code: str, reply: bytes | None) -> bytes:
        if code != "SUCCESS":
            detail = reply.decode(errors="replace") if reply else ""
            raise ProtocolError(f"{code} {detail}".strip())
        return reply or b""


USAGE = "usage: mdata_client.py get KEY | list | put KEY VALUE | delete KEY"


def socket_path() -> str:
    """``$MDATA_SOCKET``, else the first of :data:`SOCKET_PATHS` that exists (the first if
    none does, so the error names it)."""
    named = os.environ.get("MDATA_SOCKET")
    if named:
        return named
    return next((path for path in SOCKET_PATHS if os.path.exists(path)), SOCKET_PATH)


def main(argv: list[str]) -> int:
    """``get``/``list``/``put``/``delete``, exit 1 for a key not found, 2 for a failure."""
    if not argv or argv[0] not in ("get", "list", "put", "delete"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        with MetadataClient(socket_path()) as client:
            client.negotiate()
            if argv[0] == "get" and len(argv) == 2:
                value = client.get(argv[1])
                if value is None:
                    print(f"No metadata for '{argv[1]}'", file=sys.stderr)
                    return 1
                sys.stdout.write(value + "\n")
            elif argv[0] == "list" and len(argv) == 1:
                names = client.keys()
                sys.stdout.writelines(name + "\n" for name in names)
            elif argv[0] == "put" and len(argv) == 3:
                client.put(argv[1], argv[2])
            elif argv[0] == "delete" and len(argv) == 2:
                client.delete(argv[1])
            else:
                print(USAGE, file=sys.stderr)
                return 2
    except (OSError, ProtocolError) as e:
        print(f"mdata: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
