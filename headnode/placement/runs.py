"""What a server can run: the image OSes and image types its node says it runs.

A node's agent reports them in its sysinfo (``SDC Runs``: ``{"os": [...], "type": [...]}``,
schemas/agent.py), so what a backend runs is the node's word, not a table here. A server
registered by an agent older than that report says nothing; for it the table below, what
each backend ran before nodes reported it, still decides, so an existing fleet places as it
did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Runs:
    """Image OSes and types a server runs; None: any."""

    oses: frozenset[str] | None = None
    types: frozenset[str] | None = None

    def image(self, image_os: str, image_type: str) -> bool:
        return ((self.oses is None or image_os in self.oses)
                and (self.types is None or image_type in self.types))


ANYTHING = Runs()
NOTHING = Runs(frozenset(), frozenset())

#: what each backend runs when its node does not say (an older agent). SmartOS runs every
#: image (zones, lx zones for Linux, bhyve/kvm for zvols); the Linux backend runs containers
#: of Linux userlands only (no zones of illumos images, no hardware VMs); sim runs anything.
BACKEND_RUNS: dict[str, Runs] = {
    "sim": ANYTHING,
    "smartos": ANYTHING,
    "linux": Runs(frozenset({"linux", "other"}),
                  frozenset({"lx-dataset", "docker", "zone-dataset", "other"})),
}


def reported(value: Mapping[str, Any] | None) -> Runs | None:
    """A node's ``SDC Runs`` report; None when it has none. A list it leaves out is any."""
    if not value:
        return None
    oses, types = value.get("os"), value.get("type")
    return Runs(None if oses is None else frozenset(oses),
                None if types is None else frozenset(types))
