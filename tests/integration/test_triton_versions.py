"""Against a live head node (gunicorn): a client asking for API 7.x, as older CloudAPI
clients do, and Triton's own CLI filtering ``triton inst list`` (ListMachines' query)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from tests.integration import test_triton_cli as cli

# The CLI's tenant, as test_triton_cli.py sets it up (a cloud of this module's own); the CLI
# itself (triton_bin) is the integration conftest's.
services, tenant = cli.services, cli.tenant
cloudapi_url, triton, instance = cli.cloudapi_url, cli.triton, cli.instance


def listed(run: Any, *args: str) -> list[dict[str, Any]]:
    out = run(*args)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def signed_get(url: str, signer: Any, target: str, accept: str) -> tuple[int, Any, str]:
    """A GET signed as triton signs it, with the Accept-Version a 7.x client sends (the
    CLI's env profile cannot set one)."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", target, headers={**signer.headers("GET", target),
                                              "Accept-Version": accept})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read()), answer.getheader("Api-Version", "")
    finally:
        conn.close()


def test_a_7x_client_is_served_as_7x(cloudapi_url: str, tenant: dict[str, Any],
                                     instance: dict[str, Any]) -> None:
    for offered, served in (("~7.2", "7.2.0"), ("7.x", "7.3.0"), ("~7", "7.3.0")):
        status, body, version = signed_get(cloudapi_url, tenant["signer"], "/my/machines",
                                           offered)
        assert (status, version) == (200, served)
        assert [m["id"] for m in body] == [instance["id"]]
        assert "brand" not in body[0]  # brand came with 8.0.0
    status, body, _ = signed_get(cloudapi_url, tenant["signer"], "/my/machines", "~6")
    assert status == 400 and body["code"] == "InvalidVersion"


def test_inst_list_filters_in_the_query(triton: Any, instance: dict[str, Any]) -> None:
    memory = instance["memory"]
    assert [m["id"] for m in listed(triton, "inst", "list", "-j", f"memory={memory}",
                                    "state=running")] == [instance["id"]]
    assert listed(triton, "inst", "list", "-j", f"memory={memory + 1}") == []
    assert [m["id"] for m in listed(triton, "inst", "list", "-j", "tag.role=web")] \
        == [instance["id"]]
    assert listed(triton, "inst", "list", "-j", "tag.role=db") == []
