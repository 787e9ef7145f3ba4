"""The host's wall clock stepped while recording (forward an hour, then back to ten
minutes slow) moves neither the room's timer nor a single recorded sample.

The server runs in this process, so stepping `time.time` steps it for the server and
every library it uses. The seats' tone senders stand for browsers on other machines:
their clock is the real one, and they play loud bursts at known moments of it.
"""

from __future__ import annotations

import json
import time
import types
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import support.media
from support.media import RATE, tone_room
from support.polling import wait_for, wait_until
from support.server import CONSENT, RunningServer, give_consent

HOUR = 3600.0


class SteppedWallClock:
    """`time.time` with a settable step: what an operator or NTP does to a host."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.step = 0.0

    def __call__(self) -> float:
        return float(self.real()) + self.step


def decode_flac(path: Path) -> np.ndarray:
    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks)


def burst_onsets(audio: np.ndarray) -> list[float]:
    """Starts (s) of the loud 100 ms bursts over the quiet tone."""
    loud = np.abs(audio) > 0.5
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    onsets: list[float] = []
    for start in starts:
        if not onsets or start / RATE - onsets[-1] > 0.5:
            onsets.append(start / RATE)
    return onsets


def within(value: float, bounds: tuple[float, float], slack: float) -> bool:
    return bounds[0] - slack <= value <= bounds[1] + slack


@pytest.mark.slow
async def test_wall_clock_steps_do_not_move_the_timer_or_the_audio(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_time = time.time
    wall = SteppedWallClock(real_time)
    # the senders' clocks are their own machines', which nobody stepped
    monkeypatch.setattr(support.media, "time", types.SimpleNamespace(time=real_time))
    monkeypatch.setattr(time, "time", wall)

    async with tone_room(server.url) as (clients, peers):
        f = clients["facilitator"]
        await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30)
        await give_consent(clients, CONSENT)

        # each server-side moment lies between the real times just before a call and
        # just after its ack: bounds that hold however loaded the machine is
        before = real_time()
        start = await f.call("recording:start")
        assert start["ok"]
        started = (before, real_time())
        began = sum(started) / 2  # the recording clock's zero, real time
        rec_dir = server.settings.recordings_dir / start["recording"]["id"]
        # bursts, in seconds after the start: a before any step; b an hour "later";
        # both together after a pause that spans the step back
        bursts = {"a": [1.0, 4.0], "b": [2.0, 4.0]}
        for seat, times in bursts.items():
            peers[seat].tone.bursts += [began + t for t in times]

        async def until(t: float) -> None:
            await wait_until(began + t, clock=real_time)

        await until(1.5)
        wall.step = HOUR
        await until(2.5)
        before = real_time()
        assert (await f.call("recording:pause"))["ok"]
        paused = (before, real_time())
        await until(3.0)
        wall.step = -600.0
        await until(3.5)
        before = real_time()
        assert (await f.call("recording:resume"))["ok"]
        resumed = (before, real_time())
        pause_bounds = (resumed[0] - paused[1], resumed[1] - paused[0])
        await until(4.5)
        before = real_time()
        marker = await f.call("marker", {"label": "after the steps"})
        marked = (before, real_time())
        assert marker["ok"]
        # rec_time = marked - started - pause, each within its bounds
        low = marked[0] - started[1] - pause_bounds[1]
        high = marked[1] - started[0] - pause_bounds[0]
        assert low - 0.02 <= marker["marker"]["rec_time"] <= high + 0.02, (low, high, marker)
        expected_marker = marker["marker"]["rec_time"]
        snapshot = await f.wait(
            lambda s: s["markers"] and s["markers"][-1]["label"] == "after the steps", "marker"
        )
        seen = real_time()
        # the timer did not jump: it reads what really ran, pauses excluded; the snapshot
        # was made after the marker and before it reached us
        elapsed = snapshot["timer"]["elapsed_s"]
        assert expected_marker - 0.002 <= elapsed <= expected_marker + seen - marked[0], elapsed
        await until(5.0)
        before = real_time()
        assert (await f.call("recording:stop"))["ok"]
        stopped = (before, real_time())
        recorded = (
            stopped[0] - started[1] - pause_bounds[1],
            stopped[1] - started[0] - pause_bounds[0],
        )
        ready = await f.wait(
            lambda s: (s["recording"]["finalize"] or {}).get("status") in ("ready", "failed"),
            "finalized",
            timeout=60,
        )
        assert ready["recording"]["finalize"]["status"] == "ready", ready["recording"]
        assert within(ready["timer"]["elapsed_s"], recorded, 0.02), (recorded, ready["timer"])

    metadata = json.loads((rec_dir / "metadata.json").read_text())
    assert within(metadata["duration_s"], recorded, 0.1), (recorded, metadata["duration_s"])
    pauses = [m for m in metadata["markers"] if m["kind"] == "pause"]
    assert len(pauses) == 1
    assert within(pauses[0]["paused_s"], pause_bounds, 0.02), (pause_bounds, pauses)
    paused_at = (paused[0] - started[1], paused[1] - started[0])
    assert within(pauses[0]["rec_time"], paused_at, 0.02), (paused_at, pauses)
    pause_s = pauses[0]["paused_s"]  # the server's, just checked against real time

    # every burst sits where it was played, on one timeline for both voices: the first
    # (before any step) fixes the path's latency, the rest must land within 20 ms
    onsets = {
        seat: burst_onsets(decode_flac(rec_dir / "stems" / f"{seat}.flac")) for seat in bursts
    }
    print("burst onsets", onsets, "pause", round(pause_s, 3))
    assert [len(onsets[s]) for s in bursts] == [2, 2], onsets
    latency = onsets["a"][0] - bursts["a"][0]
    # `began` is the middle of the start call: zero is within half its length of it
    assert abs(latency) < 0.1 + (started[1] - started[0]) / 2, (latency, started)
    expected = {
        "a": [bursts["a"][0] + latency, bursts["a"][1] - pause_s + latency],
        "b": [bursts["b"][0] + latency, bursts["b"][1] - pause_s + latency],
    }
    # The room's clock stops when the server begins the pause, the recorder when the
    # pause is stored and it is told; `paused_s` is the recorder's. Audio after the pause
    # can land earlier by that handling time, which the pause call's length bounds (a
    # millisecond or two on a quiet machine, tens of them on a busy one).
    handling = paused[1] - paused[0]
    for seat in bursts:
        for index, (got, want) in enumerate(zip(onsets[seat], expected[seat], strict=True)):
            early = handling if bursts[seat][index] > 3.0 else 0.0
            assert want - early - 0.020 <= got <= want + 0.020, (seat, onsets, expected, early)
