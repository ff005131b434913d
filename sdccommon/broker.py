"""How the head node's and the agents' Celery apps hold their Redis broker connection through
a Redis restart or failover (docs/deployment.md, "During a failover").

A Redis that restarts closes its connections and kombu reconnects. A failover that moves the
address to another machine (a virtual IP, a proxy switching to a promoted replica) may close
nothing: without a read timeout a worker waits forever on a socket whose peer is gone. With
one, the read fails, kombu reconnects, and the worker consumes again.
"""

from __future__ import annotations

from typing import Any

#: redis-py connection options for the broker (kombu's ``broker_transport_options``): a
#: command (a publish, an acknowledgement) that gets no answer for 30 s fails and is retried
#: on a new connection; a connect gives up after 5 s. The consumer's BRPOP connection kombu
#: checks itself (its ``health_check_interval``, 25 s by default).
SOCKET_OPTIONS: dict[str, Any] = {
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
}

#: Celery settings: keep retrying the broker connection however long Redis is away (Celery's
#: default gives up after 100 tries and the worker exits)
CONNECTION_SETTINGS: dict[str, Any] = {
    "broker_connection_retry_on_startup": True,
    "broker_connection_retry": True,
    "broker_connection_max_retries": None,
}


def transport_options(**own: Any) -> dict[str, Any]:
    """An app's ``broker_transport_options``: its own options over :data:`SOCKET_OPTIONS`."""
    return {**SOCKET_OPTIONS, **own}
