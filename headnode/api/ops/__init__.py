"""The operator API (``/ops/``): one blueprint per resource, thin handlers over services."""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from headnode.services.context import ServiceContext


def service_context() -> ServiceContext:
    ctx: ServiceContext = current_app.extensions["sdc"]
    return ctx


def operator_caller() -> dict[str, Any]:
    """Who asked, as recorded on the jobs a request starts (set by the app's auth hook)."""
    caller: dict[str, Any] = g.get("caller") or {"type": "operator"}
    return caller
