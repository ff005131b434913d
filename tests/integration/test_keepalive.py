"""A CloudAPI client that polls every 2 s keeps one connection: the API (a real gunicorn,
as `sdc headnode serve` runs it) does not close an idle kept-alive connection before 5 s.

With gunicorn's default keep-alive of 2 s, the server closed the connection just as the
client reused it, and the client read ``ECONNRESET: socket hang up``.
"""

from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from tests.support.procs import ProcessGroup, settings_env

SDC = str(Path(sys.executable).parent / "sdc")
#: idle gaps between requests on one connection: a 2-s poller, then one idle pause past the
#: 5 s that Node clients (and CloudAPI) keep idle sockets
GAPS = (2.0, 2.0, 6.0)


def serve(procs: ProcessGroup, settings: Any) -> int:
    port = free_port()
    env = {**settings_env(settings), "SDC_API_BIND": f"127.0.0.1:{port}",
           "SDC_API_WORKERS": "1"}

    def ready() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/--ping")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    procs.spawn("api", [SDC, "headnode", "serve"], env=env, ready=ready, timeout=60)
    return port


def ping(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    conn.request("GET", "/--ping", headers={"Accept-Version": "~9||~8||~7"})
    answer = conn.getresponse()
    answer.read()
    return answer


def test_a_client_polling_every_two_seconds_keeps_its_connection(procs: ProcessGroup,
                                                                 settings: Any) -> None:
    port = serve(procs, settings)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    first = ping(conn)
    assert first.status == 200
    assert (first.getheader("Connection") or "").lower() != "close"
    assert conn.sock is not None
    local = conn.sock.getsockname()
    for gap in GAPS:
        time.sleep(gap)
        # http.client opens a new socket only when it has none: one closed by the server
        # under it fails here (RemoteDisconnected, ConnectionResetError) instead.
        answer = ping(conn)
        assert answer.status == 200
        assert conn.sock is not None and conn.sock.getsockname() == local, \
            "the client had to open a new connection"
    conn.close()
