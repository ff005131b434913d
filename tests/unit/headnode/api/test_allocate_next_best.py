"""POST /ops/allocate shows the decision's next best, as a create would try them."""

from __future__ import annotations

from typing import Any

from tests.unit.headnode.api.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
)


def test_the_dry_run_names_the_next_best_in_order(api: Any, sdc: Any) -> None:
    make_package(sdc, name="small", memory=1024, disk=10240)
    make_image(sdc, name="base-64")
    make_account(sdc, login="alice")
    empty = make_server(sdc, hostname="empty")
    half = make_server(sdc, hostname="half", ram_inflight_mb=28000, disk_inflight_mb=500_000)
    full = make_server(sdc, hostname="full", ram_inflight_mb=50000, disk_inflight_mb=900_000)
    answer = api("post", "/ops/allocate", json={"package": "small", "image": "base-64"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["server_uuid"] == empty.uuid
    assert body["next_best"] == [half.uuid, full.uuid]
