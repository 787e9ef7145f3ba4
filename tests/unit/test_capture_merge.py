"""Finalization merges a seat's browser capture into its server stem.

The recordings are written by the recorder's own classes (support.recordings: real Opus
packets, lost packets, an outage, a pause); the captures are the same input encoded by
PyAV into WebM or Ogg Opus, drifted by a few tens of ppm, cut in chunks and indexed as
the upload path stores them (support.captures). The finalized stems are read back with
FFmpeg and compared with the input second by second.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from storyroom.finalize.run import finalize_recording
from support.captures import drifted, encode_capture, lag_of, match_at, write_run
from support.recordings import (
    RATE,
    Connection,
    Recording,
    SeatScript,
    finalize_input,
    make_recording,
    speech_like,
)

# the module's fixture finalizes three copies of a take: on a shared, busy machine that
# alone can take minutes
pytestmark = pytest.mark.timeout(900)

SECONDS = 30.0
OUTAGE = (9.0, 15.0)
PAUSE = (20.0, 2.0)  # at 20 s on the recording clock, 2 s of wall time
RESUME_LATE_S = 0.04
"""The browser's recorder resumes this much after the server's clock: the capture then
lacks the first 40 ms after the pause, and lines up 40 ms differently after it."""
CAPTURE_FROM = 0.2
MATCH = 0.9
"""A second of a stem that follows its input at least this well holds the voice."""
ALIGNED_S = 0.001
"""How close the filled voice must be to where the server placed the same voice (the
issue asks for 20 ms between seats; the server's placement holds that already)."""
AUDIO_OUTPUTS = ("master.wav", "access.mp3", "stems/a.flac", "stems/b.flac")

SIGNALS = {
    "a": speech_like(SECONDS + 4, 3, [(0.4, SECONDS)]),
    "b": speech_like(SECONDS + 4, 4, [(0.4, SECONDS)]),
}


def _signal(seat: str) -> Any:
    samples = SIGNALS[seat]
    return lambda t: samples[np.minimum((t * RATE).astype(int), len(samples) - 1)]


def _lost_packets(seed: int) -> list[tuple[float, float]]:
    """About 3% of a's packets, one at a time, plus a 6-second outage."""
    rng = np.random.default_rng(seed)
    frames = np.flatnonzero(rng.random(int(SECONDS / 0.02)) < 0.03)
    return [(0.3 + k * 0.02 + 0.005, 0.3 + k * 0.02 + 0.015) for k in frames] + [OUTAGE]


def _record(path: Path) -> Recording:
    return make_recording(
        path,
        [
            SeatScript("a", [Connection(0.3, SECONDS, lost=_lost_packets(5))], signal=_signal("a")),
            SeatScript("b", [Connection(0.3, SECONDS)], signal=_signal("b")),
        ],
        SECONDS,
        pauses=[PAUSE],
    )


def _capture(seat: str, ppm: float, container: str = "webm") -> bytes:
    """What `seat`'s browser recorded from CAPTURE_FROM to the end: its input, the
    first RESUME_LATE_S after the pause missing, on a clock `ppm` fast."""
    samples = SIGNALS[seat]
    pause = round(PAUSE[0] * RATE)
    heard = np.concatenate(
        [
            samples[round(CAPTURE_FROM * RATE) : pause],
            samples[pause + round(RESUME_LATE_S * RATE) : round(SECONDS * RATE)],
        ]
    )
    return encode_capture(drifted(heard, ppm), container)


def _stem(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


@dataclass
class Finalized:
    path: Path
    metadata: dict[str, Any]

    def stem(self, seat: str) -> np.ndarray:
        return _stem(self.path / "stems" / f"{seat}.flac")

    def capture(self, seat: str) -> dict[str, Any]:
        return dict(self.metadata["stems"][seat]["capture"])

    def bad_seconds(self, seat: str, lag: int) -> list[int]:
        stem = self.stem(seat)
        talk = range(1, int(SECONDS) - 1)
        return [s for s in talk if match_at(stem, SIGNALS[seat], s, lag) < MATCH]


def _finalize(path: Path, recording: Recording) -> Finalized:
    finalize_recording(path, finalize_input(recording))
    return Finalized(path, json.loads((path / "metadata.json").read_text()))


@pytest.fixture(scope="module")
def takes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finalized]:
    """The same take finalized without a capture, with a +50 ppm WebM capture of a, and
    with a -50 ppm Ogg capture of a plus one of b."""
    root = tmp_path_factory.mktemp("merge")
    recording = _record(root / "server-only")
    for name in ("webm", "ogg"):
        shutil.copytree(recording.path, root / name)
    write_run(root / "webm", "a", 1, _capture("a", 50), CAPTURE_FROM + 0.03)
    write_run(root / "ogg", "a", 1, _capture("a", -50, "ogg"), CAPTURE_FROM - 0.2, "ogg")
    write_run(root / "ogg", "b", 1, _capture("b", 20), CAPTURE_FROM)
    return {name: _finalize(root / name, recording) for name in ("server-only", "webm", "ogg")}


def test_the_capture_fills_the_outage_and_every_concealed_packet(
    takes: dict[str, Finalized],
) -> None:
    lag = lag_of(takes["server-only"].stem("a"), SIGNALS["a"], (1.0, 8.0))
    before = takes["server-only"].bad_seconds("a", lag)
    assert set(range(int(OUTAGE[0]), int(OUTAGE[1]))) <= set(before), before
    for name in ("webm", "ogg"):
        merged = takes[name]
        assert merged.bad_seconds("a", lag) == [], name
        capture = merged.capture("a")
        browser = [r for r in capture["ranges"] if r["source"] == "browser"]
        assert any(r["start_s"] <= OUTAGE[0] + 0.1 and r["end_s"] >= OUTAGE[1] for r in browser)
        # every packet lost in transit (about 3%) is one browser range or part of one
        lost = merged.metadata["stems"]["a"]["packets_lost"]
        assert len(browser) >= lost["concealed_plc"] // 2 > 0, (len(browser), lost)
        assert capture["unfilled_s"] < 0.5  # before the capture began
        assert capture["filled_s"] == pytest.approx(
            sum(r["end_s"] - r["start_s"] for r in browser), abs=0.01
        )
        starts = [r["start_s"] for r in capture["ranges"]]
        assert starts == sorted(starts) and capture["ranges"][-1]["end_s"] == SECONDS
        # the loss is still on record: what the network did does not change
        assert lost == takes["server-only"].metadata["stems"]["a"]["packets_lost"]


def test_the_filled_voice_stays_where_the_server_placed_it(takes: dict[str, Finalized]) -> None:
    """Within 20 ms of the other seat (in fact within ALIGNED_S of the server's own
    placement of the same voice)."""
    lag_a = lag_of(takes["server-only"].stem("a"), SIGNALS["a"], (1.0, 8.0))
    lag_b = lag_of(takes["server-only"].stem("b"), SIGNALS["b"], (1.0, 8.0))
    assert abs(lag_a - lag_b) < 0.020 * RATE
    for name in ("webm", "ogg"):
        filled = lag_of(takes[name].stem("a"), SIGNALS["a"], OUTAGE)
        assert abs(filled - lag_a) <= ALIGNED_S * RATE, (name, filled, lag_a)
        after_pause = lag_of(takes[name].stem("a"), SIGNALS["a"], (PAUSE[0] + 1, SECONDS - 1))
        assert abs(after_pause - lag_a) <= ALIGNED_S * RATE, (name, after_pause, lag_a)


@pytest.mark.parametrize(("name", "ppm"), [("webm", 50.0), ("ogg", -50.0)])
def test_drift_and_the_pause_offset_are_measured(
    takes: dict[str, Finalized], name: str, ppm: float
) -> None:
    (run,) = takes[name].capture("a")["runs"]
    assert run["used"] and run["reason"] is None
    assert run["drift_ppm"] == pytest.approx(ppm, abs=3)
    offsets = {float(start): offset for start, offset in run["offset_s"].items()}
    assert 0.0 in offsets and PAUSE[0] in offsets  # a stretch each side of the pause
    # the browser resumed 40 ms late: its audio after the pause is 40 ms earlier in it
    before = [offset for start, offset in offsets.items() if start < PAUSE[0]]
    assert max(before) - min(before) < 0.0005  # (the server's run after the outage)
    assert offsets[PAUSE[0]] - before[0] == pytest.approx(RESUME_LATE_S, abs=0.001)
    assert run["points"] >= 4 and run["residual_ms"] < 0.5
    assert run["filled_s"] > OUTAGE[1] - OUTAGE[0]


@pytest.mark.parametrize(("name", "seat"), [("webm", "a"), ("ogg", "a"), ("ogg", "b")])
def test_nothing_but_the_damaged_stretches_changes(
    takes: dict[str, Finalized], name: str, seat: str
) -> None:
    """Outside each browser range and its crossfades the stem is the server's, sample
    for sample; inside, every range is damage the server's stem had."""
    capture = takes[name].capture(seat)
    assert capture["runs"][0]["used"]
    assert capture["filled_s"] <= capture["damaged_s"]
    merged, plain = takes[name].stem(seat), takes["server-only"].stem(seat)
    assert len(merged) == len(plain)
    kept = np.ones(len(plain), bool)
    fade = 0.006 * RATE  # the crossfade, and the metadata rounding to the millisecond
    for r in capture["ranges"]:
        if r["source"] == "browser":
            kept[max(0, int(r["start_s"] * RATE - fade)) : int(r["end_s"] * RATE + fade)] = False
    assert 0 < kept.sum() < len(kept)
    assert np.array_equal(merged[kept], plain[kept])


def test_without_a_capture_metadata_and_files_are_as_before(takes: dict[str, Finalized]) -> None:
    plain = takes["server-only"]
    assert all("capture" not in stem for stem in plain.metadata["stems"].values())
    assert not (plain.path / "capture").exists()
    assert not list(plain.path.rglob("*.part")) and not list(plain.path.glob(".merge-*"))
    listed = {f["name"] for f in takes["webm"].metadata["files"]}
    assert {"capture/a/01.webm", "capture/a/01.jsonl"} <= listed  # kept, and in the manifest


def _write_bad_runs(path: Path) -> dict[int, str]:
    """Four runs of a that must not be used, and the words their reasons contain."""
    write_run(path, "a", 1, bytes(range(256)) * 200, CAPTURE_FROM)
    good = _capture("a", 0)
    media = write_run(path, "a", 2, good, CAPTURE_FROM)
    with open(media, "r+b") as f:  # the index vouches for bytes the file lost
        f.truncate(len(good) // 2)
    write_run(path, "a", 3, _capture("b", 0), CAPTURE_FROM)
    write_run(path, "a", 4, good, 500.0)
    return {1: "not readable", 2: "shorter", 3: "does not match", 4: "outside the take"}


def test_bad_captures_are_ignored_with_a_reason_and_change_no_audio(
    takes: dict[str, Finalized], tmp_path: Path
) -> None:
    recording = _record(tmp_path / "bad")
    reasons = _write_bad_runs(recording.path)
    bad = _finalize(recording.path, recording)
    runs = bad.capture("a")["runs"]
    assert [r["file"] for r in runs] == [f"capture/a/{n:02d}.webm" for n in reasons]
    for run, words in zip(runs, reasons.values(), strict=True):
        assert not run["used"] and words in run["reason"], run
        assert run["filled_s"] == 0
    plain = takes["server-only"]
    for name in AUDIO_OUTPUTS:  # byte for byte what finalizing without them made
        assert (bad.path / name).read_bytes() == (plain.path / name).read_bytes(), name
    assert bad.capture("a")["filled_s"] == 0
    assert bad.metadata["damaged"] == plain.metadata["damaged"]


def test_a_torn_tail_beyond_the_index_is_ignored_and_the_rest_used(tmp_path: Path) -> None:
    recording = _record(tmp_path / "torn")
    media = write_run(recording.path, "a", 1, _capture("a", 0), CAPTURE_FROM, close=False)
    with open(media, "ab") as f:
        f.write(b"\x1a\x45\xdf\xa3 half a cluster")
    merged = _finalize(recording.path, recording)
    (run,) = merged.capture("a")["runs"]
    assert run["used"] and not run["closed"]
    assert merged.capture("a")["filled_s"] > OUTAGE[1] - OUTAGE[0]
