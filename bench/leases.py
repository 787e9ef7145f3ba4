#!/usr/bin/env python
"""Benchmark: what room leases cost a seat's connect, against embedded mode, in the
same run.

    .venv/bin/python bench/leases.py --rooms 60

Starts a private PostgreSQL (Debian's, `initdb` in a temporary folder, 127.0.0.1) and
runs three phases with the same load: (1) the baseline, a server in embedded mode
(SQLite, no leases), where N seats of N new rooms connect one after the other; (2) the
same against a cluster node on PostgreSQL, whose connect also claims the room's lease;
(3) the lease claim alone on the node's store: N rooms claimed one by one, then N rooms
claimed by two nodes at once (each race has exactly one winner, which is checked). It
prints the connect time (first `room` snapshot after `connect`) and the claim time,
p50/p95/max. Loopback only; every process it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from storyroom.app import STORE_MODULES
from storyroom.cluster.store import ClusterStore
from storyroom.database import open_database
from storyroom.store import SessionRow, Store
from support.postgres import running_postgres
from support.server import SeatClient, create_session, serving


def figures(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  max {ms[-1]:6.1f} ms"


async def connects(folder: Path, rooms: int, **settings: str) -> list[float]:
    """N rooms' seat `a` connecting one after the other: the seconds each took."""
    took = []
    async with serving(folder, **settings) as server:
        for _ in range(rooms):
            created = await create_session(server.url)
            client = SeatClient(server.url, created["seats"]["a"]["token"])
            began = time.perf_counter()
            await client.connect()
            took.append(time.perf_counter() - began)
            await client.close()
    return took


async def claims(url: str, rooms: int) -> tuple[list[float], list[float]]:
    store = await Store.open(url, modules=STORE_MODULES)
    ids = [f"bench{i:05d}" for i in range(2 * rooms)]
    for session_id in ids:
        await store.create_session(SessionRow(session_id, "b", "en", 40, [], [], time.time()), [])
    await store.close()
    one = ClusterStore(await open_database(url))
    two = ClusterStore(await open_database(url))
    try:
        await one.register("bench-1", "-")
        await two.register("bench-2", "-")
        alone, raced = [], []
        for session_id in ids[:rooms]:
            began = time.perf_counter()
            assert await one.claim(session_id, "bench-1") == "bench-1"
            alone.append(time.perf_counter() - began)
        for session_id in ids[rooms:]:
            began = time.perf_counter()
            held = await asyncio.gather(
                one.claim(session_id, "bench-1"), two.claim(session_id, "bench-2")
            )
            raced.append(time.perf_counter() - began)
            assert held[0] == held[1] in ("bench-1", "bench-2"), held
        return alone, raced
    finally:
        await one.close()
        await two.close()


async def main(rooms: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_postgres() as postgres:
        folder = Path(tmp)
        baseline = await connects(folder / "embedded", rooms)
        cluster_url = postgres.new_database()
        node = await connects(
            folder / "node", rooms, database_url=cluster_url, node_id="bench-node"
        )
        alone, raced = await claims(postgres.new_database(), rooms)
    print(f"{rooms} rooms, one seat each, connecting one after the other")
    print(f"  connect, embedded (baseline, no lease)  {figures(baseline)}")
    print(f"  connect, cluster node (claims a lease)  {figures(node)}")
    print(f"  lease claim alone                       {figures(alone)}")
    print(f"  two nodes claiming at once (one wins)   {figures(raced)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=60)
    asyncio.run(main(parser.parse_args().rooms))
