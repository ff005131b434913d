"""Run a whole transaction again when the database chose it as a victim.

PostgreSQL aborts one transaction of a lock cycle (deadlock, SQLSTATE 40P01) and, at
REPEATABLE READ or SERIALIZABLE, one of two conflicting ones (40001). Nothing of the aborted
transaction was written, so running it again from the start is safe and usually succeeds at
once; the jittered pause keeps two retried rivals from meeting in the same cycle again. A
database that cannot be reached is another matter: :class:`DatabaseUnavailable` says so to the
caller (503 with Retry-After) instead of an internal error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from headnode.services.errors import ServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQLSTATEs of a transaction the server rolled back so that another could go on
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
#: runs of one transaction in all (the first and its retries)
ATTEMPTS = 5
#: the pause before retry n is drawn from [0, BASE_DELAY * 2**n) seconds
BASE_DELAY = 0.05
#: seconds a client is asked to wait when the database is unreachable or keeps refusing
RETRY_AFTER = 2


class DatabaseUnavailable(ServiceError):
    """The database cannot serve this request now; the same request may succeed later."""

    status = 503
    code = "ServiceUnavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_after = RETRY_AFTER


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error wrapped by SQLAlchemy, if it has one."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and sqlstate(exc) in RETRYABLE_SQLSTATES


def in_transaction(run: Callable[[], T], what: str, attempts: int = ATTEMPTS,
                   base_delay: float = BASE_DELAY) -> T:
    """``run()`` (which opens, does and commits one transaction), again from the start while
    the database aborts it as a deadlock or serialization victim; after ``attempts`` runs,
    :class:`DatabaseUnavailable`."""
    for attempt in range(attempts):
        try:
            return run()
        except DBAPIError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts - 1:
                raise DatabaseUnavailable(
                    f"{what}: the database aborted it {attempts} times in a row "
                    f"({sqlstate(exc)}); try again") from exc
            delay = random.uniform(0, base_delay * 2 ** attempt)
            log.warning("%s: retry %d of %d in %.3f s after %s", what, attempt + 1,
                        attempts - 1, delay, type(exc.orig).__name__)
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
