"""ListMachines' filters in SQL, before paging and counting, on PostgreSQL (production, the
tests) and on SQLite (``sdc up``, the demo): full pages, a right count, tag values as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from headnode.config import get_settings
from headnode.services.context import ServiceContext
from headnode.services.tenant import MachineFilter, list_machines, tombstone_since
from headnode.store.migrate import upgrade
from tests.unit.headnode.api.conftest import (
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> ServiceContext:
    if request.param == "postgresql":
        ctx: ServiceContext = request.getfixturevalue("ctx")
        return ctx
    url = f"sqlite:///{tmp_path}/sdc.db"
    upgrade(url)
    return ServiceContext(get_settings(database_url=url, data_dir=tmp_path))


@pytest.fixture
def made(db: ServiceContext) -> dict[str, Any]:
    """alice's ten machines (created in this order) and one of bob's."""
    fleet = {"server": make_server(db), "package": make_package(db), "image": make_image(db),
             "owner": make_account(db)}
    bob = make_account(db, login="bob", email="bob@example.com")
    specs: list[dict[str, Any]] = [
        {"ram_mb": 1024, "tags": {"role": "db", "n": 5}},
        {"ram_mb": 4096, "tags": {"role": "web"}},
        {"ram_mb": 1024, "tags": {"role": "web", "on": True}},
        {"ram_mb": 4096, "tags": {}},
        {"ram_mb": 1024, "tags": {"role": "web", "on": False}, "state": "stopped"},
        {"ram_mb": 1024, "tags": {'we"ird.k$y': "v"}, "brand": "kvm"},
        {"ram_mb": 1024, "tags": {"ratio": 1.5}},
        {"ram_mb": 1024, "tags": {"role": "db"}, "state": "destroyed",
         "destroyed_at": T0 - timedelta(hours=2)},
        {"ram_mb": 1024, "tags": {}, "state": "destroyed",
         "destroyed_at": datetime.now(UTC) - timedelta(minutes=1)},
        {"ram_mb": 1024, "tags": {}, "state": "failed"},
    ]
    machines = [make_machine(db, fleet, alias=f"m{i}", created_at=T0 + timedelta(minutes=i),
                             **spec) for i, spec in enumerate(specs)]
    make_machine(db, {**fleet, "owner": bob}, alias="m0", ram_mb=1024, created_at=T0)
    return {"owner": fleet["owner"].uuid, "image": fleet["image"].uuid,
            "package": fleet["package"].uuid, "m": [m.uuid for m in machines]}


def aliases(db: ServiceContext, made: dict[str, Any], limit: int = 1000, offset: int = 0,
            **wanted: Any) -> tuple[list[str], int]:
    rows, total = list_machines(db, made["owner"], MachineFilter(**wanted), limit=limit,
                                offset=offset)
    return [r["alias"] for r in rows], total


def test_no_filter_is_every_live_machine_oldest_first(db: ServiceContext,
                                                      made: dict[str, Any]) -> None:
    assert aliases(db, made) == (["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m9"], 8)


def test_memory_filters_before_paging_and_counting(db: ServiceContext,
                                                   made: dict[str, Any]) -> None:
    assert aliases(db, made, ram_mb=1024) == (["m0", "m2", "m4", "m5", "m6", "m9"], 6)
    # full pages: the filter is applied before the limit, the count is of all that match
    assert aliases(db, made, ram_mb=1024, limit=2) == (["m0", "m2"], 6)
    assert aliases(db, made, ram_mb=1024, limit=2, offset=2) == (["m4", "m5"], 6)
    assert aliases(db, made, ram_mb=1024, limit=4, offset=4) == (["m6", "m9"], 6)
    assert aliases(db, made, ram_mb=1024, limit=2, offset=6) == ([], 6)
    assert aliases(db, made, ram_mb=4096, limit=1, offset=1) == (["m3"], 2)


def test_a_filter_matching_nothing_is_empty_with_count_zero(db: ServiceContext,
                                                            made: dict[str, Any]) -> None:
    assert aliases(db, made, ram_mb=512) == ([], 0)
    assert aliases(db, made, alias="nope") == ([], 0)
    assert aliases(db, made, tags={"role": "cache"}) == ([], 0)
    assert aliases(db, made, tags={"missing": "x"}, limit=1, offset=3) == ([], 0)


def test_tags_match_as_text_in_sql(db: ServiceContext, made: dict[str, Any]) -> None:
    assert aliases(db, made, tags={"role": "web"}) == (["m1", "m2", "m4"], 3)
    assert aliases(db, made, tags={"role": "web"}, limit=1, offset=1) == (["m2"], 3)
    assert aliases(db, made, tags={"role": "web", "on": "true"}) == (["m2"], 1)
    assert aliases(db, made, tags={"on": "false"}) == (["m4"], 1)
    assert aliases(db, made, tags={"n": "5"}) == (["m0"], 1)
    assert aliases(db, made, tags={"ratio": "1.5"}) == (["m6"], 1)
    assert aliases(db, made, tags={'we"ird.k$y': "v"}) == (["m5"], 1)
    assert aliases(db, made, tags={"role": "web"}, ram_mb=1024) == (["m2", "m4"], 2)
    assert aliases(db, made, any_tag=True) == (["m0", "m1", "m2", "m4", "m5", "m6"], 6)


def test_state_type_brand_and_other_filters(db: ServiceContext, made: dict[str, Any]) -> None:
    assert aliases(db, made, state="stopped") == (["m4"], 1)
    assert aliases(db, made, state="destroyed") == (["m7", "m8"], 2)
    assert aliases(db, made, alias="m2") == (["m2"], 1)
    assert aliases(db, made, hvm=True) == (["m5"], 1)
    assert aliases(db, made, hvm=False, ram_mb=4096) == (["m1", "m3"], 2)
    assert aliases(db, made, brand="kvm") == (["m5"], 1)
    assert aliases(db, made, image_uuid=made["image"], package_uuid=made["package"],
                   limit=3)[1] == 8


def test_tombstone_adds_destroyed_machines(db: ServiceContext, made: dict[str, Any]) -> None:
    every, total = aliases(db, made, destroyed_since=True)
    assert (every, total) == ([f"m{i}" for i in range(10)], 10)
    recent = aliases(db, made, destroyed_since=tombstone_since(30))
    assert recent == (["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m8", "m9"], 9)
    assert aliases(db, made, destroyed_since=True, tags={"role": "db"}) == (["m0", "m7"], 2)
