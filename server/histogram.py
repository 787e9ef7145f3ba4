"""A cumulative fixed-bucket histogram, cheap enough to feed on every forwarded packet:
no locks, no allocation per value. Read by `/api/metrics` (JSON) and `/metrics`
(Prometheus)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


class Histogram:
    """`counts[i]` counts the values of at most `bounds[i]` and more than the bound
    before it; one more count holds everything larger than the last bound.

    Cumulative since it was made, so that a reader polling it can take differences
    between two reads and get the distribution of just that interval. Runs on the
    loop; not thread-safe."""

    __slots__ = ("bounds", "count", "counts", "max", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def at_most(self) -> list[tuple[float, int]]:
        """(bound, how many values were at most it), the bounds in order and then
        infinity with every value: Prometheus's `le` buckets."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets
