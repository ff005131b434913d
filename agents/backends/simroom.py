"""Whether a machine fits a sim node, checked as a real node would check it: a new machine
needs unreserved memory (a stopped machine keeps its memory reserved, so it can start again)
and free pool; booting needs memory no running machine holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.backends.base import ImageNotFound, InsufficientResources

#: states in which a machine holds memory on the node
RAM_HOLDING_STATES = ("provisioning", "running")

Records = Mapping[str, Mapping[str, Any]]


def pool_used_mb(images: Records, machines: Records) -> int:
    return (sum(i["size_mb"] for i in images.values())
            + sum(m["disk_mb"] for m in machines.values()))


def ram_in_use_mb(machines: Records) -> int:
    return sum(m["ram_mb"] for m in machines.values() if m["state"] in RAM_HOLDING_STATES)


def check_fits(spec: Mapping[str, Any], images: Records, machines: Records, ram_mb: int,
               pool_size_mb: int, *, image_needed: bool = True) -> None:
    """``image_needed``: the machine's root is made from its image (a migration's target copy
    gets its root from the stream instead)."""
    if image_needed and spec["image_uuid"] not in images:
        raise ImageNotFound(f"image {spec['image_uuid']} is not in the pool of this node")
    reserved_ram = sum(m["ram_mb"] for m in machines.values())
    if spec["ram_mb"] > ram_mb - reserved_ram:
        raise InsufficientResources(
            f"machine needs {spec['ram_mb']} MiB of memory, node has "
            f"{ram_mb - reserved_ram} MiB unreserved")
    free_disk = pool_size_mb - pool_used_mb(images, machines)
    if spec["disk_mb"] > free_disk:
        raise InsufficientResources(
            f"machine needs {spec['disk_mb']} MiB of disk, pool has {free_disk} MiB free")


def check_ram_to_boot(machine: Mapping[str, Any], machines: Records, ram_mb: int) -> None:
    free = ram_mb - ram_in_use_mb(machines)
    if machine["ram_mb"] > free:
        raise InsufficientResources(
            f"machine needs {machine['ram_mb']} MiB of memory to boot, node has {free} MiB free")
