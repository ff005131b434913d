"""The doctor lists what nodes made for machines' networks and no machine owns: kept from the
nodes' reports in the real Redis, believed only from the server's last applied report, one
finding per thing with the command that removes it; the doctor never removes it."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis

from headnode.services import doctor
from headnode.store.models import Server
from tests.support.net import free_port
from tests.unit.headnode.services.conftest import make_server
from tests.unit.workflows.test_nodes import REPORT_TIME, apply, status

LEFT = ["veth:v90b8d0c0ffee", "nft:nic_90b8d0c0ffee", "netns:3f2b1c8e-0000-4000-8000-000000000001"]


def report_with(ctx: Any, server_uuid: str, leftovers: list[str], at: float = REPORT_TIME,
                applied: bool = True) -> None:
    """A node's report as the status task handles it: applied, then its leftovers kept."""
    raw = status(server_uuid, [], leftovers=leftovers, timestamp=at)
    if applied:
        apply(ctx, raw)
    doctor.keep_leftovers(redis.Redis.from_url(ctx.settings.redis_url), raw)


def leftover_findings(ctx: Any, repair: bool = False) -> list[dict[str, Any]]:
    return [f for f in doctor.doctor(ctx, repair_too=repair)["findings"]
            if f["kind"] == "node_leftover"]


def test_each_leftover_is_a_finding_with_the_command_that_removes_it(ctx: Any) -> None:
    node = make_server(ctx, hostname="cn7")
    clean = make_server(ctx, hostname="cn8")
    report_with(ctx, node.uuid, LEFT)
    report_with(ctx, clean.uuid, [])
    found = leftover_findings(ctx)
    assert [(f["server_uuid"], f["repair"], f["machine_uuid"]) for f in found] == [
        (node.uuid, None, None)] * 3
    veth, chain, netns = found
    assert veth["operator"] == "ip link delete v90b8d0c0ffee"
    assert "on cn7" in veth["detail"]
    assert chain["operator"] == ('nft delete element bridge sdc nics { "v90b8d0c0ffee" }; '
                                 "nft delete chain bridge sdc nic_90b8d0c0ffee")
    path = "/run/sdc-runc-netns/3f2b1c8e-0000-4000-8000-000000000001"
    assert netns["operator"] == f"umount {path}; rm {path}"


def test_repair_leaves_them_and_a_later_clean_report_clears_them(ctx: Any) -> None:
    node = make_server(ctx, hostname="cn7")
    report_with(ctx, node.uuid, LEFT)
    assert len(leftover_findings(ctx, repair=True)) == 3
    assert not any(f["repaired"] for f in leftover_findings(ctx))  # nothing removed
    report_with(ctx, node.uuid, [], at=REPORT_TIME + 10)
    assert leftover_findings(ctx) == []


def test_only_the_last_applied_report_is_believed(ctx: Any) -> None:
    node = make_server(ctx, hostname="cn7")
    report_with(ctx, node.uuid, [], at=REPORT_TIME + 10)
    # an older report, delivered late: the head node ignores it, and so does the doctor
    report_with(ctx, node.uuid, LEFT, at=REPORT_TIME)
    assert leftover_findings(ctx) == []
    # kept, but its report not applied yet: the server's last report says otherwise
    report_with(ctx, node.uuid, LEFT, at=REPORT_TIME + 20, applied=False)
    assert leftover_findings(ctx) == []
    apply(ctx, status(node.uuid, [], leftovers=LEFT, timestamp=REPORT_TIME + 20))
    assert len(leftover_findings(ctx)) == 3


def test_a_server_not_running_is_not_compared(ctx: Any) -> None:
    node = make_server(ctx, hostname="cn7")
    report_with(ctx, node.uuid, LEFT)
    with ctx.transaction() as session:
        row = session.get(Server, node.uuid)
        assert row is not None
        row.status = "unknown"
    assert leftover_findings(ctx) == []


def test_without_redis_the_records_are_still_compared(ctx: Any) -> None:
    node = make_server(ctx, hostname="cn7")
    report_with(ctx, node.uuid, LEFT)
    away = dataclasses.replace(ctx, settings=dataclasses.replace(
        ctx.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    result = doctor.doctor(away)
    assert [f for f in result["findings"] if f["kind"] == "node_leftover"] == []
    assert any("node leftovers not read" in s["reason"] for s in result["skipped"])
