"""What both APIs add to an error response beyond its body."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from headnode.services.errors import ServiceError
from headnode.services.retry import DatabaseUnavailable


def retry_headers(error: ServiceError) -> dict[str, str]:
    """``Retry-After`` for an error that says when to try again (a throttled request, a
    database that cannot be reached)."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after else {}


def database_unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """The 503 for a database error that means "not now" rather than a bug: the database is
    down, restarting or unreachable, the connection was lost, no connection was free in
    time, a lock or statement timed out. None for any other error."""
    lost = isinstance(error, DBAPIError) and error.connection_invalidated
    if lost or isinstance(error, OperationalError | InterfaceError | PoolTimeout):
        return DatabaseUnavailable("the database is unavailable; try again")
    return None
