"""The overlay directory end to end: real API, worker, beat and sim agents whose tag
``external`` has an uplink (so each has an underlay address). The nodes' applied peers are
read from the sim agents' state files, as the agents keep them."""

from __future__ import annotations

import json
import time
from typing import Any

from agents.backends.simnet import sim_underlay
from tests.support.wait import wait_until

CLOUD_ENV = {"SDC_NIC_TAGS": "admin,external:eth1", "SDC_STATUS_INTERVAL": "1",
             "SDC_RESEND_INTERVAL": "2"}


def applied(cloud: Any, name: str) -> dict[str, Any]:
    """The overlay the node applied last ({"version", "peers"}; empty before any)."""
    path = cloud.workdir / name / "sim" / f"{cloud.agents[name]}.json"
    try:
        return dict(json.loads(path.read_text()).get("overlay") or {})
    except (OSError, ValueError):
        return {}


def mesh(cloud: Any, names: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each named node's peers when all of them are set up: the others' underlays."""
    under = {n: sim_underlay(cloud.agents[n], "eth1") for n in names}
    return {n: {"external": sorted(under[m] for m in names if m != n)} for n in names}


def peers_now(cloud: Any, names: list[str]) -> dict[str, Any]:
    return {n: applied(cloud, n).get("peers") for n in names}


def test_nodes_get_their_peers_and_keep_them_current(cloud: Any) -> None:
    three = sorted(cloud.agents)
    # Set up after they registered: each one's reports then name a version it should not
    # have, and the worker sends each its peers.
    wait_until(lambda: peers_now(cloud, three) == mesh(cloud, three), timeout=30,
               interval=0.2, message="the three set-up nodes to have each other as peers")

    new = cloud.start_agent(len(three))
    name = next(n for n, u in cloud.agents.items() if u == new)
    # registered, not set up: it gets the set-up nodes, and is nobody's peer yet
    wait_until(lambda: applied(cloud, name).get("peers") == {
        "external": sorted(sim_underlay(cloud.agents[n], "eth1") for n in three)},
        timeout=30, interval=0.2, message="the new node to get its peers")
    time.sleep(2.5)  # more than a report and a resend interval
    assert peers_now(cloud, three) == mesh(cloud, three)

    set_up_at = time.monotonic()
    cloud.api.put(f"/ops/servers/{new}", {"setup": True})
    everyone = [*three, name]
    wait_until(lambda: peers_now(cloud, everyone) == mesh(cloud, everyone), timeout=30,
               interval=0.2, message="every node to have the new one as a peer")
    took = time.monotonic() - set_up_at
    print(f"\nfour nodes: every peer list current {took:.1f} s after the set-up "
          "(status every 1 s, resend interval 2 s)")
    assert took < 10
