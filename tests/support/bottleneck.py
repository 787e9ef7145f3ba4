"""A narrow uplink on `lo`, for tests and benchmarks in the private network namespace:
a Linux `htb` class of a given rate with a FIFO, which only the packets its filters
pick go through (the rest pass a fast class)."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import numpy as np

from storyroom.recording import timeline

GSO_OFF = ("mtu", "1500", "gso_max_size", "1500", "gso_max_segs", "1")
GSO_ON = ("mtu", "65536", "gso_max_size", "65536", "gso_max_segs", "65535")


def tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True)


def set_loopback(*settings: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", *settings], check=True, capture_output=True)


def internet_sized_loopback() -> None:
    """`lo` with an internet path's packet size: 1500 bytes, and no 64 kB GSO bursts
    (one of which would never fit the bottleneck's FIFO). Best before anything connects."""
    set_loopback(*GSO_OFF)


class Bottleneck:
    """An htb class of `rate_kbit` on `lo` with a FIFO of `queue_ms` at that rate; only
    what `route` sends to it passes through it. `close` takes it away."""

    def __init__(self, rate_kbit: int, queue_ms: float) -> None:
        self.filters = 0
        limit = max(3000, int(rate_kbit * 1000 / 8 * queue_ms / 1000))
        tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20")
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb",
           "rate", f"{rate_kbit}kbit", "ceil", f"{rate_kbit}kbit", "quantum", "1514")  # fmt: skip
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb",
           "rate", "10gbit", "quantum", "200000")  # fmt: skip
        tc("qdisc", "add", "dev", "lo", "parent", "1:10", "handle", "10:", "bfifo",
           "limit", str(limit))  # fmt: skip

    def route(self, protocol: int, dport: int) -> None:
        """IP packets of `protocol` (6 TCP, 17 UDP) to `dport` go through the bottleneck."""
        self.filters += 1
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
           "match", "ip", "protocol", str(protocol), "0xff",
           "match", "ip", "dport", str(dport), "0xffff", "flowid", "1:10")  # fmt: skip

    def dropped(self) -> int:
        out = subprocess.run(
            ["tc", "-s", "qdisc", "show", "dev", "lo"], check=True, capture_output=True, text=True
        ).stdout
        block = out.split("qdisc bfifo 10:")[1]
        found = re.search(r"dropped (\d+)", block)
        return int(found.group(1)) if found else 0

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            tc("qdisc", "del", "dev", "lo", "root")


def arrivals(rec_dir: Path, seat: str) -> tuple[int, int, tuple[float, float, float]]:
    """`seat`'s packets received and lost on the way in (RTP sequence gaps), and their
    queueing delay (arrival against RTP timestamp, over the minimum: p50, p99, max) in
    ms, from the recording's timing logs."""
    segments = [s for s in timeline.read_recording(rec_dir) if s.seat == seat]
    packets = [p for s in segments for p in s.packets]
    if not packets:
        return 0, 0, (0.0, 0.0, 0.0)
    lost = 0
    for segment in segments:
        seqs = np.unwrap(np.array([p.seq for p in segment.packets], dtype=float), period=65536)
        lost += int(seqs.max() - seqs.min() + 1) - len(seqs)
    ts = np.unwrap(np.array([p.ts for p in packets], dtype=float), period=2**32)
    transit = np.array([p.arrival for p in packets]) - ts / 48000.0
    late = (transit - transit.min()) * 1000.0
    return (
        len(packets),
        lost,
        (
            float(np.percentile(late, 50)),
            float(np.percentile(late, 99)),
            float(late.max()),
        ),
    )
