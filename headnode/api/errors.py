"""What both APIs add to an error response beyond its body."""

from __future__ import annotations

from headnode.services.errors import ServiceError


def retry_headers(error: ServiceError) -> dict[str, str]:
    """``Retry-After`` for an error that says when to try again (a throttled request)."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after else {}
