"""Server health figures for staff and the soak benchmark (`GET /api/metrics`).

Everything here is cheap enough to run on every forwarded packet (the latency
histogram) or on every request (the process figures): no locks, no allocation per
sample, no blocking reads beyond two small files under /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from storyroom.histogram import Histogram

LATENCY_BUCKETS_MS: Final = (
    0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0,
    75.0, 100.0, 150.0, 250.0, 500.0, 1000.0,
)  # fmt: skip
"""Upper bounds (inclusive) of the forwarding-latency buckets; one more bucket
counts everything slower."""


class LatencyHistogram(Histogram):
    """The time a packet spends in the server, in ms, from its arrival (the receiver
    tap) to the moment aiortc's sender takes it (cumulative: see `Histogram`)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(LATENCY_BUCKETS_MS)

    def add(self, seconds: float) -> None:
        self.observe(seconds * 1000.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets_ms": list(LATENCY_BUCKETS_MS),
            "counts": list(self.counts),
            "count": self.count,
            "sum_ms": round(self.sum, 3),
            "max_ms": round(self.max, 3),
        }


def histogram_quantile(counts: Sequence[int], q: float) -> float | None:
    """The `q` quantile (0..1) of a histogram with `LATENCY_BUCKETS_MS` bounds, in ms,
    interpolated linearly within its bucket; None when it is empty. The last
    (open-ended) bucket reads as its lower bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            low = LATENCY_BUCKETS_MS[index - 1] if index else 0.0
            if index >= len(LATENCY_BUCKETS_MS):
                return low
            high = LATENCY_BUCKETS_MS[index]
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return LATENCY_BUCKETS_MS[-1]


def process_figures() -> dict[str, Any]:
    """This process's resident memory, open file descriptors and asyncio tasks."""
    rss_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
            break
    fds: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone already
            target = os.readlink(f"/proc/self/fd/{fd}")
            fds[target.split(":", 1)[0] if ":" in target else "file"] += 1
    tasks = Counter(_task_name(task) for task in asyncio.all_tasks())
    return {
        "pid": os.getpid(),
        "rss_mb": round(rss_kb / 1024, 2),
        "open_fds": sum(fds.values()),
        "fds_by_kind": dict(fds),
        "asyncio_tasks": sum(tasks.values()),
        "tasks_by_coroutine": dict(tasks.most_common(12)),
        "threads": sum(1 for _ in Path("/proc/self/task").iterdir()),
    }


def _task_name(task: asyncio.Task[Any]) -> str:
    """The task's coroutine (qualified name): what a leak would be counted by."""
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or type(coro).__name__
