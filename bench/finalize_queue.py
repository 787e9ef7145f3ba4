#!/usr/bin/env python
"""Benchmark: what queueing finalization in PostgreSQL costs, against the embedded
in-process queue, in the same run.

    .venv/bin/python bench/finalize_queue.py --takes 4 --seconds 60 --stops 200

Starts its own PostgreSQL (Debian's, `initdb` in a temporary folder, 127.0.0.1) and
prints, side by side:

- **the stop**: how long the transaction that stops a take takes (`Store.update_recording`,
  median and p95 of `--stops` takes): on SQLite (embedded), on PostgreSQL without a
  job, and on PostgreSQL writing the job row in it (what the queue adds to a stop);
- **finalization**: `--takes` synthetic takes of `--seconds` seconds (three voices,
  Opus stems as the recorder writes them) queued at once, then finalized: by the
  embedded queue in this process (SQLite), and by one `storyroom worker` process on
  the PostgreSQL queue, `--rounds` times alternated; from the moment they are queued
  to the first run starting (what the queue adds: a job picked up by a worker), to the
  first take ready and to the last.

Every process it starts is stopped by pid; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from storyroom.app import STORE_MODULES  # noqa: E402
from storyroom.finalize.jobs import FinalizeJobs  # noqa: E402
from storyroom.finalize.queue import FinalizeQueue  # noqa: E402
from storyroom.orgs import EVERY_ORGANISATION  # noqa: E402
from storyroom.recording.layout import recording_dir  # noqa: E402
from storyroom.status import FinalizeStatus  # noqa: E402
from storyroom.store import RecordingRow, Store  # noqa: E402
from support.postgres import running_postgres  # noqa: E402
from support.recordings import Connection, SeatScript, make_recording, tone  # noqa: E402

SESSION = "ses_0123456789abcdef"


async def _session(store: Store) -> None:
    await store.db.execute(
        "INSERT INTO sessions (id, title, language, target_minutes, questions, created_at)"
        f" VALUES ('{SESSION}', 'bench', 'en', 40, '[]', 0)"
    )
    await store.db.commit()


def _take(n: int) -> RecordingRow:
    """Take `n`, recording."""
    return RecordingRow(f"rec_{n:016x}", SESSION, n, "recording", 1.0, None, 0.0, 1.0, None)


async def stop_times(store: Store, stops: int) -> list[float]:
    """Seconds each stop transaction took."""
    took = []
    for n in range(1, stops + 1):
        rec = _take(n)
        await store.insert_recording(rec)
        stopped = replace(rec, status="stopped", stopped_at=2.0, elapsed_before=1.0)
        begun = time.perf_counter()
        await store.update_recording(stopped, "stop", 2.0, 1.0)
        took.append(time.perf_counter() - begun)
    return took


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(values) * 1000:6.2f} ms, p95 {p95 * 1000:6.2f} ms"


def make_takes(root: Path, takes: int, seconds: float) -> None:
    for n in range(1, takes + 1):
        make_recording(
            recording_dir(root, f"rec_{n:016x}"),
            [
                SeatScript(seat, [Connection(0.2, seconds)], signal=tone(freq, 0.2))
                for seat, freq in (("a", 440.0), ("b", 550.0), ("facilitator", 660.0))
            ],
            seconds,
            recording_id=f"rec_{n:016x}",
            session_id=SESSION,
        )


async def _stopped_takes(store: Store, takes: int, seconds: float) -> None:
    for n in range(1, takes + 1):
        await store.insert_recording(_take(n))
        stopped = replace(_take(n), status="stopped", stopped_at=2.0, elapsed_before=seconds)
        await store.update_recording(stopped, "stop", 2.0, seconds)


Times = tuple[list[float], list[float]]
"""Seconds from the moment the takes were queued to each one's run starting, and to
each one ready; sorted."""


async def _times(store: Store, takes: int, begun: float) -> Times:
    """Poll the rows every 20 ms: when each take's run started (`finalizing`, written
    by whichever process runs it) and when it was ready."""
    started: dict[str, float] = {}
    ready: dict[str, float] = {}
    while len(ready) < takes:
        for n in range(1, takes + 1):
            rid = f"rec_{n:016x}"
            rec = await store.get_recording(rid, EVERY_ORGANISATION)
            status = rec.finalize_status if rec is not None else None
            if status is FinalizeStatus.FAILED:
                raise RuntimeError(f"{rid} failed: {rec.finalize_reason if rec else ''}")
            now = time.monotonic() - begun
            if status in (FinalizeStatus.FINALIZING, FinalizeStatus.READY):
                started.setdefault(rid, now)
            if status is FinalizeStatus.READY:
                ready.setdefault(rid, now)
        await asyncio.sleep(0.02)
    return sorted(started.values()), sorted(ready.values())


async def embedded(tmp: Path, takes: int, seconds: float) -> Times:
    data = tmp / "embedded"
    make_takes(data / "recordings", takes, seconds)
    store = await Store.open(data / "storyroom.sqlite3", modules=STORE_MODULES)
    try:
        await _session(store)
        await _stopped_takes(store, takes, seconds)
        jobs = FinalizeJobs(store, data / "recordings")
        begun = time.monotonic()
        await jobs.start()  # queues the stopped takes, as a server's start does
        try:
            return await _times(store, takes, begun)
        finally:
            await jobs.close()
    finally:
        await store.close()


def _start_worker(log_path: Path, data: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "storyroom", "worker", "--data-dir", str(data)],
            env=env,
            stdout=log,
            stderr=log,
        )


async def queued(tmp: Path, url: str, takes: int, seconds: float) -> Times:
    data = tmp / "queued"
    data.mkdir(parents=True)
    make_takes(data / "recordings", takes, seconds)
    store = await Store.open(url, modules=STORE_MODULES)
    store.job_writer = FinalizeQueue(url, 1.0, 10.0).write_job
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYROOM_")}
    env.update(STORYROOM_DATABASE_URL=url, STORYROOM_QUEUE="postgres")
    worker = None
    try:
        await _session(store)
        # the worker first, so that its start-up is not counted
        worker = _start_worker(tmp / "worker.log", data, env)
        while "Starting worker" not in (tmp / "worker.log").read_text(errors="replace"):
            if worker.poll() is not None:
                raise RuntimeError((tmp / "worker.log").read_text())
            await asyncio.sleep(0.1)
        begun = time.monotonic()
        await _stopped_takes(store, takes, seconds)  # each stop writes its job
        return await _times(store, takes, begun)
    finally:
        if worker is not None:
            worker.kill()
            worker.wait(timeout=10)
        await store.close()


async def run(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as folder, running_postgres() as cluster:
        tmp = Path(folder)
        lines = [f"stop transaction ({args.stops} takes):"]
        sqlite = await Store.open(tmp / "stops.sqlite3", modules=STORE_MODULES)
        await _session(sqlite)
        lines.append(f"  SQLite (embedded)        {_ms(await stop_times(sqlite, args.stops))}")
        await sqlite.close()
        for label, queue in (("PostgreSQL, no job", False), ("PostgreSQL + job row", True)):
            url = cluster.new_database()
            store = await Store.open(url, modules=STORE_MODULES)
            if queue:
                store.job_writer = FinalizeQueue(url, 1.0, 10.0).write_job
            await _session(store)
            lines.append(f"  {label:<24} {_ms(await stop_times(store, args.stops))}")
            await store.close()

        rounds: dict[str, list[Times]] = {"embedded (in-process)": [], "PostgreSQL + 1 worker": []}
        for n in range(args.rounds):  # alternated: a busier moment hits both alike
            rounds["embedded (in-process)"].append(
                await embedded(tmp / f"e{n}", args.takes, args.seconds)
            )
            rounds["PostgreSQL + 1 worker"].append(
                await queued(tmp / f"q{n}", cluster.new_database(), args.takes, args.seconds)
            )
        lines.append(
            f"finalization: {args.takes} takes of {args.seconds:.0f} s queued at once,"
            f" {args.rounds} rounds alternated; medians over rounds, in seconds:"
        )
        lines.append(
            f"  {'':<24} {'1st run starts':>14} {'1st ready':>10} {'last ready':>11} {'a take':>7}"
        )
        for label, times in rounds.items():
            first_start = statistics.median(started[0] for started, _ in times)
            first_ready = statistics.median(ready[0] for _, ready in times)
            last_ready = statistics.median(ready[-1] for _, ready in times)
            lines.append(
                f"  {label:<24} {first_start:14.3f} {first_ready:10.2f} {last_ready:11.2f}"
                f" {last_ready / args.takes:7.2f}"
            )
        lines.append(
            "  (`1st run starts`: from the takes queued to the first one's run writing"
            " `finalizing`, what the queue itself adds; the rest is finalization, the same"
            " code in both, and varies with the machine's load)"
        )
        return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--takes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--stops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
