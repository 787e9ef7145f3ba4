#!/usr/bin/env python
"""Benchmark: what the Redis fan-out costs a staff page's view of the rooms, against one
node without Redis, in the same run.

    .venv/bin/python bench/redis_fanout.py --rooms 6 --events 30

Starts a private PostgreSQL cluster (tests/support/postgres.py) and, for the cluster
phase, a real redis-server (no persistence), all on 127.0.0.1, every process stopped
by pid. Two phases with the same load: N rooms of three seats (real Socket.IO seat
clients, no audio), recording, whose facilitator sends markers one after the other, and one staff
page (namespace /staff, the operator's token) that times each room change's summary:

- baseline: one `storyroom serve` node on the database, no Redis; rooms and the staff
  page on it (python-socketio's in-process manager);
- cluster: two nodes on the same database and Redis; rooms on node B, the staff page
  first on node B too (the same processes, no hop between nodes), then on node A, so
  every summary crosses Redis to reach it.

Printed side by side: the time from a marker's send to its room's summary on the staff
page (p50, p95, max), and, in the cluster phase, Redis's PUBLISH calls per room event
against the seat snapshots sent per room event (which stay on node B).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import two_nodes
from support.postgres import running_postgres
from support.process import serve
from support.redis import RedisServer
from support.server import (
    CONSENT,
    STAFF_TOKEN,
    SeatClient,
    close_clients,
    create_session,
    give_consent,
    seat_clients,
)


@dataclass
class StaffPage:
    """A staff page that notes when each room's summary arrived."""

    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    arrivals: dict[str, list[float]] = field(default_factory=dict)

    async def connect(self, url: str) -> None:
        def arrived(summary: dict[str, Any]) -> None:
            self.arrivals.setdefault(summary["id"], []).append(time.monotonic())

        self.sio.on("session", arrived, namespace="/staff")
        await self.sio.connect(
            url, namespaces=["/staff"], auth={"token": STAFF_TOKEN}, transports=["websocket"]
        )

    async def after(self, room: str, sent: float, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            later = [t for t in self.arrivals.get(room, []) if t >= sent]
            if later:
                return later[0] - sent
            if time.monotonic() > deadline:
                raise TimeoutError(f"no summary of {room} within {timeout} s")
            await asyncio.sleep(0.001)


@dataclass
class Phase:
    name: str
    latencies: list[float]
    events: int
    snapshots: int
    publishes: int | None


async def run_rooms(
    name: str,
    room_url: str,
    staff_url: str,
    rooms: int,
    events: int,
    count: Callable[[], int | None],
) -> Phase:
    """One phase: the markers' latencies, and the snapshots and PUBLISHes (`count`) while
    they were sent."""
    page = StaffPage()
    await page.connect(staff_url)
    seated: list[dict[str, SeatClient]] = []
    latencies: list[float] = []
    try:
        created = [await create_session(room_url, title=f"bench {n}") for n in range(rooms)]
        for session in created:
            clients = await seat_clients(room_url, session)
            await give_consent(clients, CONSENT)
            ack = await clients["facilitator"].call("recording:start")  # markers need a take
            assert ack["ok"], ack
            seated.append(clients)
        await asyncio.sleep(0.5)  # the joins' summaries are not measured
        before = sum(len(c.snapshots) for clients in seated for c in clients.values())
        published = count()

        async def one_room(session: dict[str, Any], clients: dict[str, SeatClient]) -> None:
            for n in range(events):
                sent = time.monotonic()
                ack = await clients["facilitator"].call("marker", {"label": f"m{n}"})
                assert ack["ok"], ack
                latencies.append(await page.after(session["id"], sent))

        await asyncio.gather(*(one_room(s, c) for s, c in zip(created, seated, strict=True)))
        snapshots = sum(len(c.snapshots) for clients in seated for c in clients.values()) - before
        after = count()
    finally:
        for clients in seated:
            await close_clients(clients)
        await page.sio.disconnect()
        await page.sio.shutdown()
    delta = None if after is None or published is None else after - published
    return Phase(name, latencies, rooms * events, snapshots, delta)


def no_count() -> int | None:
    return None


def publishes(redis: RedisServer) -> int:
    stats = redis.info("commandstats").get("cmdstat_publish", "calls=0")
    return int(stats.split(",")[0].removeprefix("calls="))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", type=int, default=6)
    parser.add_argument("--events", type=int, default=30, help="markers per room")
    args = parser.parse_args()
    phases: list[Phase] = []
    with (
        running_postgres() as postgres,
        tempfile.TemporaryDirectory(prefix="storyroom-bench-") as tmp,
    ):
        folder = Path(tmp)
        solo = serve(
            folder / "solo",
            folder / "solo.log",
            env={"STORYROOM_DATABASE_URL": postgres.new_database()},
        )
        try:
            await solo.ready()
            phases.append(
                await run_rooms(
                    "one node, no Redis", solo.url, solo.url, args.rooms, args.events, no_count
                )
            )
        finally:
            solo.stop()
        async with two_nodes(folder / "cluster", postgres) as nodes:
            count = functools.partial(publishes, nodes.redis)
            for name, staff in (
                ("Redis; rooms and staff on B", nodes.b),
                ("Redis; rooms on B, staff on A", nodes.a),
            ):
                phases.append(
                    await run_rooms(name, nodes.b.url, staff.url, args.rooms, args.events, count)
                )
    print(f"\n{args.rooms} rooms x {args.events} markers; a marker's summary on the staff page:")
    print(
        f"{'phase':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'snapshots/event':>16} {'PUBLISH/event':>14}"
    )
    for phase in phases:
        ordered = sorted(phase.latencies)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        publish = "-" if phase.publishes is None else f"{phase.publishes / phase.events:.2f}"
        print(
            f"{phase.name:34} {statistics.median(ordered) * 1000:8.1f} {p95 * 1000:8.1f} "
            f"{ordered[-1] * 1000:8.1f} {phase.snapshots / phase.events:16.2f} {publish:>14}"
        )


if __name__ == "__main__":
    asyncio.run(main())
