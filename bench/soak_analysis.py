"""After the soak: find the marker bursts in each finalized stem and check the outages'
gaps in metadata.json, against the wall-clock times at which the seats sent them.

Placement is measured relative to the seat's first clean burst, so constant offsets
(Opus's look-ahead, the network's smallest delay, the threshold's rise) cancel: what
is left is drift, and audio misplaced after a reconnect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from soak_seat import BURST_AT, BURST_S, LOOP_S

RATE = 48_000
BIN = 48
"""Samples per envelope bin (1 ms)."""
FRAME_S = 0.02
"""One Opus packet."""
OPUS_LOOKAHEAD_S = 312 / RATE
"""libopus's encoder delay: decoded sound lags packet boundaries by this much."""


@dataclass
class Outage:
    seat: str
    kind: str
    """"network" (the link drops everything, the peer connection lives on) or "rejoin"
    (socket and peer connection closed, a new one made afterwards)."""
    start: float
    """Wall clock: the relay starts dropping."""
    seconds: float
    link: str
    """The relay link it cut."""
    rejoined: str | None
    """The link of the connection after it (the same one after a network outage)."""
    cut_from: float | None = None
    """Due time (wall) of the first packet that did not reach the server: the end of
    the last one the relay forwarded before the outage (from its RTP sequence number)."""
    cut_to: float | None = None
    """Due time (wall) of the first packet that reached the server after it."""


def envelope(path: Path) -> np.ndarray:
    """Peak |sample| per 1 ms bin of a mono stem, decoded block by block."""
    peaks: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            data = np.abs(frame.to_ndarray().astype(np.float32).reshape(-1))
            data = np.concatenate([carry, data])
            whole = len(data) // BIN * BIN
            peaks.append(data[:whole].reshape(-1, BIN).max(axis=1))
            carry = data[whole:]
    return np.concatenate(peaks) if peaks else np.zeros(0, np.float32)


def find_bursts(env: np.ndarray) -> list[tuple[float, float]]:
    """(onset, end) in seconds of each loud stretch of at least 20 ms."""
    if len(env) < 1000:
        return []
    tone = float(np.median(env))
    loud = float(np.percentile(env, 99.7))
    if loud < 3 * tone:
        return []
    loud_bins = np.flatnonzero(env > (tone + loud) / 2)
    if not len(loud_bins):
        return []
    breaks = np.flatnonzero(np.diff(loud_bins) > 5)  # dips of up to 5 ms stay inside
    starts = np.concatenate([loud_bins[:1], loud_bins[breaks + 1]])
    ends = np.concatenate([loud_bins[breaks], loud_bins[-1:]]) + 1
    return [(s / 1000, e / 1000) for s, e in zip(starts, ends, strict=True) if e - s >= 20]


@dataclass
class SeatPlacement:
    seat: str
    bursts_expected: int = 0
    bursts_found: int = 0
    bursts_missing_outside_outages: int = 0
    clipped: int = 0
    """Bursts whose length was off (an edge packet lost): placed by their other edge."""
    unplaceable: int = 0
    """Bursts shorter by more than one packet: losses took both edges (or split it), so
    neither edge says where it landed. Counted, not placed."""
    drift_ms: list[tuple[float, float]] = field(default_factory=list)
    """(minute, drift ms) per burst."""
    worst: list[dict[str, Any]] = field(default_factory=list)
    """The bursts that drifted most: minute, drift, onset and end error, clipped."""
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def max_drift(self, from_minute: float = 0.0) -> float | None:
        values = [abs(d) for m, d in self.drift_ms if m >= from_minute]
        return max(values) if values else None


def place_seat(
    seat: str,
    stem: Path,
    rec_start_wall: float,
    epoch: float,
    duration_s: float,
    outages: list[Outage],
    damaged: list[dict[str, Any]],
) -> SeatPlacement:
    result = SeatPlacement(seat)
    bursts = find_bursts(envelope(stem))
    result.bursts_found = len(bursts)
    first_k = math.ceil((rec_start_wall - epoch - BURST_AT[seat]) / LOOP_S)
    expected: list[float] = []
    k = first_k
    while (at := epoch + k * LOOP_S + BURST_AT[seat] - rec_start_wall) < duration_s - 1:
        if at > 0.5:
            expected.append(at)
        k += 1
    result.bursts_expected = len(expected)
    reference: tuple[float, float] | None = None
    for at in expected:
        near = [b for b in bursts if abs(b[0] - at) < 0.5]
        wall = at + rec_start_wall
        in_outage = any(o.start - 1 <= wall <= o.start + o.seconds + 6 for o in outages)
        if not near:
            if not in_outage:
                result.bursts_missing_outside_outages += 1
            continue
        onset, end = near[0]
        on_err, end_err = onset - at, end - (at + BURST_S)
        clean = abs((end - onset) - BURST_S) <= 0.006
        if abs((end - onset) - BURST_S) > FRAME_S + 0.006:
            result.unplaceable += 1
            continue
        if reference is None:
            if not clean:
                continue
            reference = (on_err, end_err)
        drift_on, drift_end = on_err - reference[0], end_err - reference[1]
        drift = drift_on if clean or abs(drift_on) <= abs(drift_end) else drift_end
        if not clean:
            result.clipped += 1
        result.drift_ms.append((at / 60, drift * 1000))
        result.worst.append(
            {
                "minute": round(at / 60, 2),
                "drift_ms": round(drift * 1000, 1),
                "onset_ms": round(drift_on * 1000, 1),
                "end_ms": round(drift_end * 1000, 1),
                "length_ms": round((end - onset) * 1000, 1),
            }
        )
        result.worst = sorted(result.worst, key=lambda w: -abs(w["drift_ms"]))[:3]
    if reference is None:
        return result
    frame_offset = reference[0] - OPUS_LOOKAHEAD_S  # wall → stem position of packet edges
    mine = [d for d in damaged if d.get("seat") == seat and d.get("start_s") is not None]
    for outage in outages:
        if outage.kind == "unplanned":  # reported apart; the relay has no record of it
            continue
        if outage.cut_from is None or outage.cut_to is None:
            result.gaps.append(
                {
                    "kind": outage.kind,
                    "at_s": None,
                    "found": False,
                    "as": None,
                    "start_error_ms": None,
                    "end_error_ms": None,
                    "note": "relay has no record",
                }
            )
            continue
        want_start = outage.cut_from - rec_start_wall + frame_offset
        want_end = outage.cut_to - rec_start_wall + frame_offset
        if want_end > duration_s:
            continue
        candidates = sorted(
            mine,
            key=lambda d: (d["kind"] == "packet_loss", abs(d["start_s"] - want_start)),
        )
        match = next(
            (d for d in candidates if d["start_s"] - 1 < want_start and d["end_s"] > want_end - 1),
            None,
        )
        result.gaps.append(
            {
                "kind": outage.kind,
                "at_s": round(want_start, 3),
                "found": match is not None,
                "as": match["kind"] if match else None,
                "start_error_ms": round((match["start_s"] - want_start) * 1000, 1)
                if match
                else None,
                "end_error_ms": round((match["end_s"] - want_end) * 1000, 1) if match else None,
            }
        )
    return result


def read_recording(rec_dir: Path) -> tuple[float, dict[str, Any]]:
    """(wall time of recording clock 0, metadata.json) of a finalized recording."""
    start_wall = None
    for line in (rec_dir / "recording.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "start":
            start_wall = float(event["at"]) - float(event["rec"])
            break
    if start_wall is None:
        raise ValueError(f"{rec_dir}: no start event")
    return start_wall, json.loads((rec_dir / "metadata.json").read_text())
