"""A canned operator API on 127.0.0.1, in a thread, for the CLI tests (no head node needed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

# (status, body) or a function of the request giving one; a list answers in turn and then
# keeps giving its last answer (a job that goes running -> failed, say).
Answer = tuple[int, Any]
Route = Answer | list[Answer] | Callable[["Recorded"], Answer]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class FakeApi:
    url: str
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def route(self, method: str, path: str, answer: Route) -> None:
        self.routes[(method, path)] = answer

    def answer(self, req: Recorded) -> Answer:
        route = self.routes.get((req.method, req.path))
        if route is None:
            return 404, {"code": "ResourceNotFound", "message": f"no route {req.path}"}
        if callable(route):
            return route(req)
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route

    def sent(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def make_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            req = Recorded(self.command, parts.path, parse_qs(parts.query),
                           json.loads(raw) if raw else None, dict(self.headers.items()))
            api.requests.append(req)
            status, body = api.answer(req)
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = handle_any

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(FakeApi("")))
    api = FakeApi(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = make_handler(api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()
