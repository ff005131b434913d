"""The capacity history's periodic task: one utilization snapshot per interval (beat)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from headnode.config import get_settings
from headnode.services import planning
from headnode.services.context import ServiceContext
from workflows.celery_app import app

log = logging.getLogger(__name__)


@cache
def _context() -> ServiceContext:
    # Built on first use in each worker process, after the fork, so no process shares a
    # database connection with another.
    return ServiceContext(get_settings())


@app.task(name="workflows.capacity_snapshot")
def capacity_snapshot() -> dict[str, Any]:
    """Record the fleet's utilization; snapshots older than the retention are dropped."""
    point = planning.record_history(_context())
    log.info("capacity snapshot: %s servers, %s machines, %s MiB RAM free",
             point["servers"], point["machines"], point["ram_mb"]["free"])
    return {"taken_at": str(point["taken_at"]), "machines": point["machines"]}
