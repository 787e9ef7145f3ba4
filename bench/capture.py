#!/usr/bin/env python
"""Benchmark: what the archive holds of each voice at 3% loss with outages, with and
without the browser capture, with and without in-band FEC recovery.

    .venv/bin/python bench/capture.py --minutes 10

1. Writes a three-seat take with the recorder's own classes (tests/support/recordings:
   real Opus packets with in-band FEC, RTP, jitter): a 60-second speech-like programme
   per seat, looped. Seat a loses 3% of its packets at random and two 6-second outages;
   seat b 3% at random; the facilitator nothing. Each seat's browser capture is the same
   programme encoded into WebM Opus (128 kbit/s) on a clock drifting +30, -40 and +10
   ppm, stored in ~16 kB chunks as the upload path stores them (tests/support/captures).
2. Finalizes four copies, each in a fresh process: server stems alone with FEC
   recovery (today's finalization: the baseline), without it (lost packets all
   concealed), and each with the capture merged.
3. Compares every finalized stem with its input, 20 ms frame by 20 ms frame where the
   input is audible: a frame whose normalised correlation with the input (best within
   0.25 ms) is below 0.5 is *lost* (concealed, silent or missing).

Prints per seat the seconds lost in each variant, the seconds the capture filled, the
measured drift, and each variant's finalization wall and CPU time beside the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

RATE = 48_000
FRAME = 960
CYCLE_S = 60.0
LOSS = 0.03
OUTAGE_S = 6.0
DRIFT_PPM = {"a": 30.0, "b": -40.0, "facilitator": 10.0}
AUDIBLE_DBFS = -40.0
LOST_BELOW = 0.5
SLACK = 12
VARIANTS = (
    ("server, FEC (today)", False, True),
    ("server, no FEC", False, False),
    ("server + capture, FEC", True, True),
    ("server + capture, no FEC", True, False),
)


def programmes(seconds: float) -> dict[str, np.ndarray]:
    from support.recordings import speech_like

    reps = int(np.ceil(seconds / CYCLE_S)) + 1
    return {
        seat: np.tile(speech_like(CYCLE_S, seed, [(0.3, CYCLE_S - 0.3)]), reps)
        for seat, seed in (("a", 21), ("b", 22), ("facilitator", 23))
    }


def lost_spans(seconds: float, seed: int, outages: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    frames = np.flatnonzero(rng.random(int(seconds / 0.02)) < LOSS)
    spans = [(0.3 + k * 0.02 + 0.005, 0.3 + k * 0.02 + 0.015) for k in frames]
    for n in range(outages):
        at = seconds * (n + 1) / (outages + 1)
        spans.append((at, at + OUTAGE_S))
    return spans


def make(path: Path, seconds: float, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    from support.recordings import Connection, SeatScript, finalize_input, make_recording

    def signal(seat: str) -> Any:
        samples = inputs[seat]
        return lambda t: samples[np.minimum((t * RATE).astype(int), len(samples) - 1)]

    losses = {"a": lost_spans(seconds, 1, 2), "b": lost_spans(seconds, 2, 0), "facilitator": []}
    recording = make_recording(
        path,
        [
            SeatScript(seat, [Connection(0.3, seconds, lost=losses[seat])], signal=signal(seat))
            for seat in inputs
        ],
        seconds,
    )
    return finalize_input(recording).to_json()


def write_captures(path: Path, seconds: float, inputs: dict[str, np.ndarray]) -> None:
    from support.captures import drifted, encode_capture, write_run

    for seat, samples in inputs.items():
        heard = drifted(samples[round(0.2 * RATE) : round(seconds * RATE)], DRIFT_PPM[seat])
        write_run(path, seat, 1, encode_capture(heard), 0.2)


def run_child(path: Path, spec: Path, fec: bool) -> None:
    from storyroom.finalize import decode
    from storyroom.finalize.contracts import FinalizeInput
    from storyroom.finalize.run import finalize_recording

    if not fec:  # every lost packet concealed, as before in-band FEC was used
        decode.has_lbrr = lambda packet: False
    finalize_recording(path, FinalizeInput.from_json(json.loads(spec.read_text())))


def measured(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of this script run with `args` in a fresh process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"finalizing {args[1]} failed")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def lost_seconds(stem: np.ndarray, reference: np.ndarray, seconds: float) -> float:
    """Seconds of audible input whose 20 ms frames the stem does not hold."""
    from support.captures import lag_of

    lag = lag_of(stem, reference, (1.0, min(seconds, 20.0)))
    frames = int(seconds * RATE) // FRAME - 2
    lost = 0
    for first in range((lag + SLACK) // FRAME + 1, frames, 500):  # 10 s at a time
        count = min(500, frames - first)
        at = first * FRAME
        x = stem[at : at + count * FRAME].reshape(count, FRAME).astype(np.float64)
        best = np.zeros(count)
        for shift in range(-SLACK, SLACK + 1):
            y = reference[at - lag - shift : at - lag - shift + count * FRAME]
            y = y.reshape(count, FRAME).astype(np.float64)
            score = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
            best = np.maximum(best, score)
        y = reference[at - lag : at - lag + count * FRAME].reshape(count, FRAME)
        audible = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2, axis=1)) + 1e-12)
        lost += int(np.sum((audible > AUDIBLE_DBFS) & (best < LOST_BELOW)))
    return lost * FRAME / RATE


def stem(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(Path(args.child[0]), Path(args.child[1]), args.child[2] == "fec")
        return
    if not 0.5 <= args.minutes <= 10:
        raise SystemExit("--minutes must be between 0.5 and 10")
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as temp:
        work = Path(temp)
        inputs = programmes(seconds)
        print(f"writing a {args.minutes:g}-minute take and its captures ...", flush=True)
        spec = make(work / "take", seconds, inputs)
        (work / "spec.json").write_text(json.dumps(spec))
        rows: list[dict[str, Any]] = []
        for name, capture, fec in VARIANTS:
            folder = work / f"variant-{len(rows)}"
            shutil.copytree(work / "take", folder)
            if capture:
                write_captures(folder, seconds, inputs)
            wall, cpu = measured(
                ["--child", str(folder), str(work / "spec.json"), "fec" if fec else "nofec"]
            )
            metadata = json.loads((folder / "metadata.json").read_text())
            lost = {
                seat: lost_seconds(stem(folder / "stems" / f"{seat}.flac"), inputs[seat], seconds)
                for seat in inputs
            }
            rows.append({"name": name, "wall": wall, "cpu": cpu, "lost": lost, "meta": metadata})
            print(f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    base = rows[0]
    print(f"\n{args.minutes:g} minutes, 3 seats; load average {os.getloadavg()[0]:.2f}")
    print("seconds of audible input lost (concealed, silent or missing) per seat:")
    print(f"{'':28}" + "".join(f"{seat:>14}" for seat in inputs) + f"{'wall s':>10}{'CPU s':>9}")
    for row in rows:
        cells = "".join(f"{row['lost'][seat]:>14.2f}" for seat in inputs)
        print(f"{row['name']:28}{cells}{row['wall']:>10.1f}{row['cpu']:>9.1f}")
    merged = rows[2]["meta"]["stems"]
    print(
        f"{'capture filled (s)':28}"
        + "".join(f"{merged[seat]['capture']['filled_s']:>14.2f}" for seat in inputs)
    )
    print(
        f"{'capture drift (ppm, true)':28}"
        + "".join(
            f"{merged[seat]['capture']['runs'][0]['drift_ppm']:>8.1f} ({DRIFT_PPM[seat]:+.0f})"
            for seat in inputs
        )
    )
    for row in rows[1:]:
        print(
            f"finalize time, {row['name']} / today's: wall {row['wall'] / base['wall']:.2f}x, "
            f"CPU {row['cpu'] / base['cpu']:.2f}x"
        )


if __name__ == "__main__":
    main()
