"""A server's SSH address through PUT /ops/servers/<uuid>: set, shown, cleared; a bad host,
port or user is a 422 naming the field and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.headnode.api.conftest import make_server


def test_set_shown_and_cleared(api: Any, sdc: Any) -> None:
    server = make_server(sdc)
    fresh = api("get", f"/ops/servers/{server.uuid}").get_json()
    assert (fresh["ssh_host"], fresh["ssh_port"], fresh["ssh_user"]) == (None, 22, "root")

    answer = api("put", f"/ops/servers/{server.uuid}",
                 json={"ssh_host": "cn1.example.com", "ssh_port": 2222, "ssh_user": "sdc_ops"})
    assert answer.status_code == 200, answer.get_json()
    stored = api("get", f"/ops/servers/{server.uuid}").get_json()
    assert (stored["ssh_host"], stored["ssh_port"], stored["ssh_user"]) == (
        "cn1.example.com", 2222, "sdc_ops")

    for host in ("10.0.0.7", "fd00::7"):
        assert api("put", f"/ops/servers/{server.uuid}",
                   json={"ssh_host": host}).get_json()["ssh_host"] == host
    assert api("put", f"/ops/servers/{server.uuid}",
               json={"ssh_host": None}).get_json()["ssh_host"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"ssh_host": "-oProxyCommand=sh"}, "ssh_host"),
    ({"ssh_host": "host name"}, "ssh_host"),
    ({"ssh_host": "a;b"}, "ssh_host"),
    ({"ssh_host": "x" * 300}, "ssh_host"),
    ({"ssh_host": ""}, "ssh_host"),
    ({"ssh_port": 0}, "ssh_port"),
    ({"ssh_port": 65536}, "ssh_port"),
    ({"ssh_port": "22"}, "ssh_port"),
    ({"ssh_user": "root;reboot"}, "ssh_user"),
    ({"ssh_user": "-l"}, "ssh_user"),
    ({"ssh_user": ""}, "ssh_user"),
])
def test_bad_address_is_named_and_changes_nothing(api: Any, sdc: Any, body: dict[str, Any],
                                                  field: str) -> None:
    server = make_server(sdc, ssh_host="10.0.0.9")
    answer = api("put", f"/ops/servers/{server.uuid}", json=body)
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {field}
    stored = api("get", f"/ops/servers/{server.uuid}").get_json()
    assert (stored["ssh_host"], stored["ssh_port"], stored["ssh_user"]) == (
        "10.0.0.9", 22, "root")
