"""Real aiortc seat peers sending synthetic tones, for media tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from storyroom.recording import layout
from support.netimpair import Impairment, Link, Relay, host_candidate, rewrite_candidates
from support.polling import wait_for
from support.server import (
    CONSENT,
    SeatClient,
    close_clients,
    create_session,
    give_consent,
    seat_clients,
)

RATE = 48_000
FRAME = 960  # 20 ms
TONES = {"a": 440.0, "b": 660.0, "facilitator": 880.0}
"""One tone per seat, so a listener can tell whom it hears."""
NO_ICE_SERVERS = RTCConfiguration(iceServers=[])
"""Only loopback host candidates (aiortc's default would ask a public STUN server)."""


class ToneTrack(MediaStreamTrack):
    """A quiet sine at `freq`, paced in real time, with loud bursts at chosen wall times."""

    kind = "audio"

    def __init__(self, freq: float, level: float = 0.1) -> None:
        super().__init__()
        self.freq = freq
        self.level = level
        self.bursts: list[float] = []  # wall-clock start times of 100 ms bursts
        self.burst_level = 0.9
        self._start: float | None = None
        self._samples = 0
        self.sent_frames = 0

    @property
    def sent_s(self) -> float:
        """Seconds of audio handed to the sender so far (behind the wall clock when the
        machine is busy: bound what a receiver got by this, not by elapsed time)."""
        return self.sent_frames * FRAME / RATE

    def frame_wall_time(self, sample: int) -> float:
        assert self._start is not None
        return self._start + sample / RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            wait = self._start + self._samples / RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        signal = self.signal(np.arange(self._samples, self._samples + FRAME))
        frame = av.AudioFrame.from_ndarray(
            (signal * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, RATE)
        self._samples += FRAME
        self.sent_frames += 1
        return frame

    def signal(self, n: np.ndarray) -> np.ndarray:
        """The samples numbered `n` (from the first one sent), in [-1, 1]."""
        assert self._start is not None
        wall = self._start + n / RATE
        amplitude = np.full(FRAME, self.level)
        for burst in self.bursts:
            amplitude[(wall >= burst) & (wall < burst + 0.1)] = self.burst_level
        return amplitude * np.sin(2 * np.pi * self.freq * n / RATE)


@dataclass
class SeatPeer:
    """One seat's aiortc peer connection: mic on the first m-line, two receivers."""

    client: SeatClient
    tone: ToneTrack
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(NO_ICE_SERVERS))
    mids: dict[str, str] = field(default_factory=dict)
    received: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def offer(self) -> dict[str, Any]:
        """Send this seat's offer; the server's ack, accepted or refused."""
        self.pc.addTransceiver(self.tone, direction="sendonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.create_task(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        ack: dict[str, Any] = await self.client.call(
            "rtc:offer", {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        )
        return ack

    async def connect(self) -> dict[str, Any]:
        ack = await self.offer()
        assert ack["ok"], ack
        self.mids = ack["mids"]
        await self.pc.setRemoteDescription(RTCSessionDescription(**ack["answer"]))
        return ack

    def seat_of(self, track: MediaStreamTrack) -> str:
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track and transceiver.mid is not None:
                return self.mids.get(transceiver.mid, "?")
        return "?"

    async def _read(self, track: MediaStreamTrack) -> None:
        seat = None
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if seat is None:
                    seat = self.seat_of(track)
                    self.received.setdefault(seat, [])
                data = frame.to_ndarray().astype(np.float32)
                if data.shape[0] == 1 and frame.layout.nb_channels == 2:
                    data = data.reshape(-1, 2).mean(axis=1)
                self.received[seat].append(data.reshape(-1) / 32768.0)

    def samples_from(self, seat: str, last_seconds: float | None = None) -> np.ndarray:
        chunks = self.received.get(seat, [])
        if not chunks:
            return np.zeros(0)
        audio = np.concatenate(chunks)
        if last_seconds is not None:
            audio = audio[-int(last_seconds * RATE) :]
        return audio

    async def close(self) -> None:
        await self.pc.close()
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def dominant_frequency(audio: np.ndarray, rate: int = RATE) -> float:
    if len(audio) < 1024:
        return 0.0
    window = audio * np.hanning(len(audio))
    spectrum = np.abs(np.fft.rfft(window))
    spectrum[:10] = 0  # ignore DC
    return float(np.argmax(spectrum) * rate / len(audio))


def decode_stem(rec_dir: Path, seat: str, index: int = 1) -> np.ndarray:
    """A recording's Ogg Opus stem of `seat`'s connection `index`, decoded."""
    return decode_ogg(str(rec_dir / layout.segment_opus(seat, index)))


def decode_ogg(path: str) -> np.ndarray:
    """Decode an Ogg Opus stem with PyAV to mono float samples at 48 kHz."""
    chunks = []
    with av.open(path) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


@dataclass
class LossySeat:
    """A seat peer whose media goes through a relay link (seat ⇄ link ⇄ server)."""

    peer: SeatPeer
    link: Link | None = None

    async def connect(self, relay: Relay, seed: int, up: Impairment) -> None:
        """Offer through a new link of `relay` whose uplink does `up` (seeded)."""
        pc = self.peer.pc
        pc.addTransceiver(self.peer.tone, direction="sendonly")
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        self.link = await relay.open(
            self.peer.client.token[:8],
            up,
            Impairment(),
            seed,
            seat_addr=host_candidate(pc.localDescription.sdp),
        )
        offer = rewrite_candidates(pc.localDescription.sdp, self.link.server_port)
        ack = await self.peer.client.call("rtc:offer", {"sdp": offer, "type": "offer"})
        assert ack["ok"], ack
        self.link.server_addr = host_candidate(ack["answer"]["sdp"])
        answer = rewrite_candidates(ack["answer"]["sdp"], self.link.seat_port)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def reported_loss(self) -> int:
        """Packets lost, as the server's last receiver report told this sender."""
        for transceiver in self.peer.pc.getTransceivers():
            if transceiver.direction == "sendonly":
                stats = await transceiver.sender.getStats()
                return max(
                    (s.packetsLost for s in stats.values() if s.type == "remote-inbound-rtp"),
                    default=0,
                )
        return 0


def audio_sent(peers: dict[str, SeatPeer]) -> dict[str, float]:
    """Per seat, the seconds of audio its tone track has handed to its sender so far."""
    return {seat: peer.tone.sent_s for seat, peer in peers.items()}


@asynccontextmanager
async def tone_room(
    url: str,
    created: dict[str, Any] | None = None,
    seats: tuple[str, ...] = tuple(TONES),
    configure: Callable[[SeatClient], RTCConfiguration] | None = None,
    tracks: Mapping[str, ToneTrack] | None = None,
) -> AsyncIterator[tuple[dict[str, SeatClient], dict[str, SeatPeer]]]:
    """A session of the server at `url` (new unless `created`) whose `seats` are aiortc
    peers, each sending its tone from `TONES` (or its track from `tracks`), configured by
    `configure` from its seat client (only loopback host candidates without it); all
    closed on exit."""
    created = created or await create_session(url)
    clients = await seat_clients(url, created, seats)
    peers = {
        seat: SeatPeer(
            clients[seat],
            tracks[seat] if tracks else ToneTrack(TONES[seat]),
            RTCPeerConnection(configure(clients[seat]) if configure else NO_ICE_SERVERS),
        )
        for seat in seats
    }
    try:
        for peer in peers.values():
            await peer.connect()
        yield clients, peers
    finally:
        for peer in peers.values():
            await peer.close()
        await close_clients(clients)


async def start_recording(
    recordings: Path, clients: dict[str, SeatClient], consent: dict[str, bool] = CONSENT
) -> Path:
    """The participants among `clients` give `consent` and the facilitator starts a take;
    the take's directory in `recordings` (the server's recordings directory)."""
    await give_consent(clients, consent)
    start = await clients["facilitator"].call("recording:start")
    assert start["ok"], start
    return recordings / start["recording"]["id"]


async def stop_recording(clients: dict[str, SeatClient], rec_dir: Path) -> None:
    """The facilitator stops the take; returns once its log says it stopped."""
    assert (await clients["facilitator"].call("recording:stop"))["ok"]
    log = rec_dir / "recording.jsonl"
    await wait_for(lambda: log.exists() and '"stop"' in log.read_text(), what="the stop in the log")
