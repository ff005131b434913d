"""The Linux compute-node backend: runc containers on a btrfs (or OpenZFS) pool, each with
its own network namespace whose NICs sit on the node's nic-tag bridges.

A package by concern: ``backend`` (the NodeBackend the agent drives, thin), ``build``
(one from the agent's settings), ``records`` (machine.json, metadata.json), ``metadata``,
``mdata`` and ``metadata_events`` (the machines' metadata service and the news of their own
changes), ``runtime`` (runc containers), ``images`` (import into the pool), ``storage``
(the pool: btrfs or OpenZFS), ``migration`` (moving a machine to or from another node:
btrfs send/receive over :mod:`agents.migration_stream`), ``usage`` (its figures, cached),
``nodeinfo`` (what sysinfo says of the host), ``network`` (bridges, uplinks, a machine's NICs)
and ``nft`` (the anti-spoofing rules).
"""

from agents.backends.linux.backend import LinuxBackend
from agents.backends.linux.build import from_settings, make_storage
from agents.backends.linux.nodeinfo import RUNS_OSES, RUNS_TYPES

__all__ = ["RUNS_OSES", "RUNS_TYPES", "LinuxBackend", "from_settings", "make_storage"]
