"""Failed console sign-ins are counted in the head node's Redis, so two API processes (two
`sdc headnode serve` on one database and one Redis, as a head node's gunicorn workers or
several API machines are) slow a login down together: five failures spread over both, and
the sixth, on either, is 429, even with the right password."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests

from headnode.cli.client import OpsClient
from tests.support.api_server import SDC, TOKEN, ServedApi, serve_api
from tests.support.net import free_port

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def second_process(procs: Any, api: ServedApi, workdir: Path) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**api.env, "SDC_API_BIND": f"127.0.0.1:{port}", "SDC_DATA_DIR": str(workdir)}
    procs.spawn("api-2", [SDC, "headnode", "serve"], env=env,
                ready=OpsClient(url, TOKEN, timeout=5).ping, timeout=60)
    return url


def sign_in(browser: requests.Session, url: str, password: str) -> requests.Response:
    page = browser.get(f"{url}/console/signin", timeout=30)
    found = CSRF_FIELD.search(page.text)
    assert found, page.text
    return browser.post(f"{url}/console/signin/tenant", timeout=30, allow_redirects=False,
                        data={"csrf_token": found.group(1), "login": "alice",
                              "password": password})


def test_two_api_processes_count_failures_together(procs: Any, postgres_server: Any,
                                                   redis_server: Any, tmp_path: Path) -> None:
    first = serve_api(procs, postgres_server, redis_server, tmp_path / "one",
                      env={"SDC_API_WORKERS": "1"})
    second = second_process(procs, first, tmp_path / "two")
    redis_server.flushall()  # no count of another test's
    first.client().post("/ops/accounts", {"login": "alice", "email": "alice@example.com",
                                          "password": PASSWORD})
    browser = requests.Session()  # one cookie jar: the session cookie goes to both ports
    spread = [first.url, second, first.url, second, first.url]
    assert [sign_in(browser, url, "wrong password!").status_code for url in spread] \
        == [401] * 5
    sixth = sign_in(browser, second, PASSWORD)
    assert sixth.status_code == 429 and int(sixth.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in sixth.text
    assert sign_in(browser, first.url, PASSWORD).status_code == 429
