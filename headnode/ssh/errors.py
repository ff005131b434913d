"""What can go wrong reaching a node over SSH, each with the status word a report shows."""

from __future__ import annotations


class SshError(Exception):
    """A node could not run the command; ``status`` is the one word a report shows."""

    status = "error"


class Unreachable(SshError):
    """No TCP connection: refused, no route, no such host, or no answer in time."""

    status = "unreachable"


class TimedOut(SshError):
    """Connected, but the node did not finish within the time given."""

    status = "timeout"


class AuthenticationFailed(SshError):
    """The node did not accept the head node's key for that user."""

    status = "auth-failed"


class HostKeyUnknown(SshError):
    """First contact: the node's key is not in known_hosts and accepting it was not asked."""

    status = "host-key-unknown"


class HostKeyChanged(SshError):
    """The node offered a key other than the one known_hosts has for it."""

    status = "host-key-changed"
