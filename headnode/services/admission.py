"""Admission control: while the workflow worker is behind, new provisions wait at the door.

A provision accepted into a long queue only waits there, holding its reservation, and every
request behind it waits longer; refusing it with 429 and Retry-After keeps the time from
request to running machine short for what is accepted and tells the caller when to come
back (CloudAPI answers an overloaded caller the same way: RequestThrottled). The measure is
the workflow worker's queue in Redis, not the jobs in flight: a provision waiting for its
node (an image import, a slow zone boot) costs the head node nothing. The nodes' status
reports and registrations travel on a queue of their own (``nodes``, schemas/agent.py),
which is not counted: at 10,000 nodes they alone once kept every provision out.
"""

from __future__ import annotations

from headnode.services.context import ServiceContext
from headnode.services.errors import Throttled

#: what a refused caller is told to wait: HTTP's shortest, about the time the worker takes
#: to drain a backlog at the default limit (bench/provision_throughput.py)
RETRY_AFTER_SECONDS = 1


def admit_provision(ctx: ServiceContext) -> None:
    """Raise Throttled when the workflow worker has ``provision_backlog_limit`` messages or
    more waiting; an unknown backlog (Redis away) admits."""
    limit = ctx.settings.provision_backlog_limit
    if limit <= 0 or ctx.jobs is None:
        return
    waiting = ctx.jobs.backlog()
    if waiting >= limit:
        raise Throttled(f"the head node is busy ({waiting} messages wait for the workflow "
                        f"worker, limit {limit}): send the request again in "
                        f"{RETRY_AFTER_SECONDS} s", retry_after=RETRY_AFTER_SECONDS)
