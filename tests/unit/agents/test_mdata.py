"""The metadata protocol: a real MetadataServer on a Unix socket under tmp_path, driven by the
client a machine's ``mdata-get`` runs (agents/backends/linux/mdata_client.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents.backends.linux import mdata_client
from agents.backends.linux.mdata import DictProvider, MetadataServer, ReadOnlyKeyError
from agents.backends.linux.mdata_client import (
    MetadataClient,
    ProtocolError,
    decode_body,
    decode_frame,
    encode_body,
    encode_frame,
)

UUID = "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716"


@pytest.fixture
def provider() -> DictProvider:
    return DictProvider(
        internal={"sdc:uuid": UUID, "sdc:hostname": "web0"},
        customer={"user-script": "#!/bin/sh\necho hi\n", "color": "blue"},
    )


@pytest.fixture
def server(tmp_path: Path, provider: DictProvider) -> Iterator[MetadataServer]:
    srv = MetadataServer(tmp_path / "m.sock", provider, read_timeout=5.0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: MetadataServer) -> Iterator[MetadataClient]:
    with MetadataClient(str(server.socket_path), timeout=5.0) as c:
        c.negotiate()
        yield c


def test_frame_matches_the_docs_example() -> None:
    # mdata-docs protocol.md §4.4: a GET reply with payload "[]".
    frame = b"V2 21 265ae1d8 dc4fae17 SUCCESS W10=\n"
    assert encode_frame(encode_body("dc4fae17", "SUCCESS", b"[]")) == frame
    assert decode_body(decode_frame(frame[:-1])) == ("dc4fae17", "SUCCESS", b"[]")


def test_negotiate_v2(server: MetadataServer) -> None:
    with MetadataClient(str(server.socket_path), timeout=5.0) as c:
        c.send_raw(b"NEGOTIATE V2\n")
        assert c.read_line() == b"V2_OK"


def test_get_found_internal_and_customer(client: MetadataClient) -> None:
    assert client.get("sdc:uuid") == UUID
    assert client.get("color") == "blue"
    assert client.get("user-script") == "#!/bin/sh\necho hi\n"


def test_get_not_found(client: MetadataClient) -> None:
    assert client.get("no-such-key") is None
    assert client.get("sdc:no-such-field") is None


def test_keys_lists_customer_keys_not_sdc(client: MetadataClient) -> None:
    assert sorted(client.keys()) == ["color", "user-script"]


def test_put_then_get(client: MetadataClient, provider: DictProvider) -> None:
    client.put("new-key", "new value")
    assert client.get("new-key") == "new value"
    assert provider.customer["new-key"] == "new value"
    assert sorted(client.keys()) == ["color", "new-key", "user-script"]


def test_put_replaces(client: MetadataClient) -> None:
    client.put("color", "red")
    assert client.get("color") == "red"


def test_delete_present_and_absent(client: MetadataClient, provider: DictProvider) -> None:
    client.delete("color")
    assert client.get("color") is None
    assert "color" not in provider.customer
    client.delete("color")  # protocol.md §5.5: absent is a success too


def test_sdc_keys_are_read_only(client: MetadataClient, provider: DictProvider) -> None:
    with pytest.raises(ProtocolError, match="FAILURE.*read-only"):
        client.put("sdc:uuid", "forged")
    with pytest.raises(ProtocolError, match="FAILURE.*read-only"):
        client.delete("sdc:hostname")
    assert client.get("sdc:uuid") == UUID
    with pytest.raises(ReadOnlyKeyError):
        provider.put("sdc:alias", "x")


@pytest.mark.parametrize(
    "value",
    ["", "line one\nline two\n", "héllo wörld ✓ 日本", "\n\n", ".starts with a dot"],
    ids=["empty", "newlines", "utf8", "only-newlines", "dot"],
)
def test_values_round_trip(client: MetadataClient, value: str) -> None:
    client.put("k", value)
    assert client.get("k") == value


def test_key_with_spaces(client: MetadataClient, provider: DictProvider) -> None:
    client.put("my key with spaces", "v a l")
    assert provider.customer["my key with spaces"] == "v a l"
    assert client.get("my key with spaces") == "v a l"
    assert sorted(client.keys()) == ["color", "my key with spaces", "user-script"]


def test_v1_get_dot_stuffing(server: MetadataServer, provider: DictProvider) -> None:
    provider.customer["dots"] = "first\n.hidden\n..two\n."
    with MetadataClient(str(server.socket_path), timeout=5.0) as c:
        c.send_raw(b"GET dots\n")
        raw = [c.read_line() for _ in range(6)]
        assert raw == [b"SUCCESS", b"first", b"..hidden", b"...two", b"..", b"."]
        assert c.get_v1("dots") == "first\n.hidden\n..two\n."
        assert c.get_v1("absent") is None
        assert c.get_v1("sdc:hostname") == "web0"


def test_v1_unknown_command_and_bare_newline(server: MetadataServer) -> None:
    with MetadataClient(str(server.socket_path), timeout=5.0) as c:
        c.send_raw(b"\n")
        assert c.read_line() == b"invalid command"
        c.send_raw(b"KEYS please\n")
        assert c.read_line() == b"invalid command"


def test_bad_crc_is_dropped_and_the_connection_goes_on(client: MetadataClient) -> None:
    body = encode_body("0badc0de", "GET", b"color")
    wrong_crc = f"{(zlib.crc32(body) ^ 1) & 0xFFFFFFFF:08x}".encode()
    client.send_raw(b"V2 %d %s %s\n" % (len(body), wrong_crc, body))
    client.send_raw(b"V2 999 00000000 0badc0de GET Y29sb3I=\n")  # wrong length
    client.send_raw(b"V2 garbage\n")
    # The next reply is the one to the next good request: nothing came for the bad frames.
    assert client.get("color") == "blue"


def test_upper_case_crc_is_refused(client: MetadataClient) -> None:
    body = encode_body("0000abcd", "GET", b"color")
    upper = f"{zlib.crc32(body) & 0xFFFFFFFF:08X}".encode()
    if upper.lower() == upper:
        pytest.skip("this CRC has no hex letters")
    client.send_raw(b"V2 %d %s %s\n" % (len(body), upper, body))
    assert client.get("color") == "blue"


def test_checked_frame_with_bad_body_gets_failure(client: MetadataClient) -> None:
    for body, reason in [
        (b"0000abcd FROB", b"unknown method"),
        (b"0000abcd GET !!notbase64!!", b"not base64"),
        (b"0000abcd GET", b"needs a payload"),
        (b"0000abcd PUT " + mdata_client.b64(b"no-space"), b"PUT payload"),
        (b"\xff\xfe\xfd GET", b"not ASCII"),
        (b"one two three four", b"body is not"),
    ]:
        client.send_raw(encode_frame(body))
        request_id, code, payload = decode_body(decode_frame(client.read_line()))
        expected_id = "0000abcd" if body.startswith(b"0000abcd") else "00000000"
        assert (request_id, code) == (expected_id, "FAILURE")
        assert payload is not None and reason in payload
    assert client.get("color") == "blue"


def test_garbage_gets_invalid_command(client: MetadataClient) -> None:
    client.send_raw(b"\x00\xff\xfe garbage \x01\n")
    assert client.read_line() == b"invalid command"
    assert client.get("color") == "blue"


def test_huge_line_closes_only_that_connection(server: MetadataServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(server.socket_path))
        chunk = b"x" * 65536
        try:
            for _ in range(mdata_client.MAX_LINE // len(chunk) + 4):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up mid-send, as it should
        assert _reply_before_close(s) == b""
    with MetadataClient(str(server.socket_path), timeout=5.0) as c:
        c.negotiate()
        assert c.get("color") == "blue"


def _reply_before_close(s: socket.socket) -> bytes:
    """What the server sent before it hung up (a close with our bytes unread is a reset)."""
    try:
        return s.recv(1)
    except ConnectionResetError:
        return b""


def test_clients_one_after_another(server: MetadataServer) -> None:
    for n in range(3):
        with MetadataClient(str(server.socket_path), timeout=5.0) as c:
            c.negotiate()
            c.put("counter", str(n))
            assert c.get("counter") == str(n)


def test_a_quiet_client_does_not_wedge_the_next(server: MetadataServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quiet:
        quiet.connect(str(server.socket_path))
        quiet.sendall(b"NEGOTIATE")  # half a line, then silence
        with MetadataClient(str(server.socket_path), timeout=5.0) as c:
            c.negotiate()
            assert c.get("sdc:uuid") == UUID


def test_stop_removes_the_socket(tmp_path: Path, provider: DictProvider) -> None:
    srv = MetadataServer(tmp_path / "s.sock", provider)
    srv.start()
    assert srv.socket_path.is_socket()
    srv.stop()
    assert not srv.socket_path.exists()
    with pytest.raises(OSError):
        MetadataClient(str(srv.socket_path), timeout=1.0)


def test_start_replaces_a_stale_socket(tmp_path: Path, provider: DictProvider) -> None:
    path = tmp_path / "m.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    srv = MetadataServer(path, provider)
    srv.start()
    try:
        with MetadataClient(str(path), timeout=5.0) as c:
            c.negotiate()
            assert c.get("sdc:hostname") == "web0"
    finally:
        srv.stop()


def test_client_script_runs_standalone(server: MetadataServer, tmp_path: Path) -> None:
    # The file is copied into images as is: run it by path, outside the package.
    script = Path(mdata_client.__file__)
    env = {"MDATA_SOCKET": str(server.socket_path), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(script), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert run("put", "from-guest", "v").returncode == 0
    got = run("get", "from-guest")
    assert (got.returncode, got.stdout) == (0, "v\n")
    assert run("list").stdout.splitlines() == ["color", "from-guest", "user-script"]
    assert run("delete", "from-guest").returncode == 0
    missing = run("get", "from-guest")
    assert missing.returncode == 1 and "No metadata" in missing.stderr


class BrokenProvider(DictProvider):
    def get(self, key: str) -> str | None:
        raise RuntimeError("the head node is unreachable")


def test_provider_error_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    srv = MetadataServer(tmp_path / "b.sock", BrokenProvider(customer={"a": "1"}))
    srv.start()
    try:
        with MetadataClient(str(srv.socket_path), timeout=5.0) as c:
            c.negotiate()
            with pytest.raises(ProtocolError, match="FAILURE internal error"):
                c.get("a")
            assert c.keys() == ["a"]  # the same connection still answers
            c.send_raw(b"GET a\n")
            assert c.read_line() == b"FAILURE"
    finally:
        srv.stop()


def test_clients_at_the_same_time(server: MetadataServer) -> None:
    def ask(n: int) -> list[str | None]:
        with MetadataClient(str(server.socket_path), timeout=10.0) as c:
            c.negotiate()
            c.put(f"k{n}", str(n))
            return [c.get(f"k{n}") for _ in range(20)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert answers == [[str(n)] * 20 for n in range(8)]


def test_the_client_finds_the_socket_of_a_zone_then_of_an_lx_zone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zone, lx = tmp_path / "zone.sock", tmp_path / "lx.sock"
    monkeypatch.setattr(mdata_client, "SOCKET_PATHS", (str(zone), str(lx)))
    monkeypatch.delenv("MDATA_SOCKET", raising=False)
    assert mdata_client.socket_path() == mdata_client.SOCKET_PATH  # none there: named
    lx.touch()
    assert mdata_client.socket_path() == str(lx)
    zone.touch()
    assert mdata_client.socket_path() == str(zone)
    monkeypatch.setenv("MDATA_SOCKET", "/elsewhere.sock")
    assert mdata_client.socket_path() == "/elsewhere.sock"
