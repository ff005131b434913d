"""Scorers rank the servers that passed every hard filter.

Each has one signature, ``(servers, request, policy, context, rng) -> [0..1 per server]``;
the pipeline sums them with their weights and the highest total wins. Scores are normalized
over the candidates (a value divided by the largest), so weights compare like with like.

The room scorers (unreserved RAM and disk) go one of two ways, the operator's choice
(``SDC_PLACEMENT_STRATEGY``): **spread**, the emptiest server first, or **pack**, the
fullest server that fits first. Triton's DAPI packs: its unreserved-RAM scorer (weight 2)
ranks the servers with the least unreserved RAM highest. Spread is our default;
docs/placement.md says why.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The strategies' names are settings' vocabulary (SDC_PLACEMENT_STRATEGY); named here too.
from headnode.config import PACK as PACK
from headnode.config import PLACEMENT_STRATEGIES as STRATEGIES
from headnode.config import SPREAD as SPREAD
from headnode.placement.state import (
    Context,
    PlacementRequest,
    Policy,
    ServerState,
    unreserved_disk,
    unreserved_ram,
)

Score = Callable[[Sequence[ServerState], PlacementRequest, Policy, Context, random.Random],
                 list[float]]


@dataclass(frozen=True)
class Scorer:
    name: str
    weight: float
    score: Score


def _normalized(values: list[float]) -> list[float]:
    top = max(values, default=0.0)
    if top <= 0:
        return [0.0] * len(values)
    return [max(v, 0.0) / top for v in values]


def score_unreserved_ram(servers: Sequence[ServerState], r: PlacementRequest, p: Policy,
                         c: Context, rng: random.Random) -> list[float]:
    # Emptiest first spreads machines over the fleet (DAPI's ranks the other way: packing).
    return _normalized([unreserved_ram(s, p) for s in servers])


def score_unreserved_disk(servers: Sequence[ServerState], r: PlacementRequest, p: Policy,
                          c: Context, rng: random.Random) -> list[float]:
    return _normalized([unreserved_disk(s, p) for s in servers])


def score_least_unreserved_ram(servers: Sequence[ServerState], r: PlacementRequest,
                               p: Policy, c: Context, rng: random.Random) -> list[float]:
    """Packing: the mirror of :func:`score_unreserved_ram` (1 − its score), so the fullest
    server that fits scores highest on the same scale."""
    return [1.0 - v for v in score_unreserved_ram(servers, r, p, c, rng)]


def score_least_unreserved_disk(servers: Sequence[ServerState], r: PlacementRequest,
                                p: Policy, c: Context, rng: random.Random) -> list[float]:
    return [1.0 - v for v in score_unreserved_disk(servers, r, p, c, rng)]


def score_owner_spread(servers: Sequence[ServerState], r: PlacementRequest, p: Policy,
                       c: Context, rng: random.Random) -> list[float]:
    """1 for a server without the owner's machines, falling to 0 for the one with most:
    one owner's machines spread so that one server's loss hurts them least."""
    counts = [c.owner_counts.get(s.uuid, 0) for s in servers]
    most = max(counts, default=0)
    if most == 0:
        return [1.0] * len(servers)
    return [1 - n / most for n in counts]


def score_soft_affinity(servers: Sequence[ServerState], r: PlacementRequest, p: Policy,
                        c: Context, rng: random.Random) -> list[float]:
    """The share of soft rules (``==~``, ``!=~``) each server meets."""
    if not c.soft_rules:
        return [0.0] * len(servers)
    n = len(c.soft_rules)
    return [sum((s.uuid in hosts) == rule.near for rule, hosts in c.soft_rules) / n
            for s in servers]


def score_uniform_random(servers: Sequence[ServerState], r: PlacementRequest, p: Policy,
                         c: Context, rng: random.Random) -> list[float]:
    # Breaks up herds: concurrent provisions from the same snapshot pick different servers.
    return [rng.random() for _ in servers]


#: DAPI's default weights; owner spread counts (DAPI ships it at 0) and soft affinity
#: outweighs all the others together, so a server meeting the soft rules wins when one fits.
DEFAULT_SCORERS: tuple[Scorer, ...] = (
    Scorer("unreserved-ram", 2.0, score_unreserved_ram),
    Scorer("unreserved-disk", 1.0, score_unreserved_disk),
    Scorer("owner-spread", 1.0, score_owner_spread),
    Scorer("soft-affinity", 5.0, score_soft_affinity),
    Scorer("uniform-random", 0.5, score_uniform_random),
)

#: what packing scores instead, per room scorer
PACKING: dict[str, Score] = {
    "unreserved-ram": score_least_unreserved_ram,
    "unreserved-disk": score_least_unreserved_disk,
}


def for_strategy(scorers: tuple[Scorer, ...], strategy: str) -> tuple[Scorer, ...]:
    """The scorers with their room scorers turned the strategy's way (same names and
    weights, so the weights' settings mean the same under both)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"no strategy {strategy!r} (spread or pack)")
    if strategy == SPREAD:
        return scorers
    return tuple(dataclasses.replace(s, score=PACKING.get(s.name, s.score)) for s in scorers)
