#!/usr/bin/env python
"""Benchmark: finalizing an M-minute, three-seat recording, against one FFmpeg graph.

    .venv/bin/python bench/finalize.py --minutes 40

1. Writes a realistic recording into a temporary directory with the recorder's own
   classes (`tests/support/recordings.py`): per seat, 60 s of speech-like audio encoded
   once with libopus and replayed as a loop of packets, sent as RTP packets with
   network jitter into `StemSegment` (Ogg Opus stems and timing logs exactly as the
   recorder writes them). Turn-taking voices; a pause; lost packets; a sender that goes
   quiet for 8 s; participant b reconnects once (two segments); cues every 4 minutes.
2. Runs `storyroom.finalize.run.finalize_recording` in a fresh process, and measures its
   wall time and peak RSS (`os.wait4` of that child alone).
3. Runs the baseline in another fresh process: the same set of files (a 24-bit WAV
   master, three 24-bit FLAC stems, a 128 kbit/s MP3 with the same LAME settings)
   from ONE FFmpeg filter graph driven through PyAV (no ffmpeg binary here): each
   seat's decoded segments at their offsets, `aresample=async=1` filling the gaps with
   silence, `asplit`, `pan`, `amix`, no loudness normalisation.

Prints both (wall time, CPU seconds of all the child's threads, peak RSS, and the
machine's load average, since on a shared machine the wall time depends on what else
runs) and their ratio; the last line is
`finalize: minutes=M wall_s=… peak_rss_mb=… baseline_wall_s=… ratio=…`.

With `--before REV` (e.g. `--before main`), the finalizer of git revision REV
(its `server/` extracted by `git archive`) also finalizes a copy of the same recording
in the same run, so a change's cost is measured against its own baseline:
`finalize: before=REV wall_s=… peak_rss_mb=… ratio=…`.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from revisions import extract_revision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

RATE = 48_000
SEATS = ("a", "b", "facilitator")
PAN = {"a": (0.853, 0.522), "b": (0.522, 0.853), "facilitator": (0.707, 0.707)}
CYCLE_S = 60.0  # seconds of audio encoded per seat, replayed in a loop


# -- the synthetic recording ----------------------------------------------------------------


def make(path: Path, minutes: float) -> dict[str, Any]:
    """Write the recording; return what the finalizer's caller would know about it."""
    from support.recordings import (
        Connection,
        SeatScript,
        encode_packets,
        finalize_input,
        make_recording,
        speech_like,
    )

    duration = minutes * 60
    # who talks when within each 60 s cycle (a and b take turns, the facilitator steers)
    talk = {
        "a": [(0.0, 24.0), (52.0, 53.5)],
        "b": [(24.5, 48.0), (9.0, 10.2)],
        "facilitator": [(48.5, 59.5), (30.0, 31.0)],
    }
    loops = {
        seat: encode_packets(speech_like(CYCLE_S, seed, talk[seat]))
        for seed, seat in enumerate(SEATS, 1)
    }
    lost = [(at, at + 0.4) for at in range(60, int(duration) - 60, 420)]
    reconnect = duration * 0.6
    quiet_at = duration * 0.3
    scripts = [
        SeatScript("a", [Connection(0.4, duration, lost=lost)], loop=loops["a"]),
        SeatScript(
            "b",
            [
                Connection(0.5, reconnect, reason="client_left"),
                Connection(reconnect + 4.0, duration),
            ],
            loop=loops["b"],
            delay=0.011,
        ),
        SeatScript(
            "facilitator",
            [Connection(0.3, duration, quiet=[(quiet_at, quiet_at + 8.0)])],
            loop=loops["facilitator"],
            delay=0.007,
        ),
    ]
    pauses = [(duration * 0.45, 30.0)]
    recording = make_recording(path, scripts, duration, pauses)
    cues = [
        {
            "seq": n,
            "question_id": f"q{n}",
            "text": f"Question {n}: what shaped your view?",
            "rec_time": 2.0 + 240.0 * (n - 1),
        }
        for n in range(1, int(duration // 240) + 2)
        if 2.0 + 240.0 * (n - 1) < duration
    ]
    markers = [{"seq": 1, "label": "laughter", "rec_time": duration / 3}]
    return finalize_input(recording, cues=cues, markers=markers).to_json()


def run_finalizer(path: Path, spec_path: Path) -> None:
    from storyroom.finalize.contracts import FinalizeInput
    from storyroom.finalize.run import finalize_recording

    job = FinalizeInput.from_json(json.loads(spec_path.read_text()))
    result = finalize_recording(path, job, spec_path.with_name("progress.json")).to_json()
    print(json.dumps({"duration_s": result["duration_s"], "loudness": result["loudness"]}))


def _peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the baseline: one FFmpeg filter graph ---------------------------------------------------------


def run_baseline(path: Path, out: Path) -> None:
    """WAV master + 3 FLAC stems + MP3 from one FFmpeg graph, as `ffmpeg -filter_complex`
    would make them; driven through PyAV since no ffmpeg binary is installed."""
    import heapq

    import av

    from storyroom.recording.timeline import read_recording

    time_base = fractions.Fraction(1, RATE)
    out.mkdir(parents=True, exist_ok=True)
    segments: dict[str, list[tuple[Path, int]]] = {seat: [] for seat in SEATS}
    for timing in read_recording(path):
        if timing.runs:  # one offset per segment, as a filter graph would get it
            offset = round(timing.runs[0].offset * RATE)
            segments[timing.seat].append(
                (path / "stems" / f"{timing.seat}-{timing.index:02d}.opus", offset)
            )

    graph = av.filter.Graph()
    sources = {}
    master_inputs = []
    stem_sinks = {}
    for seat in SEATS:
        source = graph.add_abuffer(
            sample_rate=RATE, format="fltp", layout="mono", time_base=time_base
        )
        fill = graph.add("aresample", "async=1:first_pts=0")
        split = graph.add("asplit", "2")
        to_stem = graph.add("aformat", "sample_fmts=s32:channel_layouts=mono")
        sink = graph.add("abuffersink")
        left, right = PAN[seat]
        pan = graph.add("pan", f"stereo|c0={left}*c0|c1={right}*c0")
        source.link_to(fill)
        fill.link_to(split)
        split.link_to(to_stem, 0, 0)
        to_stem.link_to(sink)
        split.link_to(pan, 1, 0)
        sources[seat] = source
        stem_sinks[seat] = sink
        master_inputs.append(pan)
    mix = graph.add("amix", "inputs=3:duration=longest:normalize=0")
    for index, pan in enumerate(master_inputs):
        pan.link_to(mix, 0, index)
    master_split = graph.add("asplit", "2")
    mix.link_to(master_split)
    to_wav = graph.add("aformat", "sample_fmts=s32:channel_layouts=stereo")
    to_mp3 = graph.add("aformat", "sample_fmts=fltp:channel_layouts=stereo")
    wav_sink = graph.add("abuffersink")
    mp3_sink = graph.add("abuffersink")
    master_split.link_to(to_wav, 0, 0)
    master_split.link_to(to_mp3, 1, 0)
    to_wav.link_to(wav_sink)
    to_mp3.link_to(mp3_sink)
    graph.configure()

    outputs: list[tuple[Any, Any, Any]] = []  # (sink, container, stream)
    for seat in SEATS:
        container = av.open(str(out / f"{seat}.flac"), "w", format="flac")
        stream = container.add_stream("flac", rate=RATE, layout="mono")
        stream.codec_context.format = "s32"
        stream.codec_context.options = {"bits_per_raw_sample": "24"}
        outputs.append((stem_sinks[seat], container, stream))
    wav = av.open(str(out / "master.wav"), "w", format="wav")
    wav_stream = wav.add_stream("pcm_s24le", rate=RATE, layout="stereo")
    wav_stream.codec_context.format = "s32"
    outputs.append((wav_sink, wav, wav_stream))
    mp3 = av.open(str(out / "access.mp3"), "w", format="mp3")
    mp3_stream = mp3.add_stream("libmp3lame", rate=RATE, layout="stereo")
    mp3_stream.codec_context.bit_rate = 128_000
    mp3_stream.codec_context.format = "fltp"
    mp3_stream.codec_context.options = {"compression_level": "5"}
    outputs.append((mp3_sink, mp3, mp3_stream))

    def drain() -> None:
        for sink, container, stream in outputs:
            while True:
                try:
                    frame = sink.pull()
                except (av.BlockingIOError, av.EOFError):
                    break
                for packet in stream.encode(frame):
                    container.mux(packet)

    def frames(seat: str):  # (timeline pts, frame) of one seat, segment after segment
        for stem, offset in segments[seat]:
            with av.open(str(stem)) as container:
                for frame in container.decode(audio=0):
                    yield offset + (frame.pts or 0), frame

    # feed the seats in timeline order, so that amix never waits long for one of them
    streams = {seat: frames(seat) for seat in SEATS}
    heap = []
    for seat, stream in streams.items():
        first = next(stream, None)
        if first is not None:
            heap.append((first[0], seat, first[1]))
    heapq.heapify(heap)
    while heap:
        pts, seat, frame = heapq.heappop(heap)
        frame.pts = max(pts, 0)
        frame.time_base = time_base
        sources[seat].push(frame)
        drain()
        following = next(streams[seat], None)
        if following is None:
            sources[seat].push(None)
        else:
            heapq.heappush(heap, (following[0], seat, following[1]))
    drain()
    for _, container, stream in outputs:
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()


# -- measuring ------------------------------------------------------------------------------------


def measured(args: list[str], package: Path | None = None) -> tuple[float, float, float, str]:
    """Run this script with `args` in a fresh process: (wall s, peak RSS MB, CPU s,
    stdout). CPU is the child's user + system time over all its threads: on a shared
    machine, where the wall time depends on what else runs, it shows the work done.

    The peak is the child's own VmHWM, which it prints last; `wait4`'s ru_maxrss would
    also count the pages it shared with this process between fork and exec."""
    env = dict(os.environ)
    if package is not None:  # a directory holding another revision's `storyroom`
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, cwd=ROOT, text=True, env=env
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"child {args[0]} failed with {child.returncode}")
    lines = output.strip().splitlines()
    rss = float(lines[-1]) if lines else usage.ru_maxrss / 1024
    return wall, rss, usage.ru_utime + usage.ru_stime, "\n".join(lines[:-1])


def _load() -> str:
    """The machine's 1-minute load average: how much the wall times were shared."""
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--keep", type=Path, help="write the recording here and keep it")
    parser.add_argument("--before", help="also finalize with this git revision's finalizer")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "make":
            spec = make(Path(rest[0]), float(rest[2]))
            Path(rest[1]).write_text(json.dumps(spec))
        elif kind == "finalize":
            run_finalizer(Path(rest[0]), Path(rest[1]))
        else:
            run_baseline(Path(rest[0]), Path(rest[1]))
        print(f"{_peak_rss_mb():.1f}", flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="storyroom-bench-finalize-"))
    try:
        recording = (args.keep or work / "recording").resolve()
        if recording.exists():
            shutil.rmtree(recording)
        spec_path = work / "spec.json"
        made, _, _, _ = measured(
            ["--child", "make", str(recording), str(spec_path), str(args.minutes)]
        )
        stems = sum(p.stat().st_size for p in (recording / "stems").iterdir())
        print(
            f"finalize: made {args.minutes:g} min x 3 seats of stems in {made:.1f} s "
            f"({stems / 1e6:.1f} MB of Ogg Opus and timing logs)",
            flush=True,
        )
        wall, rss, cpu, output = measured(["--child", "finalize", str(recording), str(spec_path)])
        summary = json.loads(output.strip().splitlines()[-1])
        access = summary["loudness"]["access"]
        print(
            f"finalize: storyroom wall_s={wall:.1f} cpu_s={cpu:.1f} peak_rss_mb={rss:.0f} "
            f"load={_load()} (access {access['integrated_lufs']} LUFS, {access['true_peak_dbtp']} dBTP)",
            flush=True,
        )
        base_wall, base_rss, base_cpu, _ = measured(
            ["--child", "baseline", str(recording), str(work / "baseline")]
        )
        print(
            f"finalize: baseline (one FFmpeg graph via PyAV) wall_s={base_wall:.1f} "
            f"cpu_s={base_cpu:.1f} peak_rss_mb={base_rss:.0f} load={_load()}",
            flush=True,
        )
        if args.before:
            copy = work / "before-recording"
            shutil.copytree(recording, copy)
            for name in ("master.wav", "metadata.json"):  # its own outputs, not ours
                (copy / name).unlink(missing_ok=True)
            package = extract_revision(args.before, work / "before")
            old_wall, old_rss, old_cpu, _ = measured(
                ["--child", "finalize", str(copy), str(spec_path)], package
            )
            print(
                f"finalize: before={args.before} wall_s={old_wall:.1f} cpu_s={old_cpu:.1f} "
                f"peak_rss_mb={old_rss:.0f} ratio={old_wall / base_wall:.2f} load={_load()}",
                flush=True,
            )
        print(
            f"finalize: minutes={args.minutes:g} wall_s={wall:.1f} peak_rss_mb={rss:.0f} "
            f"baseline_wall_s={base_wall:.1f} ratio={wall / base_wall:.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
