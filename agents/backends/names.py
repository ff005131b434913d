"""The last guard between a name from the wire and a node's file system.

The task schemas (schemas/agent.py) already accept only canonical UUIDs and strict snapshot
names; the backends check again where they build a path, a dataset or a glob from one
(``rmtree(<machines_dir>/<uuid>)``, ``zones/<uuid>@*``, ``zfs destroy -r <pool>/<uuid>``), so a
caller that skipped the schema cannot reach outside the node's directories.
"""

from __future__ import annotations

import re

from agents.backends.base import BackendError

#: one path component that is no glob, no option, not ``.``/``..`` and has neither ``/`` nor
#: ``@`` (the snapshot separator of both storage drivers)
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")


def plain_name(name: str, what: str) -> str:
    """``name`` if it is a :data:`PLAIN_NAME`; else BackendError ``InvalidArgument``."""
    if not isinstance(name, str) or not PLAIN_NAME.match(name):
        raise BackendError("InvalidArgument",
                           f"{what} {name!r} is not a plain name (letters, digits, _ . : -)")
    return name
