"""The proof of issue 15, shared by tests/server/test_cluster.py (which asserts on its
figures) and bench/cluster.py (which prints them beside their costs): on a running
`support.topology` cluster, N rooms of three aiortc seats sending tones record through
HAProxy, half of them placed on each node with the proxy's pin; a staff page on node-1
only watches them all; node-2 is SIGKILLed mid-take; its rooms come back through the
proxy to node-1, whose facilitator starts the next take; node-2 restarts and takes a new
room; every take is finalized by the worker. Each node's own sessions list is sampled
all along for split rooms."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import psycopg
from aiortc import RTCPeerConnection

from storyroom.finalize.queue import TASK_NAME
from support.media import (
    NO_ICE_SERVERS,
    RATE,
    TONES,
    SeatPeer,
    ToneTrack,
    audio_sent,
    decode_stem,
    dominant_frequency,
)
from support.polling import wait_for, wait_until
from support.process import metric
from support.server import CONSENT, SeatClient, call, create_session, give_consent
from support.staff import StaffSocket, session_cookie, signed_in
from support.topology import (
    Cluster,
    RoomSampler,
    connect_seat,
    seat_through,
    until_routed,
    worker_recordings,
)

SEATS = tuple(TONES)


@dataclass
class LiveRoom:
    session_id: str
    tokens: dict[str, str]
    clients: dict[str, SeatClient] = field(default_factory=dict)
    peers: dict[str, SeatPeer] = field(default_factory=dict)
    takes: list[str] = field(default_factory=list)
    sent_at_start: dict[str, float] = field(default_factory=dict)
    """What each seat had sent when the latest take started."""

    async def seat(self, proxy: str, pin: str | None) -> None:
        """All three seats through the proxy (the first with `pin`), their peers connected
        and hearing each other."""
        for seat in SEATS:
            self.clients[seat] = await seat_through(
                proxy, self.session_id, self.tokens[seat], pin if seat == SEATS[0] else None
            )
        self.peers = {
            seat: SeatPeer(client, ToneTrack(TONES[seat]), RTCPeerConnection(NO_ICE_SERVERS))
            for seat, client in self.clients.items()
        }
        for peer in self.peers.values():
            await peer.connect()
        await wait_for(
            lambda: all(len(p.received) == 2 for p in self.peers.values()),
            timeout=60,
            what=f"{self.session_id}'s seats hearing each other",
        )

    async def start_take(self) -> str:
        if not self.takes:
            await give_consent(self.clients, CONSENT)
        ack = await self.clients["facilitator"].call("recording:start")
        assert ack["ok"], ack
        self.takes.append(ack["recording"]["id"])
        self.sent_at_start = audio_sent(self.peers)
        return str(ack["recording"]["id"])

    async def stop_take(self) -> None:
        ack = await self.clients["facilitator"].call("recording:stop")
        assert ack["ok"], ack

    async def leave(self) -> None:
        for peer in self.peers.values():
            await peer.close()
        for client in self.clients.values():
            await client.close()
        self.peers, self.clients = {}, {}


@dataclass(frozen=True)
class KilledTake:
    """A take of node-2 at the kill: what each seat sent while it recorded, and what its
    finalized stem holds."""

    recording_id: str
    sent_s: dict[str, float]
    finalized_s: dict[str, float]
    frequency: dict[str, float]

    @property
    def missing_s(self) -> float:
        return max(self.sent_s[s] - self.finalized_s[s] for s in SEATS)


@dataclass
class ProofFigures:
    rooms: int
    rooms_on: dict[str, list[str]]
    staff_saw: int
    takes: list[str]
    finalized: dict[str, str]
    """Per take, its status at the end (all `ready` when nothing was lost)."""
    jobs: dict[str, list[str]]
    """Per take, its finalization jobs' statuses."""
    by_worker: int
    """Takes the worker's log says it finalized."""
    samples: int
    splits: int
    back_recording_s: list[float]
    """Per room of node-2, seconds from the kill to its next take's start on node-1."""
    killed: list[KilledTake]
    lag_at_kill_s: float
    restarted_took_new: bool
    restarted_took_failed_over: int
    cpu_s: dict[str, float]
    """CPU seconds (user + system) each node used in the steady window before the kill."""
    window_s: float
    shipped_bytes: float
    """Bytes both nodes shipped to S3 in that window."""
    seats_on: dict[str, int]

    @property
    def lost(self) -> int:
        return sum(status != "ready" for status in self.finalized.values())

    def lines(self) -> Iterable[str]:
        yield f"rooms: {self.rooms} ({', '.join(f'{n}: {len(r)}' for n, r in self.rooms_on.items())})"
        yield f"staff page on node-1 saw {self.staff_saw} of {self.rooms} rooms with 3 seats, recording"
        once = sum(j == ["succeeded"] for j in self.jobs.values())
        yield (
            f"takes: {len(self.takes)}; finalized ready: "
            f"{len(self.takes) - self.lost}; lost: {self.lost}; exactly one succeeded job: "
            f"{once}; finalized by the worker process: {self.by_worker}"
        )
        yield f"split rooms: {self.splits} in {self.samples} samples of both nodes"
        back = ", ".join(f"{s:.1f}" for s in self.back_recording_s)
        yield f"node-2's rooms recording again on node-1, seconds after the kill: {back}"
        for take in self.killed:
            parts = ", ".join(
                f"{s} {take.finalized_s[s]:.2f}/{take.sent_s[s]:.2f} s" for s in SEATS
            )
            yield f"killed take {take.recording_id}: finalized/sent {parts}; missing {take.missing_s:.2f} s"
        yield f"shipping lag at the kill: {self.lag_at_kill_s:.2f} s"
        yield (
            f"node-2 restarted: took a new room: {self.restarted_took_new}; "
            f"failed-over rooms it took: {self.restarted_took_failed_over}"
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/pid/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seats_connected(url: str) -> int:
    """Seats connected to the node at `url`, as its /metrics counts them."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("storyroom_seats_connected{")
        )
    )


async def _status(url: str, recording_id: str) -> str:
    async with aiohttp.ClientSession() as http:
        rec = await call(http, "GET", f"{url}/api/recordings/{recording_id}")
    return str(rec["status"])


async def _ended(cluster: Cluster, takes: list[str], timeout: float) -> dict[str, str]:
    async def all_ended() -> dict[str, str] | None:
        statuses = {t: await _status(cluster.url, t) for t in takes}
        done = all(s in ("ready", "failed") for s in statuses.values())
        return statuses if done else None

    return await wait_for(all_ended, timeout=timeout, interval=0.5, what="every take finalized")


def _jobs(cluster: Cluster, takes: list[str]) -> dict[str, list[str]]:
    with psycopg.connect(cluster.database_url) as conn:
        rows = conn.execute(
            "SELECT lock, status::text FROM procrastinate_jobs WHERE task_name = %s ORDER BY id",
            (TASK_NAME,),
        ).fetchall()
    jobs: dict[str, list[str]] = {t: [] for t in takes}
    for lock, status in rows:
        jobs.setdefault(str(lock), []).append(str(status))
    return jobs


async def prove(cluster: Cluster, rooms: int, seconds: float) -> ProofFigures:
    """Run the proof on `cluster` with `rooms` rooms whose first takes record `seconds`
    before the kill; its figures (asserting only that each step was accepted)."""
    proxy = cluster.url
    sampler = RoomSampler(cluster)
    live: list[LiveRoom] = []
    async with AsyncExitStack() as stack:
        staff = await stack.enter_async_context(signed_in(cluster.nodes["node-1"]))
        page = StaffSocket()
        await page.connect(cluster.nodes["node-1"].url, cookie=session_cookie(staff.http))
        stack.push_async_callback(page.close)
        stack.push_async_callback(sampler.stop)
        sampler.start()
        for _ in range(rooms):
            created = await create_session(proxy)
            room = LiveRoom(created["id"], {s: created["seats"][s]["token"] for s in SEATS})
            live.append(room)

        async def leave_all() -> None:
            for room in live:
                await room.leave()

        stack.push_async_callback(leave_all)
        pins = {room.session_id: ("node-1", "node-2")[n % 2] for n, room in enumerate(live)}
        for room in live:
            await room.seat(proxy, pins[room.session_id])
        rooms_on = {
            node: [r.session_id for r in live if cluster.holder(r.session_id) == node]
            for node in ("node-1", "node-2")
        }
        assert sorted(s for ids in rooms_on.values() for s in ids) == sorted(pins), rooms_on
        assert all(pins[s] == node for node, ids in rooms_on.items() for s in ids), rooms_on

        for room in live:
            await room.start_take()
        saw = 0
        for room in live:
            await page.seen(
                room.session_id,
                f"{room.session_id} live on node-1's staff page",
                connected=list(SEATS),
                recording="recording",
            )
            saw += 1
        seats_on = {node: await seats_connected(p.url) for node, p in cluster.nodes.items()}

        # the steady window: every room recording; CPU and S3 traffic measured over it
        victims = [r for r in live if r.session_id in rooms_on["node-2"]]
        started = {r.session_id: r.sent_at_start for r in victims}
        shipped_0 = sum(
            [await metric(n.url, "storyroom_shipped_bytes_total") for n in cluster.nodes.values()]
        )
        cpu_0 = {n: cpu_seconds(p.process.pid) for n, p in cluster.nodes.items()}
        window_0 = time.monotonic()
        await wait_until(window_0 + seconds)
        cpu = {n: cpu_seconds(p.process.pid) - cpu_0[n] for n, p in cluster.nodes.items()}
        shipped = (
            sum(
                [
                    await metric(n.url, "storyroom_shipped_bytes_total")
                    for n in cluster.nodes.values()
                ]
            )
            - shipped_0
        )
        window = time.monotonic() - window_0

        lag = await metric(cluster.nodes["node-2"].url, "storyroom_shipping_lag_seconds")
        killed_at = cluster.nodes["node-2"].signal(signal.SIGKILL)
        at_kill = {r.session_id: audio_sent(r.peers) for r in victims}
        await cluster.nodes["node-2"].exited(timeout=10)

        # node-2's seats come back through the proxy, every room at once as their pages
        # would, and its facilitator starts the next take; then node-1's rooms stop
        for room in victims:
            await room.leave()

        async def back_recording(room: LiveRoom) -> float:
            await room.seat(proxy, "node-2")  # the page's old pin: refused, then node-1
            assert cluster.holder(room.session_id) == "node-1"
            await room.start_take()
            return time.monotonic() - killed_at

        back_s = list(await asyncio.gather(*(back_recording(room) for room in victims)))
        for room in live:
            if room not in victims:
                await room.stop_take()

        # node-2 back under its id: a new room goes to it, the failed-over ones do not
        restarted = cluster.start_node("node-2")
        await restarted.ready("/readyz", timeout=90)
        await until_routed(cluster, "node-2")
        created = await create_session(proxy)
        fresh = LiveRoom(created["id"], {s: created["seats"][s]["token"] for s in SEATS})
        live.append(fresh)
        await fresh.seat(proxy, "node-2")
        took_new = cluster.holder(fresh.session_id) == "node-2"
        await fresh.start_take()
        took_failed_over = 0
        for room in victims:
            client, refused = await connect_seat(
                f"{restarted.url}/?session={room.session_id}", room.tokens["b"]
            )
            if client is not None:
                took_failed_over += 1
                await client.close()
            else:
                assert refused == {"code": "wrong_node", "node": "node-1"}, refused
        await wait_until(time.monotonic() + 3.0)
        for room in [*victims, fresh]:
            await room.stop_take()
        await sampler.stop()
        takes = [t for room in live for t in room.takes]

    statuses = await _ended(cluster, takes, timeout=120 + 30 * len(takes))
    jobs = _jobs(cluster, takes)
    assert cluster.worker is not None
    worker_log = cluster.worker.log()
    by_worker = sum(f"recording {t} ready" in worker_log for t in takes)
    killed = []
    for room in victims:
        take = room.takes[0]
        folder = worker_recordings(cluster) / take
        sent = {s: at_kill[room.session_id][s] - started[room.session_id][s] for s in SEATS}
        # a take that did not finalize counts as all missing
        ready = statuses[take] == "ready"
        audio = {s: decode_stem(folder, s) if ready else np.zeros(0) for s in SEATS}
        killed.append(
            KilledTake(
                take,
                sent,
                {s: len(a) / RATE for s, a in audio.items()},
                {s: dominant_frequency(a[-RATE:]) for s, a in audio.items()},
            )
        )
    return ProofFigures(
        rooms=rooms,
        rooms_on=rooms_on,
        staff_saw=saw,
        takes=takes,
        finalized=statuses,
        jobs=jobs,
        by_worker=by_worker,
        samples=sampler.samples,
        splits=len(sampler.splits),
        back_recording_s=back_s,
        killed=killed,
        lag_at_kill_s=lag,
        restarted_took_new=took_new,
        restarted_took_failed_over=took_failed_over,
        cpu_s=cpu,
        window_s=window,
        shipped_bytes=shipped,
        seats_on=seats_on,
    )
