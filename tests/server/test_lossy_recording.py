"""A take recorded through a lossy link: three aiortc seats send tones through the
impairment relay with 3% random loss on the way in. The server's receiver reports tell
each sender about the loss, and the finalized stems have no dropouts where packets were
lost: every one is concealed, and `metadata.json` counts them."""

from __future__ import annotations

import itertools
import json
import time

import av
import numpy as np

from storyroom.recording.timeline import read_recording
from support.media import RATE, TONES, LossySeat, SeatPeer, ToneTrack
from support.netimpair import Impairment, Relay
from support.server import RunningServer, create_session, seat_clients, wait_for

LOSS = 0.03
SECONDS = 14.0
HOLE_MIN_S, HOLE_MAX_S = 0.005, 0.060
MARGIN = 0.05
"""How much less a stretch with a lost packet may follow the tone than one without."""
CONSENT = {"record": True, "archive": True, "public": False}


def stem(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.concatenate(
            [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        ).astype(np.float64)


def zero_runs(audio: np.ndarray) -> list[float]:
    """Runs of digital silence (below one 24-bit step) 5-60 ms long (s): the dropouts
    a lost packet used to leave in the 24-bit stems."""
    zero = np.concatenate(([False], np.abs(audio) < 2**-23, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    runs = (edges[1::2] - edges[::2]) / RATE
    return [float(r) for r in runs if HOLE_MIN_S <= r <= HOLE_MAX_S]


def tone_fit(audio: np.ndarray, freq: float) -> float:
    """How closely `audio` follows a sine at `freq` (1: exactly), whatever its phase."""
    t = np.arange(len(audio)) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    fit = basis @ np.linalg.lstsq(basis, audio, rcond=None)[0]
    energy = float(np.sum(audio**2))
    return float(np.sum(fit**2) / energy) if energy > 0 else 0.0


async def test_lost_packets_are_reported_to_the_sender_and_concealed_in_the_stems(
    server: RunningServer,
) -> None:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    relay = Relay()
    seats = {s: LossySeat(SeatPeer(clients[s], ToneTrack(TONES[s]))) for s in clients}
    try:
        for number, seat in enumerate(seats.values()):
            await seat.connect(relay, 7 + number, Impairment(loss=LOSS))
        for name in ("a", "b"):
            assert (await clients[name].call("consent", CONSENT))["ok"]
        f = clients["facilitator"]
        start = await f.call("recording:start")
        rec_dir = server.settings.recordings_dir / start["recording"]["id"]
        began = time.time()
        await wait_for(lambda: time.time() - began > SECONDS, timeout=SECONDS + 5)
        # the server's receiver reports (one about every second) told each sender
        reported = {name: await seat.reported_loss() for name, seat in seats.items()}
        assert (await f.call("recording:stop"))["ok"]
        await f.wait(lambda s: s["recording"]["status"] == "ready", "ready", timeout=180)
        links = {name: seat.link.stats() for name, seat in seats.items() if seat.link}
    finally:
        for seat in seats.values():
            await seat.peer.close()
        for client in clients.values():
            await client.close()
        relay.close_all()

    metadata = json.loads((rec_dir / "metadata.json").read_text())
    segments = {s.seat: s for s in read_recording(rec_dir)}
    for name, freq in TONES.items():
        assert reported[name] > 0
        counts = metadata["stems"][name]["packets_lost"]
        segment = segments[name]
        packets = segment.packets
        # every packet the relay dropped (RTP or not) is at most one the stem misses
        assert 0.01 * len(packets) < counts["lost"] <= links[name]["up"]["lost_random"], counts
        assert counts["concealed_plc"] + counts["recovered_fec"] == counts["lost"]
        audio = stem(str(rec_dir / "stems" / f"{name}.flac"))
        first = segment.sample(packets[0].granule_start)
        last = segment.sample(packets[-1].granule_end)
        inside = audio[first + RATE // 10 : last - RATE // 10]
        holes = zero_runs(inside)
        assert not holes, (name, holes)
        # what FFmpeg's native decoder, used before, makes of the same packets
        native = zero_runs(
            stem(str(rec_dir / "stems" / f"{name}-01.opus"))[RATE // 10 : -RATE // 10]
        )
        # stretches around each lost packet follow the tone about as well as the rest
        lost_at = [
            segment.sample(before.granule_end)
            for before, after in itertools.pairwise(packets)
            if after.seq > before.seq + 1
        ]
        frames = {at - at % 960 for at in lost_at if first + RATE // 10 < at < last - RATE // 10}
        concealed = [tone_fit(audio[at : at + 960], freq) for at in frames]
        clean = [
            tone_fit(audio[at : at + 960], freq)
            for at in range(first + RATE // 10, last - RATE // 10, 960 * 7)
            if not any(abs(at - lost) < 1920 for lost in lost_at)
        ]
        print(
            f"{name}: {counts}, reported to the sender {reported[name]}, 5-60 ms zero runs "
            f"{len(holes)} (FFmpeg's decoder: {len(native)}), tone fit "
            f"{np.median(concealed):.4f} at losses, {np.median(clean):.4f} elsewhere"
        )
        assert concealed and clean
        assert np.median(concealed) >= np.median(clean) - MARGIN, (name, concealed, clean)
    losses = [d for d in metadata["damaged"] if d["kind"] == "packet_loss"]
    assert losses and all("concealed (PLC)" in d["reason"] for d in losses)
