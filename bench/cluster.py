#!/usr/bin/env python
"""Benchmark: the proof of issue 15 with its figures, and what the cluster costs against
embedded mode, in the same run.

    .venv/bin/python bench/cluster.py --rooms 6 --seconds 20

Two phases with the same load (`--rooms` rooms of three aiortc seats sending tones,
every room recording for `--seconds`):

1. the baseline: one `storyroom serve` in embedded mode (SQLite, local files, its own
   finalizer): the CPU it uses per participant while every room records;
2. the cluster of tests/server/test_cluster.py (support.topology: PostgreSQL, SeaweedFS,
   Redis, HAProxy, node-1 and node-2 with the queue in PostgreSQL, one `storyroom
   worker`) running the proof (support.proof): half the rooms on each node, node-2
   SIGKILLed after the window. It prints the proof's figures, the CPU per participant
   on each node over the same window, and the bytes shipped to S3 per recorded minute.

CPU is user + system time of each server process (/proc/<pid>/stat) over the window,
divided by the window and by the seats connected to that process. Loopback only; every
process is stopped by pid; the whole run is bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.media import start_recording, tone_room
from support.polling import wait_for, wait_until
from support.postgres import running_postgres
from support.process import serve
from support.proof import cpu_seconds, prove, seats_connected
from support.topology import running_cluster

SETTINGS = {
    "STORYROOM_NODE_HEARTBEAT_S": "0.5",
    "STORYROOM_NODE_DEAD_AFTER_S": "6",
    "STORYROOM_NODE_REAP_INTERVAL_S": "0.5",
    "STORYROOM_QUEUE_HEARTBEAT_S": "0.5",
    "STORYROOM_QUEUE_STALLED_S": "3",
    "STORYROOM_LOG_LEVEL": "INFO",
}


async def embedded(folder: Path, rooms: int, seconds: float) -> tuple[float, int, float]:
    """CPU seconds one embedded server used while `rooms` rooms recorded, its seats, and
    the window's length."""
    await asyncio.to_thread(folder.mkdir, parents=True)
    server = serve(folder / "data", folder / "embedded.log")
    try:
        await server.ready()
        async with AsyncExitStack() as stack:
            for _ in range(rooms):
                clients, peers = await stack.enter_async_context(tone_room(server.url))
                await wait_for(lambda p=peers: all(len(x.received) == 2 for x in p.values()), 60)
                await start_recording(folder / "data" / "recordings", clients)
            seats = await seats_connected(server.url)
            began, cpu = time.monotonic(), cpu_seconds(server.process.pid)
            await wait_until(began + seconds)
            used, window = cpu_seconds(server.process.pid) - cpu, time.monotonic() - began
    finally:
        server.stop()
    return used, seats, window


def per_participant(cpu_s: float, seats: int, window_s: float) -> str:
    if not seats:
        return "no seats"
    return f"{100 * cpu_s / window_s / seats:5.2f} % of a core per participant ({seats} seats)"


async def main(rooms: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_postgres() as postgres:
        folder = Path(tmp)
        base_cpu, base_seats, base_window = await embedded(folder / "embedded", rooms, seconds)
        async with running_cluster(folder / "cluster", postgres, SETTINGS) as cluster:
            figures = await prove(cluster, rooms, seconds)
    print(f"\nthe proof ({rooms} rooms, first takes recording {seconds:.0f} s before the kill)")
    for line in figures.lines():
        print(f"  {line}")
    print(f"\ncost while every room records ({seconds:.0f} s window, same run)")
    print(f"  embedded (baseline)  {per_participant(base_cpu, base_seats, base_window)}")
    for node, cpu in figures.cpu_s.items():
        print(
            f"  cluster {node}       {per_participant(cpu, figures.seats_on[node], figures.window_s)}"
        )
    minutes = rooms * figures.window_s / 60
    print(
        f"  S3 traffic: {figures.shipped_bytes / 1e6:.2f} MB shipped for {minutes:.1f} recorded"
        f" take-minutes: {figures.shipped_bytes / minutes / 1e3:.0f} kB per recorded minute"
        f" (three stems and their timing logs)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="the whole run, seconds")
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(main(args.rooms, args.seconds), args.timeout))
