"""The matching engine on generated populations: every proposed pair keeps the rules
(placement distance, a shared language, a shared 90-minute slot checked independently in
UTC, never the same two twice), local pairs are preferred, the matching is as large as
possible, and the sparse graph stays close to the exact optimum (networkx as the
independent referee). Also the region table and availability in time zones."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import networkx as nx
import pytest

from storyroom.matching.availability import (
    Window,
    intersect,
    intervals,
    runs,
    week_start,
    weekly_mask,
)
from storyroom.matching.engine import Applicant, Policy, match
from storyroom.matching.regions import Nearness, regions

REFERENCE = week_start(datetime(2025, 3, 5, tzinfo=UTC))  # a Monday, before US DST starts
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
TUESDAY_EVENING = (Window(1, 18 * 60, 21 * 60),)


def population(n: int, seed: int) -> list[Applicant]:
    rng = random.Random(seed)
    codes = ["TX", "OK", "NM", "CA", "NY", "OH", "FL", "GA", "WA", "PR"]
    people = []
    for k in range(n):
        windows = set()
        for _ in range(rng.randint(1, 3)):
            day = rng.randrange(7)
            start = rng.randrange(8 * 60, 21 * 60, 30)
            windows.add(Window(day, start, min(24 * 60, start + rng.choice((60, 90, 120, 180)))))
        roll = rng.random()
        people.append(
            Applicant(
                id=f"app_{k:04d}",
                region=rng.choice(codes),
                speaks=frozenset({"en"} if roll < 0.6 else {"es"} if roll < 0.8 else {"en", "es"}),
                placement=rng.randint(1, 7),
                time_zone=rng.choice(ZONES),
                availability=tuple(sorted(windows)),
            )
        )
    return people


def person(
    pid: str,
    region: str,
    placement: int,
    speaks: str = "en",
    zone: str = "America/Chicago",
    windows: tuple[Window, ...] = TUESDAY_EVENING,
) -> Applicant:
    return Applicant(pid, region, frozenset(speaks.split(",")), placement, zone, windows)


def shared_minutes(a: Applicant, b: Applicant) -> float:
    """The longest shared stretch in the reference week, from concrete UTC intervals
    (not the engine's bit masks); the week wraps, so look a day beyond each end."""
    start, end = REFERENCE - timedelta(days=1), REFERENCE + timedelta(days=8)
    common = intersect(
        intervals(a.availability, a.time_zone, start, end),
        intervals(b.availability, b.time_zone, start, end),
    )
    return max(((s1 - s0).total_seconds() / 60 for s0, s1 in common), default=0)


def check_pairs(people: list[Applicant], policy: Policy, pairs: list[tuple[str, str]]) -> None:
    by_id = {p.id: p for p in people}
    seen: set[str] = set()
    for a_id, b_id in pairs:
        a, b = by_id[a_id], by_id[b_id]
        assert a_id not in seen and b_id not in seen, "someone is in two pairs"
        seen |= {a_id, b_id}
        assert a.speaks & b.speaks, (a, b)
        if policy.min_distance == 0:
            assert (a.placement - 4) * (b.placement - 4) < 0, (a.placement, b.placement)
        else:
            assert abs(a.placement - b.placement) >= policy.min_distance
        assert shared_minutes(a, b) >= 90, (a, b)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("min_distance", [0, 3, 5])
def test_every_pair_keeps_the_rules(seed: int, min_distance: int) -> None:
    people = population(400, seed)
    policy = Policy(min_distance=min_distance, seed=seed)
    result = match(people, regions(), REFERENCE, policy)
    assert result.pairs, "a population this size has pairs"
    check_pairs(people, policy, [(p.a, p.b) for p in result.pairs])
    matched = {i for p in result.pairs for i in (p.a, p.b)}
    assert set(result.unmatched) == {p.id for p in people} - matched
    for pair in result.pairs:
        ex = pair.explanation
        a = next(p for p in people if p.id == pair.a)
        b = next(p for p in people if p.id == pair.b)
        assert ex.regions == (a.region, b.region)
        assert ex.nearness == regions().nearness(a.region, b.region)
        assert set(ex.languages) == a.speaks & b.speaks
        assert ex.placement_gap == abs(a.placement - b.placement)
        assert ex.slot_minutes >= 90
        assert REFERENCE <= ex.slot_start < REFERENCE + timedelta(days=7)


@pytest.mark.parametrize("seed", [4, 5])
def test_no_pair_is_ever_proposed_twice(seed: int) -> None:
    people = population(300, seed)
    first = match(people, regions(), REFERENCE, Policy(seed=seed))
    before = {(p.a, p.b) for p in first.pairs}
    # everyone is waiting again (say all were rejected): none of those pairs comes back
    second = match(people, regions(), REFERENCE, Policy(seed=seed), excluded=before)
    again = {(p.a, p.b) for p in second.pairs}
    assert not again & before
    assert not {(b, a) for a, b in again} & before
    check_pairs(people, Policy(), sorted(again))


def test_excluded_pairs_in_either_order() -> None:
    rosa, dale = person("rosa", "TX", 2), person("dale", "TX", 6)
    assert match([rosa, dale], regions(), REFERENCE).pairs
    for excluded in ({("rosa", "dale")}, {("dale", "rosa")}):
        assert match([rosa, dale], regions(), REFERENCE, excluded=excluded).pairs == []


def test_same_region_then_nearby_then_anywhere() -> None:
    liberal = person("lib", "TX", 2)
    local, nearby, far = person("tx", "TX", 6), person("ok", "OK", 6), person("ny", "NY", 6)
    table = regions()

    def partner(*others: Applicant) -> tuple[str, Nearness]:
        [pair] = match([liberal, *others], table, REFERENCE).pairs
        return (pair.b if pair.a == "lib" else pair.a), pair.explanation.nearness

    assert partner(far, nearby, local) == ("tx", Nearness.SAME)
    assert partner(far, nearby) == ("ok", Nearness.NEARBY)
    assert partner(far) == ("ny", Nearness.FAR)


def test_as_many_people_as_possible_before_locality() -> None:
    # lib1 could pair locally with con1, but then lib2 (who only fits con1) and con2
    # (who only fits lib1) stay alone: two far pairs beat one local pair.
    wed = (Window(2, 18 * 60, 21 * 60),)
    both = TUESDAY_EVENING + wed
    lib1, con1 = person("lib1", "TX", 2, windows=both), person("con1", "TX", 6, windows=both)
    lib2 = person("lib2", "NY", 2, windows=TUESDAY_EVENING)
    con2 = person("con2", "WA", 6, windows=wed)
    pairs = {(p.a, p.b) for p in match([lib1, con1, lib2, con2], regions(), REFERENCE).pairs}
    assert pairs == {("con1", "lib2"), ("con2", "lib1")}


@pytest.mark.parametrize(
    ("zone_b", "windows_b", "matched"),
    [
        # 18:00-21:00 in New York is 15:00-18:00 in Los Angeles: the same hours in UTC
        ("America/Los_Angeles", (Window(1, 15 * 60, 18 * 60),), True),
        # the same wall clock three zones apart shares nothing
        ("America/Los_Angeles", (Window(1, 18 * 60, 21 * 60),), False),
        # 75 minutes in common is not enough
        ("America/Los_Angeles", (Window(1, 16 * 60 + 45, 20 * 60),), False),
        # Hawaii (no DST) 13:00-16:00 is New York 18:00-21:00 in March
        ("Pacific/Honolulu", (Window(1, 13 * 60, 16 * 60),), True),
    ],
)
def test_availability_is_compared_in_utc(
    zone_b: str, windows_b: tuple[Window, ...], matched: bool
) -> None:
    a = person("a", "NY", 2, zone="America/New_York", windows=(Window(1, 18 * 60, 21 * 60),))
    b = person("b", "CA", 6, zone=zone_b, windows=windows_b)
    assert bool(match([a, b], regions(), REFERENCE).pairs) is matched


def test_no_shared_language_no_pair() -> None:
    a, b = person("a", "TX", 1, speaks="es"), person("b", "TX", 7, speaks="en")
    assert match([a, b], regions(), REFERENCE).pairs == []
    c = person("c", "TX", 7, speaks="en,es")
    [pair] = match([a, b, c], regions(), REFERENCE).pairs
    assert (pair.a, pair.b) == ("a", "c") and pair.explanation.languages == ("es",)


def test_centre_is_matched_only_with_a_distance_policy() -> None:
    centre, right = person("centre", "TX", 4), person("right", "TX", 7)
    assert match([centre, right], regions(), REFERENCE).pairs == []
    assert match([centre, right], regions(), REFERENCE, Policy(min_distance=3)).pairs
    assert match([centre, right], regions(), REFERENCE, Policy(min_distance=4)).pairs == []


def _networkx_optimum(people: list[Applicant], policy: Policy) -> tuple[int, int]:
    """(pairs, weight) of the best matching of maximum size, by networkx on the engine's
    complete candidate graph."""
    exact = match(people, regions(), REFERENCE, policy, exact=True)
    graph = nx.Graph()
    # rebuild every allowed pair's weight from a fresh exact run over each pair
    by_id = {p.id: p for p in people}
    ids = sorted(by_id)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            found = match([by_id[a], by_id[b]], regions(), REFERENCE, policy, exact=True).pairs
            if found:
                graph.add_edge(a, b, weight=found[0].weight)
    best = nx.max_weight_matching(graph, maxcardinality=True)
    weight = sum(graph[a][b]["weight"] for a, b in best)
    assert (len(exact.pairs), exact.weight) == (len(best), weight)
    return len(best), weight


@pytest.mark.parametrize("seed", [11, 12])
def test_sparse_graph_is_within_one_percent_of_the_optimum(seed: int) -> None:
    people = population(70, seed)
    policy = Policy(seed=seed, edge_budget=0)  # the narrowest graph, as at 10,000
    pairs, weight = _networkx_optimum(people, policy)
    sparse = match(people, regions(), REFERENCE, policy)
    assert len(sparse.pairs) == pairs
    assert sparse.weight >= 0.99 * weight


def test_region_table() -> None:
    table = regions()
    assert len(table.regions) == 52
    for code, region in table.regions.items():
        assert set(region.names) == {"en", "es"}
        for other in region.neighbours:
            assert code in table.regions[other].neighbours, (code, other)
    assert table.nearness("TX", "TX") is Nearness.SAME
    assert table.nearness("TX", "OK") is Nearness.NEARBY  # neighbours
    assert table.nearness("ME", "CT") is Nearness.NEARBY  # same census division
    assert table.nearness("TX", "NY") is Nearness.FAR
    assert table.nearness("PR", "FL") is Nearness.FAR
    assert "OK" in table.nearby("TX") and "TX" not in table.nearby("TX")


def test_weekly_mask_wraps_the_week() -> None:
    late_sunday = weekly_mask([Window(6, 23 * 60, 24 * 60)], "UTC", REFERENCE)
    early_monday = weekly_mask([Window(0, 0, 60)], "UTC", REFERENCE)
    assert runs(late_sunday, 90) == 0 and runs(early_monday, 90) == 0
    assert runs(late_sunday | early_monday, 90) != 0
    # Monday 18:00 in Los Angeles (PST, UTC-8) is Tuesday 02:00 UTC
    mask = weekly_mask([Window(0, 18 * 60, 20 * 60)], "America/Los_Angeles", REFERENCE)
    assert mask == weekly_mask([Window(1, 2 * 60, 4 * 60)], "UTC", REFERENCE)
