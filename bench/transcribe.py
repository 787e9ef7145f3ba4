#!/usr/bin/env python
"""Benchmark: transcribing a long two-voice recording on the CPU, and the word error
rate on real speech that ships in Debian packages.

    .venv/bin/python bench/transcribe.py                 # 40 minutes, as the issue asks
    .venv/bin/python bench/transcribe.py --minutes 5     # quicker; the option is printed

1. Writes two finalized voice stems (FLAC, 48 kHz, on one recording clock) of M minutes:
   two people taking turns reading LibriVox clips (pocketsphinx-testdata), one second
   between turns, so each voice speaks about half the time and is silent otherwise,
   as in a conversation.
2. Transcribes them as the server's job does (`storyroom.transcribe.engine` in one
   low-priority spawned worker process: decode, gain, VAD, Whisper base int8 on one
   thread, word times) and reports wall time, the worker's CPU seconds per recorded
   minute and its peak RSS.
3. Baseline, in the same run and the same kind of worker: only decoding and gain on
   the same stems (what any transcriber pays to read the audio), to show the model's
   share.
4. Word error rate, each clip through the same path (its own stem), English (LibriVox,
   `pocketsphinx-testdata`) and Spanish (Asterisk's Mexican Spanish prompts,
   `asterisk-core-sounds-es-wav`, texts from `asterisk-core-sounds-es`) separately,
   naming every clip's source.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from storyroom.transcribe.contracts import VoiceInput  # noqa: E402
from support.speech import ENGLISH, SPANISH, Clip, clip, wer, words  # noqa: E402

RATE = 48_000
GAP_S = 1.0


def write_flac(path: Path, samples: np.ndarray) -> None:
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        block = RATE
        for start in range(0, len(samples), block):
            chunk = (np.clip(samples[start : start + block], -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def conversation(minutes: float, directory: Path) -> tuple[list[Path], float]:
    """Two voices taking turns for `minutes`; their stems and the seconds of speech."""
    total = int(minutes * 60 * RATE)
    voices = {seat: np.zeros(total, dtype=np.float32) for seat in ("a", "b")}
    turns = [clip(name) for name in ENGLISH]
    at, speech, i = 0, 0.0, 0
    while True:
        c = turns[i % len(turns)]
        if at + len(c.samples) > total:
            break
        voices["a" if i % 2 == 0 else "b"][at : at + len(c.samples)] = c.samples
        at += len(c.samples) + int(GAP_S * RATE)
        speech += c.seconds
        i += 1
    paths = []
    for seat, samples in voices.items():
        path = directory / f"{seat}.flac"
        write_flac(path, samples)
        paths.append(path)
    return paths, speech


def read_only(voice: VoiceInput, cache_root: str) -> int:
    """The baseline's work: decode and level the stem, nothing else."""
    from storyroom.transcribe.engine import decode, normalise

    audio = normalise(decode(Path(voice.stem)))
    return 0 if audio is None else len(audio)


def measured(func: Any, voice: VoiceInput, cache: str) -> tuple[Any, float]:
    """In the worker: `func`'s result and the worker's own peak RSS in MB (VmHWM, which
    starts again at exec; getrusage's maxrss would count the parent's pages at fork)."""
    result = func(voice, cache)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return result, int(line.split()[1]) / 1024
    return result, float("nan")


def in_worker(func: Any, voices: list[VoiceInput], cache: str) -> tuple[list, float, float, float]:
    """Run `func` on each voice in one spawned low-priority worker, as the server does;
    the results, wall seconds, the worker's CPU seconds and its peak RSS (MB)."""
    from storyroom.transcribe.engine import prepare_worker

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(1, initializer=prepare_worker) as pool:
        outcomes = [pool.apply(measured, (func, voice, cache)) for voice in voices]
        pool.close()
        pool.join()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [r for r, _ in outcomes], wall, cpu, max(peak for _, peak in outcomes)


def error_rates(names: tuple[str, ...], directory: Path, cache: str) -> None:
    from storyroom.transcribe.engine import transcribe_voice

    clips: list[Clip] = [clip(n) for n in names]
    voices = []
    for c in clips:
        path = directory / f"clip-{c.name}.flac"
        write_flac(path, c.samples)
        voices.append(VoiceInput(c.name, str(path), c.language))
    results, _, _, _ = in_worker(transcribe_voice, voices, cache)
    errors = reference_words = 0
    for c, result in zip(clips, results, strict=True):
        said = " ".join(w.text for w in result.words)
        rate = wer(c.reference, said)
        n = len(words(c.reference))
        errors += round(rate * n)
        reference_words += n
        print(f"  {c.language} {rate:6.1%}  {c.seconds:5.1f} s  {c.source}")
    language = clips[0].language
    print(
        f"wer: language={language} clips={len(clips)} words={reference_words}"
        f" wer={errors / reference_words:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=40.0, help="recording length (40)")
    parser.add_argument("--no-wer", action="store_true", help="skip the word error rates")
    args = parser.parse_args()
    from storyroom.transcribe import model

    reason = model.missing()
    if reason is not None:
        sys.exit(f"bench/transcribe.py: {reason}")
    print(f"options: --minutes {args.minutes:g}" + (" --no-wer" if args.no_wer else ""))
    print(f"model: {model.info()}")
    print(
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory(prefix="bench-transcribe-") as tmp:
        directory = Path(tmp)
        cache = str(directory / "models")
        model.model_dir(Path(cache))  # put together once, as the server does
        stems, speech = conversation(args.minutes, directory)
        voices = [VoiceInput(p.stem, str(p), "en") for p in stems]
        print(f"recording: 2 voices x {args.minutes:g} min, {speech / 60:.1f} min of speech")

        from storyroom.transcribe.engine import transcribe_voice

        _, base_wall, base_cpu, base_rss = in_worker(read_only, voices, cache)
        results, wall, cpu, rss = in_worker(transcribe_voice, voices, cache)
        n_words = sum(len(r.words) for r in results)
        print(
            f"baseline (decode + gain only): wall_s={base_wall:.1f} cpu_s={base_cpu:.1f}"
            f" cpu_s_per_recorded_min={base_cpu / args.minutes:.2f} peak_rss_mb={base_rss:.0f}"
        )
        print(
            f"transcribe: minutes={args.minutes:g} wall_s={wall:.1f} cpu_s={cpu:.1f}"
            f" cpu_s_per_recorded_min={cpu / args.minutes:.2f} peak_rss_mb={rss:.0f}"
            f" words={n_words} model_share={(cpu - base_cpu) / max(cpu, 1e-9):.0%}"
        )
        if not args.no_wer:
            print("word error rate (each clip through the same path):")
            error_rates(ENGLISH, directory, cache)
            error_rates(SPANISH, directory, cache)


if __name__ == "__main__":
    main()
