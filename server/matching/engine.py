"""The matching engine: pairs of applicants who see politics differently.

A pair is allowed when the two placements (1 very liberal … 4 centre … 7 very
conservative) are far enough apart, the two share a language, their weekly availability
shares at least one run of `min_overlap_minutes` in UTC, and they were never proposed to
each other before. Among allowed pairs the engine takes a maximum-weight matching of
maximum cardinality (rustworkx's exact blossom algorithm): as many people matched as possible,
then the same region preferred over nearby regions over anywhere.

The candidate graph stays sparse so it scales: each applicant keeps only its best few
partners by weight (`candidates`, at least `far_candidates` of them drawn from anywhere
so that people in crowded or lonely places can still be reached), found in pools that
already share a language and an allowed placement. Small populations keep more partners
each, up to `edge_budget` pairs in all, which makes them exact in practice.
`exact=True` builds the complete graph; the benchmark uses it for the quality gap.

Pure and synchronous (no I/O): the caller runs it off the event loop.
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import rustworkx as rx

from storyroom.matching.availability import SLOT_MINUTES, Window, first_run, runs, weekly_mask
from storyroom.matching.regions import Nearness, RegionTable

CENTRE = 4
PLACEMENTS = range(1, 8)
# Weights: where the two live, then a little for a longer shared slot.
NEARNESS_WEIGHT = {Nearness.SAME: 100, Nearness.NEARBY: 60, Nearness.FAR: 20}
OVERLAP_BONUS_MAX = 8  # one point per extra 30 minutes shared, up to four hours more


@dataclass(frozen=True, slots=True)
class Policy:
    """What makes a pair allowed and how wide the candidate graph is."""

    # 0: opposite sides of the centre; 1-6: placements at least this far apart.
    min_distance: int = 0
    min_overlap_minutes: int = 90
    # candidate partners kept per applicant, the best by weight (local before nearby
    # before far), of which at least `far_candidates` drawn from anywhere
    candidates: int = 8
    far_candidates: int = 2
    # a tier with more partners than this is sampled (this many draws), not scanned
    scan_limit: int = 80
    # small populations keep more candidates each: up to about this many pairs in all
    edge_budget: int = 60_000
    seed: int = 0

    def allows(self, a: int, b: int) -> bool:
        if self.min_distance <= 0:
            return (a - CENTRE) * (b - CENTRE) < 0
        return abs(a - b) >= self.min_distance


@dataclass(frozen=True, slots=True)
class Applicant:
    """What the engine knows of an applicant: never a name or contact details."""

    id: str
    region: str
    speaks: frozenset[str]
    placement: int
    time_zone: str
    availability: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a pair was proposed, in terms staff can check."""

    nearness: Nearness
    regions: tuple[str, str]
    languages: tuple[str, ...]
    placements: tuple[int, int]
    slot_start: datetime  # UTC, in the reference week
    slot_minutes: int

    @property
    def placement_gap(self) -> int:
        return abs(self.placements[0] - self.placements[1])

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.nearness.value,
            "regions": list(self.regions),
            "languages": list(self.languages),
            "placements": list(self.placements),
            "placement_gap": self.placement_gap,
            "slot": {"start": self.slot_start.isoformat(), "minutes": self.slot_minutes},
        }


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    weight: int
    explanation: Explanation


@dataclass(slots=True)
class Result:
    pairs: list[Pair]
    candidates: int  # applicants considered
    edges: int  # candidate pairs in the graph
    unmatched: list[str] = field(default_factory=list)

    @property
    def weight(self) -> int:
        return sum(p.weight for p in self.pairs)


@dataclass(slots=True)
class _Node:
    applicant: Applicant
    mask: int
    starts: int  # slots where a shared run could start (availability.runs)


def pair_key(a: str, b: str) -> tuple[str, str]:
    """Order-free key of a pair (for the never-twice rule)."""
    return (a, b) if a < b else (b, a)


