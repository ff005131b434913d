"""``nft``: apply a script in one transaction, read a table back as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import HostCommandError, run
from agents.backends.host.ip import in_netns

NFT = "nft"


def apply(lines: Sequence[str], netns: Path | None = None) -> None:
    """``nft -f -``: every line or none (one transaction); nothing to do for no lines."""
    if lines:
        run(in_netns(netns, [NFT, "-f", "-"]), input="".join(f"{line}\n" for line in lines))


def list_table(family: str, table: str, netns: Path | None = None) -> list[dict[str, Any]] | None:
    """The ``nftables`` objects of one table (``nft -j list table``), None when it is absent."""
    try:
        out = run(in_netns(netns, [NFT, "-j", "list", "table", family, table]))
    except HostCommandError as exc:
        if "No such file or directory" in exc.stderr:
            return None
        raise
    objects: list[dict[str, Any]] = json.loads(out).get("nftables", [])
    return objects
