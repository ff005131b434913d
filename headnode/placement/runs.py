"""What a server can run: the image OSes and image types its node says it runs, and the image
file formats it installs (a root filesystem tarball, a ZFS send stream: each with the image
types the node installs from it).

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
    """Image OSes and types a server runs, and the (file format, image type) pairs it
    installs; None: any (formats: the node did not say, and its backend's table decides)."""

    oses: frozenset[str] | None = None
    types: frozenset[str] | None = None
    formats: frozenset[tuple[str, str]] | None = None

    def image(self, image_os: str, image_type: str) -> bool:
        return ((self.oses is None or image_os in self.oses)
                and (self.types is None or image_type in self.types))


def format_pairs(by_format: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """sysinfo's ``{format: [image types]}`` -> (format, type) pairs."""
    return frozenset((fmt, str(t)) for fmt, types in by_format.items() for t in types or ())


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


#: the file formats each backend installed before its nodes said so (an older agent), by
#: image type ("*": every other): a Linux node unpacks tarballs; a SmartOS node's imgadm
#: receives ZFS streams, and docker images' layer tarballs. A backend not here (sim) takes
#: anything.
BACKEND_FORMATS: dict[str, dict[str, frozenset[str]]] = {
    "linux": {"*": frozenset({"tar"})},
    "smartos": {"docker": frozenset({"tar"}), "*": frozenset({"zfs"})},
}


def backend_installs(backend: str, image_format: str, image_type: str) -> bool:
    """Whether a node of ``backend`` that does not report its formats installs the file."""
    table = BACKEND_FORMATS.get(backend)
    return table is None or image_format in table.get(image_type, table["*"])


def reported(value: Mapping[str, Any] | None) -> Runs | None:
    """A node's ``SDC Runs`` report; None when it has none. A list it leaves out is any."""
    if not value:
        return None
    oses, types, formats = value.get("os"), value.get("type"), value.get("format")
    return Runs(None if oses is None else frozenset(oses),
                None if types is None else frozenset(types),
                None if formats is None else format_pairs(formats))