def match(
    applicants: Sequence[Applicant],
    regions: RegionTable,
    reference: datetime,
    policy: Policy | None = None,
    excluded: Iterable[tuple[str, str]] = (),
    *,
    exact: bool = False,
) -> Result:
    """Propose pairs among `applicants`; `reference` is the Monday 00:00 UTC of the week
    availability is compared in; `excluded` pairs (either order) are never proposed.

    Sparse (the default) solves each census division on its own (same-region and nearby
    candidates), then everyone still unmatched together with fresh candidates from
    anywhere: two smaller exact problems instead of one large one. `exact` solves the
    complete candidate graph in one go.
    """
    policy = policy or Policy()
    nodes = []
    for a in applicants:
        mask = weekly_mask(a.availability, a.time_zone, reference)
        nodes.append(_Node(a, mask, runs(mask, policy.min_overlap_minutes)))
    never = {pair_key(a, b) for a, b in excluded}
    rng = random.Random(policy.seed)
    everyone = [n for n, node in enumerate(nodes) if node.starts]
    chosen: dict[tuple[int, int], int] = {}
    edges = 0
    if exact:
        graph = _complete(nodes, everyone, regions, policy, never)
        edges += len(graph)
        chosen.update(_solve(graph))
    else:
        keep = max(policy.candidates, policy.edge_budget // max(1, len(everyone)))
        wide = replace(policy, candidates=keep, scan_limit=max(policy.scan_limit, 2 * keep))
        graph = _sparse(nodes, everyone, regions, wide, never, rng)
        edges += len(graph)
        chosen.update(_solve(graph))
    pairs = []
    for (i, j), w in chosen.items():
        if applicants[j].id < applicants[i].id:
            i, j = j, i
        pairs.append(
            Pair(
                applicants[i].id,
                applicants[j].id,
                w,
                _explain(nodes[i], nodes[j], regions, reference, policy),
            )
        )
    pairs.sort(key=lambda p: (-p.weight, p.a, p.b))
    matched = {n for pair in chosen for n in pair}
    unmatched = [a.id for n, a in enumerate(applicants) if n not in matched]
    return Result(pairs, len(applicants), edges, unmatched)


def _solve(graph: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """Maximum-weight matching of maximum cardinality (rustworkx, exact)."""
    if not graph:
        return {}
    index: dict[int, int] = {}
    for i, j in graph:
        index.setdefault(i, len(index))
        index.setdefault(j, len(index))
    node_of = list(index)
    g = rx.PyGraph(multigraph=False)
    g.add_nodes_from(node_of)
    g.add_edges_from([(index[i], index[j], w) for (i, j), w in graph.items()])
    found = rx.max_weight_matching(g, max_cardinality=True, weight_fn=int)
    out = {}
    for u, v in found:
        i, j = node_of[u], node_of[v]
        key = (i, j) if i < j else (j, i)
        out[key] = graph[key]
    return out


def weight(a: _Node, b: _Node, regions: RegionTable, policy: Policy) -> int:
    """The pair's weight, or 0 when the pair is not allowed (languages, placements, time)."""
    if not a.applicant.speaks & b.applicant.speaks:
        return 0
    if not policy.allows(a.applicant.placement, b.applicant.placement):
        return 0
    shared = a.starts & b.starts
    if not shared:
        return 0
    return _weight(a.applicant.region, b.applicant.region, shared, regions)


def _weight(region_a: str, region_b: str, shared: int, regions: RegionTable) -> int:
    # each extra shared start is one more 15-minute slot: a point per extra half hour
    bonus = min(OVERLAP_BONUS_MAX, (shared.bit_count() - 1) // (30 // SLOT_MINUTES))
    return NEARNESS_WEIGHT[regions.nearness(region_a, region_b)] + bonus


def _allowed(
    nodes: list[_Node],
    i: int,
    j: int,
    regions: RegionTable,
    policy: Policy,
    never: set[tuple[str, str]],
) -> int:
    if i == j or pair_key(nodes[i].applicant.id, nodes[j].applicant.id) in never:
        return 0
    return weight(nodes[i], nodes[j], regions, policy)


def _complete(
    nodes: list[_Node],
    members: list[int],
    regions: RegionTable,
    policy: Policy,
    never: set[tuple[str, str]],
) -> dict[tuple[int, int], int]:
    """Every allowed pair among `members` (quadratic: for small populations)."""
    graph = {}
    for x, i in enumerate(members):
        for j in members[x + 1 :]:
            w = _allowed(nodes, i, j, regions, policy, never)
            if w:
                graph[(i, j) if i < j else (j, i)] = w
    return graph


def _sparse(
    nodes: list[_Node],
    members: list[int],
    regions: RegionTable,
    policy: Policy,
    never: set[tuple[str, str]],
    rng: random.Random,
) -> dict[tuple[int, int], int]:
    """The best few allowed partners of each member by weight: from its own region, from
    nearby regions and (at least `far_candidates`) from anywhere among `members`.

    Partners come from pools that already share a language and an allowed placement;
    a pool larger than `scan_limit` is read from a random offset of its shuffled order.
    """
    by_key: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for n in members:
        me = nodes[n].applicant
        for lang in me.speaks:
            by_key[(lang, me.placement)][me.region].append(n)
    keys_of: dict[tuple[frozenset[str], int], tuple[tuple[str, int], ...]] = {}
    pools: dict[tuple[object, ...], list[int]] = {}

    def pool(keys: tuple[tuple[str, int], ...], where: tuple[str, ...] | None) -> list[int]:
        """Members under `keys` living in `where` (None: anywhere), shuffled once."""
        found = pools.get((keys, where))
        if found is None:
            found = list(
                dict.fromkeys(
                    n
                    for key in keys
                    for region, ns in by_key[key].items()
                    if where is None or region in where
                    for n in ns
                )
            )
            rng.shuffle(found)
            pools[(keys, where)] = found
        return found

    limit = policy.scan_limit
    starts = [node.starts for node in nodes]
    graph: dict[tuple[int, int], int] = {}
    for i in members:
        me = nodes[i].applicant
        keys = keys_of.get((me.speaks, me.placement))
        if keys is None:
            keys = tuple(
                (lang, p)
                for lang in sorted(me.speaks)
                for p in PLACEMENTS
                if policy.allows(me.placement, p) and (lang, p) in by_key
            )
            keys_of[(me.speaks, me.placement)] = keys
        if not keys:
            continue
        mine = starts[i]
        seen: set[int] = {i}
        tiers: list[list[tuple[int, int]]] = []
        for where in ((me.region,), regions.nearby(me.region), None):
            candidates = pool(keys, where)
            if len(candidates) > limit:
                at = rng.randrange(len(candidates))
                candidates = (
                    candidates[at : at + limit] + candidates[: max(0, at + limit - len(candidates))]
                )
            scored = []
            for j in candidates:
                if j in seen:
                    continue
                seen.add(j)
                shared = mine & starts[j]
                if not shared or (never and pair_key(me.id, nodes[j].applicant.id) in never):
                    continue
                scored.append((_weight(me.region, nodes[j].applicant.region, shared, regions), j))
            tiers.append(scored)
        keep = heapq.nlargest(policy.far_candidates, tiers[2])
        rest = [c for c in (*tiers[0], *tiers[1], *tiers[2]) if c not in keep]
        keep += heapq.nlargest(policy.candidates - len(keep), rest)
        for w, j in keep:
            graph[(i, j) if i < j else (j, i)] = w
    return graph


def _explain(
    a: _Node, b: _Node, regions: RegionTable, reference: datetime, policy: Policy
) -> Explanation:
    shared = first_run(a.mask & b.mask, policy.min_overlap_minutes)
    start_slot, slots = shared if shared else (0, 0)
    return Explanation(
        nearness=regions.nearness(a.applicant.region, b.applicant.region),
        regions=(a.applicant.region, b.applicant.region),
        languages=tuple(sorted(a.applicant.speaks & b.applicant.speaks)),
        placements=(a.applicant.placement, b.applicant.placement),
        slot_start=reference + timedelta(minutes=start_slot * SLOT_MINUTES),
        slot_minutes=slots * SLOT_MINUTES,
    )
