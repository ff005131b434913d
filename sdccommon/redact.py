"""URLs as they may be printed or logged: the password they carry replaced by ``***``.

Both sides print URLs with credentials in them (the Redis URL of every process, the
database URL of the head node); a log line must never hand out the broker's password.
"""

from __future__ import annotations

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:***@host:6379/0``); anything else unchanged."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:{MASK}@{host}"

