#!/usr/bin/env python
"""Soak benchmark: recording rooms through an impaired network, for a long time.

    .venv/bin/python bench/soak.py --minutes 40 --rooms 4 --loss 3 --jitter-ms 30 --outage-every 300
    .venv/bin/python bench/soak.py --minutes 2 --rooms 2 --outage-every 50 --storm-rooms 2  # ~3 min

Starts `python -m storyroom serve` on 127.0.0.1 (fresh data directory) and the
impairment relay (`tests/support/netimpair.py`) as processes of their own, then N rooms of
three aiortc seats (`soak_seat.py`) that record for the whole run, every packet going
through the relay with random (or bursty) loss and jitter. On a schedule each seat
loses its network for `--outage-s`: every other time as a plain outage (the link drops
everything, the peer connection lives on), otherwise as a drop and rejoin (socket and
peer connection closed, a new pair afterwards, a new stem segment). Every
`--poll-s` it reads the server's `GET /api/metrics`. At the end it stops the
recordings, closes the rooms, waits for finalization and measures, per room and in
total: server RSS, open fds and asyncio tasks (idle before, start, end, after close),
the forwarding latency the server adds (p50/p99 per interval, from the histogram),
frames lost per received track outside the outages (next to the relay's own loss), the
marker bursts' drift in each finalized stem, each outage's gap in metadata.json, the
recording's duration against the wall clock, and whether every recording is `ready`.
With `--turn` the seats go relay-only through a local coturn (the relay in front of
it). Optionally (`--storm-rooms N`) a reconnection storm follows: N more rooms, all 3N
seats drop and rejoin in the same second, time for each room to hear everyone again.

Only 127.0.0.1, inside a network namespace of its own with nothing but `lo`. Bounded:
a hard timeout, and every child process is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))  # netimpair

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import rooms  # noqa: E402
import soak_analysis  # noqa: E402
import soak_seat  # noqa: E402
from seat_load import FRAME_S, SEATS  # noqa: E402
from soak_seat import SoakSeat, poll  # noqa: E402

from storyroom.__main__ import demo_session  # noqa: E402
from storyroom.media.aiortc_internals import restrict_host_addresses  # noqa: E402
from storyroom.media.metrics import histogram_quantile  # noqa: E402
from storyroom.netns import isolate_network  # noqa: E402
from support.coturn import Coturn, start_coturn  # noqa: E402
from support.netimpair import Impairment, RelayClient, RelayProcess, start_relay_process  # noqa: E402

GOALS = {
    "rss_mb_per_min": 1.0,
    "drift_ms": 20.0,
    "median_drift_ms": 5.0,
    "bursts_placed": 5,
    "gap_ms": 20.0,
    "p99_ms": 50.0,
    "p99_creep_ms": 10.0,
    "storm_recover_s": 5.0,
}
"""Goals that need a quiet machine: tests/fault/test_soak.py runs the short profile and
asserts only what holds however busy the machine is; these are reported here."""
UNPLANNED_LOSS_S = 35.0
"""How long before a seat noticed its connection had failed its audio may already have
stopped (ICE consent checks give up after about 30 s): excluded like an outage."""


class SoakError(Exception):
    """The run could not measure (a process died, a step timed out)."""


@dataclass
class Room:
    index: int
    session_id: str
    seats: list[SoakSeat]
    recording_id: str = ""
    started_wall: float = 0.0
    stopped_wall: float = 0.0
    outages: list[soak_analysis.Outage] = field(default_factory=list)


@dataclass
class Sample:
    at: float
    process: dict[str, Any]
    media: dict[str, Any]


class Soak:
    """One run: the server, the relay, the rooms, the samples."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.children = rooms.Children()
        self.relay_process: RelayProcess | None = None
        self.relay: RelayClient | None = None
        self.coturn: Coturn | None = None
        self.staff_token = secrets.token_hex(16)
        self.url = ""
        self.data_dir = tmp / "data"
        self.http: aiohttp.ClientSession | None = None
        self.samples: list[Sample] = []
        self.marks: dict[str, Sample] = {}
        self.impairment = Impairment(
            loss=args.loss / 100,
            burst_enter=args.burst_loss / 100 / 4 if args.burst_loss else 0.0,
            burst_exit=0.25,
            jitter_ms=args.jitter_ms,
            reorder=args.reorder / 100,
            duplicate=args.duplicate / 100,
        )
        self.loops = {s: soak_seat.encode_marker_loop(s, i) for i, s in enumerate(SEATS)}
        self.lookups = {s: {p: i for i, p in enumerate(pk)} for s, pk in self.loops.items()}
        self.epoch = math.floor(time.time())
        self.seed = args.seed

    # -- processes ---------------------------------------------------------------------

    def start_processes(self) -> None:
        port = rooms.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORYROOM_")}
        env["STORYROOM_STAFF_TOKEN"] = self.staff_token
        env["STORYROOM_ICE_HOST_ADDRESSES"] = "127.0.0.1"
        if self.args.turn:
            # coturn with short lifetimes, so that the run outlives many refreshes; with
            # --turn-lifetime-s 0 its defaults and aioice's own refresh timers, untouched
            lifetime = self.args.turn_lifetime_s or None
            self.coturn = start_coturn(
                self.tmp / "coturn",
                secret=secrets.token_hex(12),
                allocate_lifetime_s=lifetime,
                channel_lifetime_s=lifetime,
                permission_lifetime_s=lifetime,
            )
            env["STORYROOM_TURN_URLS"] = self.coturn.url
            env["STORYROOM_TURN_SECRET"] = self.coturn.secret or ""
            env["STORYROOM_ICE_TRANSPORT_POLICY"] = "relay"
            if lifetime is not None:
                soak_seat.refresh_turn_channels_every(max(5, lifetime // 2))
        command = [sys.executable, "-m", "storyroom", "serve", "--host", rooms.HOST]
        command += ["--port", str(port), "--data-dir", str(self.data_dir)]
        _, self.url, _ = rooms._launch(command, env, self.tmp / "server.log", port, self.children)
        self.relay_process = start_relay_process()
        self.relay = RelayClient(self.relay_process.control_port)

    def stop_processes(self) -> None:
        if self.coturn is not None:
            self.coturn.stop()
        if self.relay_process is not None:
            self.relay_process.stop()
        self.children.stop_all()

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        assert self.http is not None
        async with self.http.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {self.staff_token}"},
        ) as response:
            payload = await response.json()
            if response.status >= 300:
                raise SoakError(f"{method} {path}: {response.status} {payload}")
            return payload

    async def sample(self, mark: str | None = None) -> Sample:
        body = await self.api("GET", "/api/metrics")
        sample = Sample(float(body["at"]), body["process"], body["media"])
        self.samples.append(sample)
        if mark:
            self.marks[mark] = sample
        return sample

    # -- rooms ---------------------------------------------------------------------------

    async def open_rooms(self, count: int, first_index: int) -> list[Room]:
        assert self.relay is not None
        opened = []
        for index in range(first_index, first_index + count):
            created = await self.api(
                "POST", "/api/sessions", demo_session(title=f"Soak room {index}")
            )
            seats = [
                SoakSeat(
                    name=f"r{index}/{seat}",
                    seat=seat,
                    url=self.url,
                    token=created["seats"][seat]["token"],
                    packets=self.loops[seat],
                    epoch=self.epoch,
                    relay=self.relay,
                    impairment=self.impairment,
                    seed=self.seed + index * 3 + n,
                    lookups=self.lookups,
                    turn_port=self.coturn.port if self.coturn else None,
                )
                for n, seat in enumerate(SEATS)
            ]
            await asyncio.gather(*(s.join() for s in seats))
            opened.append(Room(index, created["id"], seats))
        all_seats = [s for room in opened for s in room.seats]
        await poll(lambda: all(s.connected for s in all_seats), 60, "every peer connection")
        for room in opened:
            room.recording_id = await soak_seat.start_recording(room.seats)
            room.started_wall = time.time()
        return opened

    async def close_rooms(self, opened: list[Room]) -> None:
        for room in opened:
            facilitator = next(s for s in room.seats if s.seat == "facilitator")
            if facilitator.sio is None or not facilitator.sio.connected:
                await facilitator.join()
            ack = await facilitator.call("recording:stop")
            room.stopped_wall = time.time()
            if not ack.get("ok"):
                raise SoakError(f"room {room.index}: recording:stop refused: {ack}")
        await asyncio.gather(*(s.close() for room in opened for s in room.seats))

    async def wait_finalized(self, opened: list[Room], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            for room in opened:
                rec = await self.api("GET", f"/api/recordings/{room.recording_id}")
                status[room.recording_id] = rec["status"]
            if all(v in ("ready", "failed") for v in status.values()):
                break
            await asyncio.sleep(1)
        return status

    async def wait_idle(self, baseline: Sample, timeout: float = 30) -> Sample:
        """Poll until nothing is connected and tasks are back to idle (or time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            sample = await self.sample()
            settled = sample.media["peer_connections"] == 0 and (
                sample.process["asyncio_tasks"] <= baseline.process["asyncio_tasks"]
            )
            if settled or time.monotonic() > deadline:
                return sample
            await asyncio.sleep(1)

    # -- the schedule --------------------------------------------------------------------

    def outage_plan(
        self, opened: list[Room], begin: float, end: float
    ) -> list[tuple[float, Room, SoakSeat, str]]:
        args = self.args
        seats = [(room, seat) for room in opened for seat in room.seats]
        stagger = max(0.5, min(4.0, (args.outage_every - args.outage_s - 5) / max(1, len(seats))))
        plan = []
        for j, (room, seat) in enumerate(seats):
            k = 0
            while True:
                at = begin + args.first_outage_s + j * stagger + k * args.outage_every
                if at + args.outage_s + 15 > end:
                    break
                plan.append((at, room, seat, "network" if (j + k) % 2 == 0 else "rejoin"))
                k += 1
        return sorted(plan, key=lambda p: p[0])

    async def outage(self, at: float, room: Room, seat: SoakSeat, kind: str) -> None:
        assert self.relay is not None
        seconds = self.args.outage_s
        await asyncio.sleep(max(0.0, at - 0.5 - time.time()))
        if seat.link is None:
            return
        await self.relay.call("outage", names=[seat.link], start=at, seconds=seconds)
        link = seat.link
        if kind == "rejoin":
            # gone a moment after the network: the relay sees what the outage took
            await asyncio.sleep(max(0.0, at + 0.1 - time.time()))
            async with seat.lock:
                await seat.drop()
                await asyncio.sleep(max(0.0, at + seconds - time.time()))
                await seat.join()
        room.outages.append(soak_analysis.Outage(seat.seat, kind, at, seconds, link, seat.link))

    async def poller(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                sample = await self.sample()
                minute = (sample.at - self.marks["start"].at) / 60
                latency = self.interval_latency(-2, -1)
                progress(
                    f"minute {minute:5.1f}: RSS {sample.process['rss_mb']:.1f} MB, "
                    f"{sample.process['asyncio_tasks']} tasks, {sample.process['open_fds']} fds, "
                    f"{sample.media['peer_connections']} peer connections, latency p50/p99 "
                    f"{fmt(latency[0])}/{fmt(latency[1])} ms"
                )

    def interval_latency(self, a: int, b: int) -> tuple[float | None, float | None]:
        if len(self.samples) < 2:
            return None, None
        before = self.samples[a].media["forward_latency"]["counts"]
        after = self.samples[b].media["forward_latency"]["counts"]
        diff = [y - x for x, y in zip(before, after, strict=True)]
        return histogram_quantile(diff, 0.5), histogram_quantile(diff, 0.99)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        restrict_host_addresses(["127.0.0.1"])
        self.start_processes()
        try:
            return await self._run()
        finally:
            if self.relay is not None:
                await self.relay.close()

    async def _run(self) -> dict[str, Any]:
        args = self.args
        async with aiohttp.ClientSession() as self.http:
            cold = await self.sample("cold")
            # One short room first, so that what is made once and kept (socketio's
            # service task, the finalizer's worker process) is in the idle baseline.
            warmup = await self.open_rooms(1, 900)
            await asyncio.sleep(3)
            await self.close_rooms(warmup)
            await self.wait_finalized(warmup, 60)
            idle = await self.wait_idle(cold)
            self.marks["idle"] = idle
            progress(f"server up: RSS {idle.process['rss_mb']} MB; opening {args.rooms} rooms")
            opened = await self.open_rooms(args.rooms, 0)
            start = await self.sample("start")
            soak_end = start.at + args.minutes * 60
            plan = self.outage_plan(opened, start.at, soak_end)
            progress(
                f"{args.rooms} rooms recording; {len(plan)} outages planned; {args.minutes} min"
            )
            poller = asyncio.create_task(self.poller(args.poll_s))
            outages = [asyncio.create_task(self.outage(*p)) for p in plan]
            try:
                await asyncio.sleep(max(0.0, soak_end - time.time()))
                done = await asyncio.gather(*outages, return_exceptions=True)
                failures = [d for d in done if isinstance(d, BaseException)]
                if failures:
                    raise SoakError(f"an outage step failed: {failures[0]!r}")
            finally:
                poller.cancel()
                for task in outages:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            end = await self.sample("end")
            await self.close_rooms(opened)
            assert self.relay is not None
            relay_stats = (await self.relay.call("stats"))["links"]
            status = await self.wait_finalized(opened, 120 + args.minutes * 20 * args.rooms)
            closed = await self.wait_idle(idle)
            self.marks["closed"] = closed
            storm = await self.storm(idle) if args.storm_rooms else None
        return self.figures(opened, relay_stats, status, storm, end)

    async def storm(self, idle: Sample) -> dict[str, Any]:
        args = self.args
        progress(f"storm: opening {args.storm_rooms} rooms")
        opened = await self.open_rooms(args.storm_rooms, 1000)
        await asyncio.sleep(args.storm_settle_s)
        seats = [s for room in opened for s in room.seats]
        began = time.time()
        await asyncio.gather(*(s.drop() for s in seats))
        await asyncio.gather(*(s.join() for s in seats))
        rejoined = time.time() - began
        recovered: dict[int, float] = {}

        def check() -> bool:
            for room in opened:
                if room.index in recovered:
                    continue
                if all(
                    s.connected and all(h.last_arrival > began for h in s.heard.values())
                    for s in room.seats
                ):
                    recovered[room.index] = time.time() - began
            return len(recovered) == len(opened)

        with contextlib.suppress(TimeoutError):
            await poll(check, 30, "every storm room hearing everyone again")
        progress(f"storm: rejoined in {rejoined:.2f} s; {len(recovered)}/{len(opened)} recovered")
        await asyncio.sleep(args.storm_settle_s)
        await self.close_rooms(opened)
        status = await self.wait_finalized(opened, 180)
        segments = {}
        for room in opened:
            meta_path = self.data_dir / "recordings" / room.recording_id / "metadata.json"
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                segments[room.index] = {s: v["segments"] for s, v in meta["stems"].items()}
        after = await self.wait_idle(idle)
        self.marks["after_storm"] = after
        return {
            "rooms": len(opened),
            "seats": len(seats),
            "drop_and_rejoin_s": round(rejoined, 3),
            "recover_s": {i: round(v, 3) for i, v in recovered.items()},
            "recovered": len(recovered),
            "status": status,
            "segments": segments,
        }

    # -- figures ----------------------------------------------------------------------------

    def figures(
        self,
        opened: list[Room],
        relay_stats: dict[str, Any],
        status: dict[str, str],
        storm: dict[str, Any] | None,
        end: Sample,
    ) -> dict[str, Any]:
        start = self.marks["start"]
        minutes = (end.at - start.at) / 60
        soak = [s for s in self.samples if start.at <= s.at <= end.at]
        rss_slope = _slope([(s.at / 60, s.process["rss_mb"]) for s in soak])
        intervals = []
        for i in range(1, len(soak)):
            a, b = self.samples.index(soak[i - 1]), self.samples.index(soak[i])
            p50, p99 = self.interval_latency(a, b)
            intervals.append(
                {"minute": round((soak[i].at - start.at) / 60, 2), "p50_ms": p50, "p99_ms": p99}
            )
        up = _relay_loss(relay_stats, "up")
        down = _relay_loss(relay_stats, "down")
        per_room = []
        for room in opened:
            per_room.append(self.room_figures(room, status, relay_stats))
        server = {
            key: {mark: self.marks[mark].process[key] for mark in self.marks}
            for key in ("rss_mb", "open_fds", "asyncio_tasks", "threads")
        }
        last = self.marks["after_storm" if "after_storm" in self.marks else "closed"].process
        idle = self.marks["idle"].process
        leftover = {
            key: {
                name: count - idle[key].get(name, 0)
                for name, count in last[key].items()
                if count != idle[key].get(name, 0)
            }
            for key in ("tasks_by_coroutine", "fds_by_kind")
        }
        return {
            "args": vars(self.args),
            "left_after_close": leftover,
            "minutes": round(minutes, 2),
            "server": server,
            "rss_growth_mb_per_min": round(rss_slope, 3) if rss_slope is not None else None,
            "rss_growth_end_minus_start_per_min": round(
                (end.process["rss_mb"] - start.process["rss_mb"]) / max(minutes, 1e-9), 3
            ),
            "latency": intervals,
            "relay_loss_pct": {"up": round(up * 100, 2), "down": round(down * 100, 2)},
            "expected_path_loss_pct": round((1 - (1 - up) * (1 - down)) * 100, 2),
            "rooms": per_room,
            "storm": storm,
            "relay_cuts": {
                name: {k: link[k] for k in ("first_seq", "first_forwarded", "cuts")}
                for name, link in relay_stats.items()
                if link["cuts"]
            },
        }

    def place_cuts(self, room: Room, relay_stats: dict[str, Any]) -> None:
        """Turn each outage's relay record (RTP sequence numbers) into the wall-clock due
        times of the first packet it took and the first one after it."""
        seats = {s.seat: s for s in room.seats}
        for outage in room.outages:
            if outage.kind == "unplanned":
                continue
            seat = seats[outage.seat]

            def due(link: str | None, seq: int | None, seat: SoakSeat = seat) -> float | None:
                stats = relay_stats.get(link or "")
                if seq is None or stats is None or stats["first_seq"] is None:
                    return None
                if link not in seat.sent:
                    return None
                first_index = seat.sent[link][0]
                return self.epoch + (first_index + ((seq - stats["first_seq"]) & 0xFFFF)) * FRAME_S

            cut = next(
                (
                    c
                    for c in relay_stats.get(outage.link, {}).get("cuts", [])
                    if c["start"] == outage.start
                ),
                None,
            )
            if cut is None:
                continue
            last = due(outage.link, cut["last_before"])
            outage.cut_from = None if last is None else last + FRAME_S
            if outage.kind == "network":
                outage.cut_to = due(outage.link, cut["first_after"])
            else:
                outage.cut_to = due(
                    outage.rejoined, relay_stats.get(outage.rejoined, {}).get("first_forwarded")
                )

    def room_figures(
        self, room: Room, status: dict[str, str], relay_stats: dict[str, Any]
    ) -> dict[str, Any]:
        rec_dir = self.data_dir / "recordings" / room.recording_id
        unplanned = [
            {"seat": member.seat, "minute": round((failed - room.started_wall) / 60, 2),
             "took_s": round(rejoined - failed, 2)}
            for member in room.seats
            for failed, rejoined in member.unplanned
        ]  # fmt: skip
        for member in room.seats:  # their audio is lost from before the failure was noticed
            for failed, rejoined in member.unplanned:
                start = failed - UNPLANNED_LOSS_S
                room.outages.append(
                    soak_analysis.Outage(
                        member.seat, "unplanned", start, rejoined - start, "", None
                    )
                )
        out: dict[str, Any] = {
            "room": room.index,
            "recording": room.recording_id,
            "status": status.get(room.recording_id),
            "outages": len(room.outages) - len(unplanned),
            "unplanned_rejoins": unplanned,
            "loss": self.track_loss(room),
        }
        wall = room.stopped_wall - room.started_wall
        out["wall_s"] = round(wall, 3)
        if out["status"] != "ready":
            return out
        self.place_cuts(room, relay_stats)
        rec_start, meta = soak_analysis.read_recording(rec_dir)
        out["duration_s"] = meta["duration_s"]
        placements = {}
        for seat in SEATS:
            placement = soak_analysis.place_seat(
                seat,
                rec_dir / "stems" / f"{seat}.flac",
                rec_start,
                self.epoch,
                float(meta["duration_s"]),
                [o for o in room.outages if o.seat == seat],
                meta.get("damaged", []),
            )
            last_minute = max(0.0, float(meta["duration_s"]) / 60 - 1)
            placements[seat] = {
                "bursts_expected": placement.bursts_expected,
                "bursts_placed": len(placement.drift_ms),
                "bursts_missing_outside_outages": placement.bursts_missing_outside_outages,
                "clipped": placement.clipped,
                "unplaceable": placement.unplaceable,
                "max_drift_ms": _round(placement.max_drift()),
                "max_drift_last_minute_ms": _round(placement.max_drift(last_minute)),
                "median_abs_drift_ms": _round(
                    float(np.median([abs(d) for _, d in placement.drift_ms]))
                    if placement.drift_ms
                    else None
                ),
                "bursts_over_20ms": sum(1 for _, d in placement.drift_ms if abs(d) > 20),
                "worst_bursts": placement.worst,
                "gaps": placement.gaps,
            }
        out["seats"] = placements
        return out

    def track_loss(self, room: Room) -> dict[str, Any]:
        """Frames lost per received track, outside every outage of either end."""
        t0 = room.started_wall + 5
        t1 = (room.stopped_wall or time.time()) - 3
        windows = {
            seat: [(o.start - 0.5, o.start + o.seconds + 6) for o in room.outages if o.seat == seat]
            for seat in SEATS
        }
        tracks = {}
        for listener in room.seats:
            for source in room.seats:
                if source is listener:
                    continue
                quiet = windows[source.seat] + windows[listener.seat]
                expected = set()
                for first, last in source.sent.values():
                    lo = max(first, math.ceil((t0 - self.epoch) / FRAME_S))
                    hi = min(last, math.floor((t1 - self.epoch) / FRAME_S))
                    for i in range(lo, hi + 1):
                        due = self.epoch + i * FRAME_S
                        if not any(a <= due < b for a, b in quiet):
                            expected.add(i)
                heard = listener.heard.get(source.seat)
                got = heard.indices if heard else set()
                lost = len(expected - got)
                tracks[f"{listener.seat}<-{source.seat}"] = {
                    "expected": len(expected),
                    "lost": lost,
                    "lost_pct": round(100 * lost / len(expected), 2) if expected else None,
                }
        return tracks


def _relay_loss(stats: dict[str, Any], direction: str) -> float:
    received = sum(s[direction]["received"] for s in stats.values())
    lost = sum(s[direction]["lost_random"] + s[direction]["lost_burst"] for s in stats.values())
    return lost / received if received else 0.0


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the verdict -----------------------------------------------------------------------------


def goals(fig: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) per goal of issue 8."""
    out = []
    growth = fig["rss_growth_mb_per_min"]
    out.append(
        (
            "server RSS growth < 1 MB/min",
            f"{fmt(growth)} MB/min (fit)",
            growth is not None and growth < GOALS["rss_mb_per_min"],
        )
    )
    server = fig["server"]
    closed = "after_storm" if "after_storm" in server["asyncio_tasks"] else "closed"
    for key in ("asyncio_tasks", "open_fds"):
        idle, after = server[key]["idle"], server[key][closed]
        out.append(
            (f"{key} back to idle after close", f"idle {idle}, after {after}", after <= idle)
        )
    drifts = [
        s["max_drift_last_minute_ms"]
        for r in fig["rooms"]
        for s in r.get("seats", {}).values()
        if s["max_drift_last_minute_ms"] is not None
    ]
    all_drifts = [
        s["max_drift_ms"]
        for r in fig["rooms"]
        for s in r.get("seats", {}).values()
        if s["max_drift_ms"] is not None
    ]
    worst = max(drifts) if drifts else None
    out.append(
        (
            "drift <= 20 ms at the last minute",
            f"max {fmt(worst)} ms (whole run max {fmt(max(all_drifts) if all_drifts else None)} ms)",
            worst is not None and worst <= GOALS["drift_ms"],
        )
    )
    seats = [s for r in fig["rooms"] for s in r.get("seats", {}).values()]
    fewest = min((s["bursts_placed"] for s in seats), default=None)
    medians = [s["median_abs_drift_ms"] for s in seats if s["median_abs_drift_ms"] is not None]
    out.append(
        (
            "every seat's bursts placed (>= 5 each), median |drift| <= 5 ms, max <= 20 ms",
            f"fewest placed {fewest}; worst median {fmt(max(medians) if medians else None)} ms; "
            f"max {fmt(max(all_drifts) if all_drifts else None)} ms",
            fewest is not None
            and fewest >= GOALS["bursts_placed"]
            and len(medians) == len(seats)
            and max(medians) <= GOALS["median_drift_ms"]
            and len(all_drifts) == len(seats)
            and max(all_drifts) <= GOALS["drift_ms"],
        )
    )
    gaps = [g for r in fig["rooms"] for s in r.get("seats", {}).values() for g in s["gaps"]]
    errors = [
        abs(e) for g in gaps for e in (g["start_error_ms"], g["end_error_ms"]) if e is not None
    ]
    found = sum(1 for g in gaps if g["found"])
    worst_gap = max(errors) if errors else None
    out.append(
        (
            "every outage an explicit gap, within 20 ms",
            f"{found}/{len(gaps)} found, worst edge {fmt(worst_gap)} ms",
            bool(gaps)
            and found == len(gaps)
            and worst_gap is not None
            and worst_gap <= GOALS["gap_ms"],
        )
    )
    lat = [i for i in fig["latency"] if i["p99_ms"] is not None]
    worst_p99 = max((i["p99_ms"] for i in lat), default=None)
    out.append(
        (
            "p99 added latency < 50 ms in every interval",
            f"worst {fmt(worst_p99)} ms",
            worst_p99 is not None and worst_p99 < GOALS["p99_ms"],
        )
    )
    if len(lat) >= 2:
        creep = lat[-1]["p99_ms"] - lat[0]["p99_ms"]
        out.append(
            (
                "p99 added latency, last vs first interval, within 10 ms",
                f"{lat[0]['p99_ms']:.2f} -> {lat[-1]['p99_ms']:.2f} ms",
                creep <= GOALS["p99_creep_ms"],
            )
        )
    ready = [r["status"] == "ready" for r in fig["rooms"]]
    out.append(("every recording ready", f"{sum(ready)}/{len(ready)}", all(ready)))
    storm = fig.get("storm")
    if storm:
        worst_recover = max(storm["recover_s"].values()) if storm["recover_s"] else None
        segs_ok = (
            all(min(v.values()) >= 2 for v in storm["segments"].values())
            and len(storm["segments"]) == storm["rooms"]
        )
        storm_ready = all(v == "ready" for v in storm["status"].values())
        out.append(
            (
                "storm: every room recovers within 5 s, recording continues",
                f"{storm['recovered']}/{storm['rooms']} rooms, worst {fmt(worst_recover)} s; new segments {segs_ok}; ready {storm_ready}",
                storm["recovered"] == storm["rooms"]
                and worst_recover is not None
                and worst_recover <= GOALS["storm_recover_s"]
                and segs_ok
                and storm_ready,
            )
        )
    return out


def report(fig: dict[str, Any]) -> str:
    lines = [
        (
            "through TURN (coturn, lifetimes " + str(fig["args"]["turn_lifetime_s"]) + " s); "
            if fig["args"]["turn"]
            else ""
        )
        + f"soak: {fig['args']['rooms']} rooms x 3 seats, {fig['minutes']} min, loss {fig['args']['loss']}%"
        f" (bursty {fig['args']['burst_loss']}%), jitter {fig['args']['jitter_ms']} ms, outage {fig['args']['outage_s']} s every {fig['args']['outage_every']} s per seat"
    ]
    server = fig["server"]
    lines.append("server             " + "  ".join(f"{m:>11}" for m in server["rss_mb"]))
    for key in ("rss_mb", "open_fds", "asyncio_tasks", "threads"):
        lines.append(f"  {key:<16} " + "  ".join(f"{v:>11}" for v in server[key].values()))
    lines.append(f"left after close, against idle: {fig['left_after_close']}")
    lines.append(
        f"RSS growth: {fmt(fig['rss_growth_mb_per_min'])} MB/min (least squares over the samples), "
        f"{fmt(fig['rss_growth_end_minus_start_per_min'])} MB/min (end - start)"
    )
    lines.append("forwarding latency added by the server (arrival -> sender), per interval:")
    for i in fig["latency"]:
        lines.append(
            f"  minute {i['minute']:6.2f}: p50 {fmt(i['p50_ms'])} ms, p99 {fmt(i['p99_ms'])} ms"
        )
    lines.append(
        f"relay-injected loss: up {fig['relay_loss_pct']['up']}%, down {fig['relay_loss_pct']['down']}%;"
        f" expected on a seat->server->seat path ~{fig['expected_path_loss_pct']}%"
    )
    total_expected = total_lost = 0
    for room in fig["rooms"]:
        tracks = room["loss"]
        expected = sum(t["expected"] for t in tracks.values())
        lost = sum(t["lost"] for t in tracks.values())
        total_expected += expected
        total_lost += lost
        worst = max((t["lost_pct"] or 0) for t in tracks.values())
        lines.append(
            f"room {room['room']}: {room['status']}, duration {room.get('duration_s')} s vs wall {room['wall_s']} s, "
            f"{room['outages']} outages, {len(room['unplanned_rejoins'])} unplanned rejoins {room['unplanned_rejoins']}; frames lost per track {100 * lost / max(expected, 1):.2f}% (worst track {worst}%)"
        )
        for seat, s in room.get("seats", {}).items():
            gap_bits = ", ".join(
                f"{g['kind']}@{fmt(g['at_s'])}s:{'ok' if g['found'] else 'MISSING'}"
                f"({fmt(g['start_error_ms'])}/{fmt(g['end_error_ms'])} ms)"
                for g in s["gaps"]
            )
            lines.append(
                f"  {seat:<11} bursts {s['bursts_placed']}/{s['bursts_expected']} placed, "
                f"{s['bursts_missing_outside_outages']} missing outside outages, {s['clipped']} clipped, {s['unplaceable']} unplaceable; "
                f"drift max {fmt(s['max_drift_ms'])} ms ({s['bursts_over_20ms']} over 20 ms), "
                f"last minute {fmt(s['max_drift_last_minute_ms'])} ms; "
                f"gaps [start/end error]: {gap_bits or 'none'}"
            )
    lines.append(
        f"total: frames lost per received track {100 * total_lost / max(total_expected, 1):.2f}% "
        f"of {total_expected} (relay alone would explain ~{fig['expected_path_loss_pct']}%)"
    )
    if fig.get("storm"):
        storm = fig["storm"]
        lines.append(
            f"storm: {storm['seats']} seats dropped and rejoined in {storm['drop_and_rejoin_s']} s; "
            f"recovered {storm['recovered']}/{storm['rooms']} rooms; per room s: {storm['recover_s']}; "
            f"segments {storm['segments']}; {storm['status']}"
        )
    unplanned = sum(len(room.get("unplanned_rejoins", [])) for room in fig["rooms"])
    lines.append(
        f"unplanned rejoins (a seat's connection failed outside the schedule): {unplanned}"
    )
    lines.append("goals:")
    for goal, measured, met in goals(fig):
        lines.append(f"  [{'met' if met else 'NOT MET'}] {goal}: {measured}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--loss", type=float, default=3.0, help="random loss per direction, %%")
    parser.add_argument(
        "--burst-loss", type=float, default=0.0, help="extra Gilbert-Elliott loss, about this %%"
    )
    parser.add_argument("--jitter-ms", type=float, default=30.0)
    parser.add_argument("--reorder", type=float, default=0.0, help="%% of packets held back 40 ms")
    parser.add_argument("--duplicate", type=float, default=0.0, help="%% of packets sent twice")
    parser.add_argument(
        "--outage-every", type=float, default=300.0, help="seconds between a seat's outages"
    )
    parser.add_argument("--outage-s", type=float, default=6.0, help="length of an outage")
    parser.add_argument("--first-outage-s", type=float, default=30.0)
    parser.add_argument("--poll-s", type=float, default=60.0, help="seconds between metrics reads")
    parser.add_argument("--storm-rooms", type=int, default=0)
    parser.add_argument("--storm-settle-s", type=float, default=8.0)
    parser.add_argument(
        "--turn",
        action="store_true",
        help="seats relay-only through a local coturn (the relay in front of it)",
    )
    parser.add_argument(
        "--turn-lifetime-s",
        type=int,
        default=60,
        help="coturn's allocation, permission and channel lifetimes (the seats refresh at half); "
        "0: coturn's defaults and aioice's own refresh timers",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--timeout", type=float, default=None, help="hard limit, seconds")
    return parser


def run_soak(args: argparse.Namespace, hard_limit: bool = True) -> tuple[dict[str, Any], str]:
    """Run once (the caller's process must already be in its own network namespace).
    `hard_limit`: SIGALRM after --timeout (off under pytest-timeout, which owns it)."""
    tmp = Path(tempfile.mkdtemp(prefix="storyroom-soak-"))
    soak = Soak(args, tmp)
    # the run, joining, and finalization: here ~1.5 min per 10-min recording, one at a time
    budget = args.timeout or (
        args.minutes * 60 * 1.2
        + 300
        + args.rooms * 60
        + args.minutes * args.rooms * 15
        + args.storm_rooms * 30
    )
    try:
        with rooms.hard_limits(budget) if hard_limit else contextlib.nullcontext():
            figures = asyncio.run(soak.run())
    finally:
        soak.stop_processes()
        if args.keep_data:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:  # first: the figures survive a fault in the report
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return figures, report(figures)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rooms < 1 or args.minutes <= 0 or args.outage_s <= 0 or args.poll_s <= 0:
        print(
            "soak.py: --rooms, --minutes, --outage-s and --poll-s must be positive", file=sys.stderr
        )
        return 2
    if not isolate_network():
        print("soak.py: needs its own network namespace: run as root", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _, text = run_soak(args)
    except (SoakError, rooms.BenchError, TimeoutError, KeyboardInterrupt) as exc:
        print(f"soak.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
