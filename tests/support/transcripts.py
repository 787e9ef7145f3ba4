"""Recording real speech through real seats, and waiting for its transcript."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from storyroom.recording import layout
from support.media import RATE, decode_ogg, start_recording, stop_recording, tone_room
from support.polling import wait_for
from support.server import CONSENT, RunningServer, call, create_session, finalized
from support.speech import ENGLISH, Clip, ClipTrack, clip, programme


@dataclass(frozen=True)
class SpokenRecording:
    recording_id: str
    rec_dir: Path
    placed: dict[str, list[tuple[float, Clip]]]
    late_s: float
    """How late each clip can have begun on the recording clock: from just before the
    start was asked to just after the seats began playing."""
    names: dict[str, str]


async def record_speech(
    server: RunningServer,
    placed: dict[str, list[tuple[float, Clip]]],
    seconds: float,
    language: str = "en",
    consent: dict[str, bool] = CONSENT,
) -> SpokenRecording:
    """A session whose seats (every seat, silent where nothing is placed) play `placed`
    clips from the start of the take for `seconds`; returns once it is finalized."""
    created = await create_session(server.url, language=language)
    seats = ("a", "b", "facilitator")
    tracks = {seat: ClipTrack(programme(placed.get(seat, []), seconds)) for seat in seats}
    async with tone_room(server.url, created, tracks=tracks) as (clients, _peers):
        before = time.monotonic()
        rec_dir = await start_recording(server.settings.recordings_dir, clients, consent)
        for track in tracks.values():
            track.play()
        late = time.monotonic() - before

        def played() -> bool:
            return all(t.played_s > seconds + 0.3 for t in tracks.values())

        await wait_for(played, timeout=seconds * 4 + 30, what="the seats to play their clips")
        await stop_recording(clients, rec_dir)
    await finalized(server.url, rec_dir.name, timeout=180)
    names = {"a": "Rosa", "b": "Dale", "facilitator": "Sam"}
    return SpokenRecording(rec_dir.name, rec_dir, placed, late, names)


async def transcript_of(server: RunningServer, recording_id: str, timeout: float = 300) -> Any:
    """The transcript call's answer once transcription has ended (any way)."""

    async def ended() -> Any:
        async with aiohttp.ClientSession() as http:
            body = await call(http, "GET", f"{server.url}/api/recordings/{recording_id}/transcript")
        status = body["status"]
        if status and status["status"] not in ("queued", "transcribing"):
            return body
        return None

    return await wait_for(ended, timeout=timeout, interval=0.5, what="the transcript")


async def rosa_then_dale(server: RunningServer) -> tuple[SpokenRecording, list[dict[str, Any]]]:
    """The browser tests' transcribed recording: Rosa (seat a) reads 6 s of LibriVox,
    then Dale (seat b) 3 s; returns it with its transcript's turns, one per speaker."""
    rosa, dale = clip(ENGLISH[2]), clip(ENGLISH[3])  # 6.0 s and 3.0 s
    placed = {"a": [(0.5, rosa)], "b": [(rosa.seconds + 2.0, dale)]}
    spoken = await record_speech(server, placed, rosa.seconds + dale.seconds + 3.0)
    body = await transcript_of(server, spoken.recording_id)
    assert body["status"]["status"] == "ready", body["status"]
    turns: list[dict[str, Any]] = body["transcript"]["turns"]
    assert [(t["seat"], t["name"]) for t in turns] == [("a", "Rosa"), ("b", "Dale")], turns
    return spoken, turns


ENVELOPE_S = 0.1


def _envelope(samples: np.ndarray) -> np.ndarray:
    n = int(ENVELOPE_S * RATE)
    usable = samples[: len(samples) // n * n].reshape(-1, n)
    return np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1))


def speech_missing_s(spoken: SpokenRecording, seat: str) -> float:
    """Seconds of `seat`'s placed clips that are loud in the clip but near silent in
    the finalized stem, at the lag (within `late_s`) where the two envelopes agree best:
    tells audio the recording lost from words the model left out."""
    stem = decode_ogg(str(spoken.rec_dir / layout.finalized_stem(seat)))
    missing = 0.0
    for start, c in spoken.placed[seat]:
        voice = _envelope(c.samples)
        loud = voice > 0.1 * voice.max()
        best: tuple[float, np.ndarray] | None = None
        for lag in np.arange(0.0, spoken.late_s + 0.2, 0.02):
            at = int((start + lag) * RATE)
            heard = _envelope(stem[at : at + len(c.samples)])
            if len(heard) < len(voice):
                heard = np.pad(heard, (0, len(voice) - len(heard)))
            score = float(np.dot(heard, voice))
            if best is None or score > best[0]:
                best = (score, heard)
        assert best is not None
        missing += float(np.sum(loud & (best[1] < 0.1 * voice))) * ENVELOPE_S
    return missing
