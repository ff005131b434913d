"""The capacity history's periodic task: scheduled by beat, writes one snapshot, keeps the
configured retention (run as the worker runs it, on the real PostgreSQL)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from headnode.services import planning
from headnode.store.models import CapacitySnapshot, utcnow
from tests.unit.headnode.services.conftest import add, count, make_server
from workflows import capacity_tasks
from workflows.celery_app import make_app


def test_beat_schedules_it_at_the_configured_interval(settings: Any) -> None:
    app = make_app(dataclasses.replace(settings, capacity_history_interval=42.0))
    entry = app.conf.beat_schedule["capacity-snapshot"]
    assert entry["task"] == "workflows.capacity_snapshot" and entry["schedule"] == 42.0
    assert "workflows.capacity_tasks" in app.conf.include


def test_the_task_records_and_prunes(ctx: Any, settings: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDC_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SDC_CAPACITY_HISTORY_DAYS", "1")
    capacity_tasks._context.cache_clear()
    make_server(ctx, hostname="cn1")
    zeros = {f"{r}_{p}{u}": 0 for r, u in (("ram", "_mb"), ("cpu", ""), ("disk", "_mb"))
             for p in ("total", "provisioned", "reserved", "free")}
    add(ctx, CapacitySnapshot(taken_at=utcnow() - timedelta(days=2), servers=0,
                              placeable_servers=0, machines=0, **zeros))
    try:
        answer = capacity_tasks.capacity_snapshot.run()
    finally:
        capacity_tasks._context.cache_clear()
    assert answer["machines"] == 0
    assert count(ctx, CapacitySnapshot) == 1  # the two-day-old one is past a day's retention
    [point] = planning.history(ctx)
    assert point["servers"] == 1 and point["ram_mb"]["total"] == 65536
