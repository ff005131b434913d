"""The allocator: an ordered pipeline of hard filters, then weighted scorers.

Pure: a snapshot in, a decision out. The decision is the chosen server or, when none fits,
the full funnel (per step, how many servers it removed and why), so "why did nothing fit?"
always has an answer. Applying a decision (an atomic reservation) is the caller's job.

A pipeline with a candidate limit (``candidates``, SDC_PLACEMENT_CANDIDATES) over a larger
fleet visits the servers in a random order and stops once that many have passed every
filter, then scores only those (Nomad's limit iterator over shuffled nodes; Borg's
relaxed randomization), so a decision costs about the same at 10,000 servers as at 100.
What stays exact: a refusal (fewer than the limit pass only once every server was
visited, so the funnel is the whole fleet's), the hard filters (every candidate passed
them all), and a fleet no larger than the limit (decided exactly as without one).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    #: the decision stopped at the candidate limit: ``considered`` servers of a larger
    #: fleet were visited, in a random order (never so for a refusal)
    sampled: bool = False

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
            sample = ", a random sample of the fleet" if self.sampled else ""
            return (f"placed on {self.server.hostname or self.server.uuid} "
                    f"({self.considered} servers considered{sample})")
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
    #: how many servers that pass every filter a decision looks for, in a random order,
    #: before it stops and scores only those; 0: every server (exact, as operators' views
    #: and simulations need)
    candidates: int = 0

    def visiting_all(self) -> Pipeline:
        """The same steps without a candidate limit: every server visited and scored."""
        return dataclasses.replace(self, candidates=0)

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
        servers = snapshot.servers
        rng = rng or random.Random()
        if self.candidates and len(servers) > self.candidates:
            kept, steps = self.sample(servers, request, policy, context, rng)
        else:
            kept, steps = self.passing(servers, request, policy, context)
        considered = len(kept) + sum(st.removed for st in steps)
        decision = Decision(server=None, considered=considered, steps=steps,
                            sampled=considered < len(servers))
        if not kept:
            return decision
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

    def sample(self, servers: Sequence[ServerState], request: PlacementRequest,
               policy: Policy, context: Context, rng: random.Random,
               ) -> tuple[list[ServerState], list[StepResult]]:
        """What :meth:`passing` answers, for the servers visited in a random order until
        ``candidates`` pass: each visited server is counted by the first filter it fails,
        as the step-by-step funnel counts it, so a visit of the whole fleet (fewer pass)
        gives exactly its funnel. The servers holding a machine a soft ``==~`` or hard
        ``==`` rule matches are visited first: they are few, a random sample would miss
        them, and when a hard ``==`` rule allows only them, any that pass are all that can
        (only a refusal walks on, for its funnel)."""
        active = [(i, hard.passes) for i, hard in enumerate(self.filters)
                  if hard.needed is None or hard.needed(request, context)]
        only = self._only_hosts(context)
        preferred = _soft_hosts(context) | (only or frozenset())
        firsts = [s for s in servers if s.uuid in preferred] if preferred else []
        removed = [0] * len(self.filters)
        kept: list[ServerState] = []
        for visited, s in enumerate(_visit_order(servers, firsts, rng), 1):
            for i, passes in active:
                if not passes(s, request, policy, context):
                    removed[i] += 1
                    break
            else:
                kept.append(s)
                if len(kept) >= self.candidates:
                    break
            if only is not None and kept and visited == len(firsts):
                break
        remaining = len(kept) + sum(removed)
        steps = []
        for hard, gone in zip(self.filters, removed, strict=True):
            remaining -= gone
            steps.append(StepResult(hard.name, hard.reason, gone, remaining))
        return kept, steps

    def _only_hosts(self, context: Context) -> frozenset[str] | None:
        """The only servers the hard ``==`` rules let through (each holds a match of every
        one); None when no such rule applies (none given, or the affinity filter is off)."""
        near = [hosts for rule, hosts in context.hard_rules if rule.near]
        if not near or filters.affinity not in (f.passes for f in self.filters):
            return None
        return frozenset.intersection(*near)

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


def _soft_hosts(context: Context) -> frozenset[str]:
    """The servers a soft ``==~`` rule would rather have (few: the owner's own)."""
    return frozenset().union(*(hosts for rule, hosts in context.soft_rules if rule.near))


def _visit_order(servers: Sequence[ServerState], firsts: Sequence[ServerState],
                 rng: random.Random) -> Iterator[ServerState]:
    """Every server once: ``firsts`` (some of ``servers``), then the others from a random
    start with a random stride prime to the fleet's size (a permutation of the fleet drawn
    in constant time, where a shuffle would cost a walk of it: every server is equally
    likely to come first, though the order is not one of all the permutations)."""
    n = len(servers)
    yield from firsts
    first = {s.uuid for s in firsts}
    start, stride = rng.randrange(n), 1
    if n > 2:
        stride = rng.randrange(1, n)
        while math.gcd(stride, n) != 1:
            stride = rng.randrange(1, n)
    for k in range(n):
        s = servers[(start + k * stride) % n]
        if not first or s.uuid not in first:
            yield s


DEFAULT_PIPELINE = Pipeline()


def configured(filter_names: Iterable[str], weights: Mapping[str, float],
               strategy: str, candidates: int = 0) -> Pipeline:
    """The pipeline an operator's settings ask for: the filters that always run and the
    optional ones named, the scorers with these weights (by name, ``-`` as ``_``), turned
    the strategy's way (spread or pack), with the candidate limit (0: none). A bad name is
    a ValueError that says which."""
    chosen = filters.enabled(filter_names)
    weighted = Pipeline(chosen, DEFAULT_SCORERS, candidates).with_weights(**weights)
    return dataclasses.replace(weighted,
                               scorers=scorers.for_strategy(weighted.scorers, strategy))
