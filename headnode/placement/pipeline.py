"""The allocator: an ordered pipeline of hard filters, then weighted scorers.

Pure: a snapshot in, a decision out. The decision is the chosen server or, when none fits,
the full funnel (per step, how many servers it removed and why), so "why did nothing fit?"
always has an answer. Applying a decision (an atomic reservation) is the caller's job.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headnode.placement import filters, fit, scorers
from headnode.placement.filters import DEFAULT_FILTERS, HardFilter
from headnode.placement.scorers import DEFAULT_SCORERS, Scorer
from headnode.placement.state import (
    Context,
    PlacementRequest,
    Policy,
    ServerState,
    Snapshot,
)


@dataclass(frozen=True)
class StepResult:
    name: str
    reason: str
    removed: int
    remaining: int


#: how many next-best servers a decision keeps, best first: a create whose reservation on the
#: winner loses a race tries these before it reads the fleet again
NEXT_BEST = 3


@dataclass
class Decision:
    server: ServerState | None
    considered: int
    steps: list[StepResult] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # the winner's, weighted
    #: the servers that would have won next, best first (at most NEXT_BEST)
    next_best: list[ServerState] = field(default_factory=list)

    @property
    def candidates(self) -> list[ServerState]:
        """The winner, then the next best: what a create tries to reserve, in order."""
        return [self.server, *self.next_best] if self.server is not None else []

    @property
    def reasons(self) -> dict[str, int]:
        """Servers removed per reason, most first (pipeline order on ties)."""
        removing = [st for st in self.steps if st.removed]
        ordered = sorted(removing, key=lambda st: -st.removed)
        return {st.reason: st.removed for st in ordered}

    def explain(self, request: PlacementRequest) -> str:
        if self.server is not None:
            return (f"placed on {self.server.hostname or self.server.uuid} "
                    f"({self.considered} servers considered)")
        wanted = f"{fmt_mib(request.ram_mb)} of RAM and {fmt_mib(request.disk_mb)} of disk"
        if request.cpu_cap:
            wanted += f" and {request.cpu_cap} % of a CPU"
        if request.nic_tags:
            wanted += f" on nic tags {', '.join(sorted(request.nic_tags))}"
        if not self.considered:
            return f"no server can fit {wanted}: there are no servers"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.reasons.items())
        return f"no server can fit {wanted}: {parts}"

    def to_dict(self, request: PlacementRequest) -> dict[str, Any]:
        chosen = self.server
        return {
            "server_uuid": chosen.uuid if chosen else None,
            "hostname": chosen.hostname if chosen else None,
            "considered": self.considered,
            "steps": [dataclasses.asdict(st) for st in self.steps],
            "reasons": self.reasons,
            "scores": self.scores,
            "next_best": [s.uuid for s in self.next_best],
            "nic_tags": sorted(request.nic_tags),
            "message": self.explain(request),
        }


def fmt_mib(mib: int) -> str:
    if mib >= 1024 and mib % 1024 == 0:
        return f"{mib // 1024} GiB"
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


@dataclass(frozen=True)
class Pipeline:
    filters: tuple[HardFilter, ...] = DEFAULT_FILTERS
    scorers: tuple[Scorer, ...] = DEFAULT_SCORERS

    def with_weights(self, **weights: float) -> Pipeline:
        """The same steps with some weights changed (``uniform_random=0`` for a
        reproducible answer); an unknown name is an error, not a silent no-op."""
        names = {s.name.replace("-", "_") for s in self.scorers}
        unknown = set(weights) - names
        if unknown:
            raise ValueError(f"no scorer named {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, scorers=tuple(
            dataclasses.replace(s, weight=weights.get(s.name.replace("-", "_"), s.weight))
            for s in self.scorers))

    def passing(self, servers: Sequence[ServerState], request: PlacementRequest,
                policy: Policy, context: Context) -> tuple[list[ServerState], list[StepResult]]:
        kept = list(servers)
        steps = []
        for hard in self.filters:
            passes = hard.passes
            before = len(kept)
            if hard.needed is None or hard.needed(request, context):
                kept = [s for s in kept if passes(s, request, policy, context)]
            steps.append(StepResult(hard.name, hard.reason, before - len(kept), len(kept)))
        return kept, steps

    def decide(self, snapshot: Snapshot, request: PlacementRequest,
               policy: Policy = Policy(), rng: random.Random | None = None) -> Decision:
        context = Context.build(request, snapshot.owner_machines, snapshot.owner_counts)
        kept, steps = self.passing(snapshot.servers, request, policy, context)
        decision = Decision(server=None, considered=len(snapshot.servers), steps=steps)
        if not kept:
            return decision
        rng = rng or random.Random()
        totals = [0.0] * len(kept)
        columns: list[tuple[str, float, list[float]]] = []
        for scorer in self.scorers:
            if not scorer.weight:
                continue
            values = scorer.score(kept, request, policy, context, rng)
            columns.append((scorer.name, scorer.weight, values))
            for i, v in enumerate(values):
                totals[i] += scorer.weight * v
        # Highest total wins; the smallest uuid breaks ties, so a decision without the
        # random scorer is the same whatever order the snapshot came in.
        best, *runners_up = heapq.nsmallest(1 + NEXT_BEST, range(len(kept)),
                                            key=lambda i: (-totals[i], kept[i].uuid))
        decision.server = kept[best]
        decision.next_best = [kept[i] for i in runners_up]
        decision.scores = {name: round(weight * values[best], 6)
                           for name, weight, values in columns}
        return decision

    def room_for(self, server: ServerState, request: PlacementRequest,
                 policy: Policy) -> int:
        """How many more machines of ``request`` fit on ``server`` alone: zero unless every
        hard filter passes, else the tightest of RAM, disk, CPU and machine count (fit.py's
        rules, applied one machine after another)."""
        context = Context.build(request, ())
        if not all(f.passes(server, request, policy, context) for f in self.filters):
            return 0
        image_mb = fit.image_to_import(server.images, request.image_uuid, request.image_mb)
        return fit.machines_that_fit(server, policy, request.cpu_cap > 0, request.ram_mb,
                                     request.disk_mb, request.cpu_cap, image_mb)


DEFAULT_PIPELINE = Pipeline()


def configured(filter_names: Iterable[str], weights: Mapping[str, float],
               strategy: str) -> Pipeline:
    """The pipeline an operator's settings ask for: the filters that always run and the
    optional ones named, the scorers with these weights (by name, ``-`` as ``_``), turned
    the strategy's way (spread or pack). A bad name is a ValueError that says which."""
    chosen = filters.enabled(filter_names)
    weighted = Pipeline(chosen, DEFAULT_SCORERS).with_weights(**weights)
    return dataclasses.replace(weighted,
                               scorers=scorers.for_strategy(weighted.scorers, strategy))
