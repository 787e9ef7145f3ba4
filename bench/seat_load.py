"""The client side of the room benchmark: cheap aiortc seats in worker processes.

A seat is what a browser is to the server: a Socket.IO connection with a seat token
and one RTCPeerConnection whose offer has the microphone (sendonly) first and two
receive-only audio lines. To keep the two-core machine measuring the server and not
the clients, a seat neither encodes nor decodes: it sends Opus packets encoded once
(:func:`encode_tone`) in real time, and counts what it receives with storyroom's
receiver tap instead of aiortc's jitter buffer and decoder.

A worker process runs the seats of whole rooms and talks to the coordinator
(`rooms.py`) over a pipe: ``ready`` → ``window`` (counters just before the window,
at its end, and after a drain) → ``stop`` → ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import av
import numpy as np
import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from storyroom.media.aiortc_internals import RtpAudioPacket, restrict_host_addresses, tap_receiver
from storyroom.recording.oggopus import opus_packet_samples

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz
FRAME_S = FRAME / RATE
TIME_BASE = fractions.Fraction(1, RATE)
SEATS = ("a", "b", "facilitator")
CONSENT = {"record": True, "archive": False, "public": False}
PRE_QUIET_S = 1.0
"""Seats send nothing for this long before the measured window opens."""
DRAIN_S = 2.0
"""After the window, frames still arriving within this long count as received."""


def encode_tone(seconds: float = 5.0, freq: float = 440.0, bitrate: int = 64_000) -> list[bytes]:
    """Encode `seconds` of a sine tone once into 20 ms Opus packets (libopus via PyAV).

    The tone has a whole number of cycles, so the packets loop without a click.
    """
    frames = round(seconds / FRAME_S)
    n = np.arange(frames * FRAME)
    pcm = (0.3 * np.sin(2 * np.pi * freq * n / RATE) * 32767).astype(np.int16)
    packets = encode_opus(pcm, bitrate)
    if len(packets) < frames // 2:
        raise RuntimeError(f"libopus gave {len(packets)} packets of 20 ms for {frames} frames")
    return packets


def encode_opus(pcm: np.ndarray, bitrate: int = 64_000) -> list[bytes]:
    """Mono 16-bit `pcm` at 48 kHz as 20 ms Opus packets (libopus via PyAV), the encoder's
    flush included; packets of any other length are left out."""
    codec: Any = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = bitrate
    codec.time_base = TIME_BASE
    packets: list[bytes] = []
    for i in range(len(pcm) // FRAME):
        frame = av.AudioFrame.from_ndarray(
            pcm[i * FRAME : (i + 1) * FRAME].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = i * FRAME
        frame.time_base = TIME_BASE
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return [p for p in packets if opus_packet_samples(p) == FRAME]


class PacketTrack(MediaStreamTrack):
    """Sends pre-encoded Opus packets in real time, looping; aiortc packs them as-is.

    Like storyroom's EncodedAudioTrack: ``recv`` returns an ``av.Packet`` with a pts
    in 1/48000, so ``RTCRtpSender`` calls ``encoder.pack`` instead of encoding.
    Packets are due on a fixed 20 ms grid from the first ``recv``; the slots that fall
    in a ``quiet`` interval are skipped (like a muted microphone), so the RTP
    timestamps jump and the grid keeps its phase.
    """

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self._packets = packets
        self._start: float | None = None
        self._slot = 0
        self.quiet: list[tuple[float, float]] = []
        """``time.monotonic()`` intervals ``[from, to)`` in which nothing is sent."""
        self.sent = 0

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            now = time.monotonic()
            if self._start is None:
                self._start = now
            due = self._start + self._slot * FRAME_S
            if due > now:
                await asyncio.sleep(due - now)
                if self.readyState != "live":
                    raise MediaStreamError
            slot = self._slot
            self._slot += 1
            if not any(begin <= due < end for begin, end in self.quiet):
                break
        packet = av.Packet(self._packets[slot % len(self._packets)])
        packet.pts = slot * FRAME
        packet.time_base = TIME_BASE
        self.sent += 1
        return packet


@dataclass
class ReceivedTrack:
    """Counts the packets of one received track; no decoding."""

    packets: int = 0
    gaps: int = 0
    """Packets missing from the RTP sequence (lost between server and this seat)."""
    last_seq: int | None = None

    def on_packet(self, packet: RtpAudioPacket) -> None:
        self.packets += 1
        seq = packet.sequence_number
        if self.last_seq is not None:
            ahead = (seq - self.last_seq) & 0xFFFF
            if ahead == 0 or ahead >= 0x8000:
                return  # duplicate or late: already counted as a gap, if it was one
            self.gaps += ahead - 1
        self.last_seq = seq


@dataclass
class LoadSeat:
    """One seat: a Socket.IO client and a peer connection that sends and counts."""

    room: int
    seat: str
    token: str
    packets: list[bytes]
    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    # no ICE servers: only local candidates (aiortc's default would ask a public STUN)
    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    track: PacketTrack | None = None
    received: dict[str, ReceivedTrack] = field(default_factory=dict)
    """Source seat → counters, once the answer said which line carries whom."""
    recording_id: str | None = None
    dropped: dict[str, float] = field(default_factory=dict)
    """What went away unasked, and when: "audio" (peer connection) or "socket"."""
    closing: bool = False

    @property
    def key(self) -> str:
        return f"{self.room}/{self.seat}"

    async def connect(self, url: str) -> None:
        @self.sio.on("disconnect")
        def on_disconnect(*reason: Any) -> None:
            if not self.closing:
                self.dropped.setdefault("socket", time.time())

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed") and not self.closing:
                self.dropped.setdefault("audio", time.time())

        await self.sio.connect(
            url, auth={"token": self.token}, transports=["websocket"], wait_timeout=20
        )
        self.track = PacketTrack(self.packets)
        self.pc.addTransceiver(self.track, direction="sendonly")
        by_transceiver: list[tuple[RTCRtpTransceiver, ReceivedTrack]] = []
        for _ in range(2):
            transceiver = self.pc.addTransceiver("audio", direction="recvonly")
            counter = ReceivedTrack()
            tap_receiver(transceiver.receiver, counter.on_packet)
            by_transceiver.append((transceiver, counter))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        ack = await self.call("rtc:offer", {"sdp": self.pc.localDescription.sdp, "type": "offer"})
        if not ack.get("ok"):
            raise RuntimeError(f"seat {self.key}: offer refused: {ack}")
        mids: dict[str, str] = ack["mids"]
        for transceiver, counter in by_transceiver:
            source = mids.get(transceiver.mid or "")
            if source is None:
                raise RuntimeError(f"seat {self.key}: answer has no seat for mid {transceiver.mid}")
            self.received[source] = counter
        await self.pc.setRemoteDescription(RTCSessionDescription(**ack["answer"]))

    async def call(self, event: str, payload: Any = None, timeout: float = 30) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, payload, timeout=timeout)
        return ack

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await self.pc.close()
        with contextlib.suppress(Exception):
            if self.sio.connected:
                await self.sio.disconnect()
        with contextlib.suppress(Exception):
            await self.sio.shutdown()


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    rooms: dict[int, dict[str, str]]
    """Room index → seat → token."""
    packets: list[bytes]
    record: bool
    """Give consent and start/stop the recording (storyroom); the baseline only acks."""
    deadline_s: float
    """Hard limit on the worker's life."""


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of a client worker process (multiprocessing, spawn)."""
    # Ctrl-C goes to the coordinator, which stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    restrict_host_addresses(["127.0.0.1"])
    try:
        asyncio.run(asyncio.wait_for(_worker(conn, config), config.deadline_s))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None


async def _poll(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _watch_parent(parent: int) -> None:
    while True:
        await asyncio.sleep(1)
        if os.getppid() != parent:
            os._exit(3)  # the coordinator is gone: nobody else will stop this worker


async def _worker(conn: Connection, config: WorkerConfig) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    watchdog = asyncio.create_task(_watch_parent(os.getppid()))
    seats = [
        LoadSeat(room, seat, tokens[seat], config.packets)
        for room, tokens in config.rooms.items()
        for seat in SEATS
    ]
    try:
        started = time.monotonic()
        for room in config.rooms:
            # one room at a time, its three seats together
            await asyncio.gather(*(s.connect(config.url) for s in seats if s.room == room))
        await _poll(lambda: all(s.connected for s in seats), 60, "every peer connection")
        if config.record:
            await _start_recordings(seats)
        conn.send(("ready", {"seats": len(seats), "connect_s": time.monotonic() - started}))

        command = await commands.get()
        if command[0] != "window":
            raise RuntimeError(f"unexpected command {command!r}")
        _, t0, t1 = command
        # Quiet before the window and for good after it, so that every frame counted as
        # sent in the window is one that could be received in it, and nothing sent
        # before it is still on its way when it opens.
        to_monotonic = time.monotonic() - time.time()
        for s in seats:
            assert s.track is not None
            s.track.quiet += [
                (t0 - PRE_QUIET_S + to_monotonic, t0 + to_monotonic),
                (t1 + to_monotonic, math.inf),
            ]
        await asyncio.sleep(max(0.0, t0 - 0.05 - time.time()))
        start = _counters(seats)
        await asyncio.sleep(max(0.0, t1 - time.time()))
        at_end = _counters(seats)
        late_s = time.time() - t1
        await asyncio.sleep(max(0.0, t1 + DRAIN_S - time.time()))
        drained = _counters(seats)
        conn.send(("window", {"start": start, "end": at_end, "drained": drained, "late_s": late_s}))

        command = await commands.get()
        if command[0] != "stop":
            raise RuntimeError(f"unexpected command {command!r}")
        stopped: dict[str, Any] = {"recordings": [], "stop_errors": []}
        if config.record:
            for s in seats:
                if s.seat == "facilitator":
                    ack = await s.call("recording:stop")
                    if ack.get("ok"):
                        stopped["recordings"].append(s.recording_id)
                    else:
                        stopped["stop_errors"].append(f"room {s.room}: {ack}")
        stopped["final"] = _counters(seats)
        conn.send(("stopped", stopped))
    finally:
        await asyncio.gather(*(s.close() for s in seats), return_exceptions=True)
        loop.remove_reader(conn.fileno())
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


async def _start_recordings(seats: list[LoadSeat]) -> None:
    """Both participants consent; each facilitator starts the recording once it may."""
    participants = [s for s in seats if s.seat != "facilitator"]
    for s in participants:
        ack = await s.call("consent", CONSENT)
        if not ack.get("ok"):
            raise RuntimeError(f"seat {s.key}: consent refused: {ack}")
    for s in seats:
        if s.seat != "facilitator":
            continue
        deadline = time.monotonic() + 20
        while True:
            ack = await s.call("recording:start")
            if ack.get("ok"):
                s.recording_id = (ack.get("recording") or {}).get("id")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"room {s.room}: recording did not start: {ack}")
            await asyncio.sleep(0.2)  # the server seats connections in the background


def _counters(seats: list[LoadSeat]) -> dict[str, Any]:
    """Synchronous, so one consistent instant of the worker's event loop."""
    return {
        "at": time.time(),
        "connected": sum(1 for s in seats if s.connected),
        "dropped": {s.key: s.dropped for s in seats if s.dropped},
        "sent": {s.key: (s.track.sent if s.track else 0) for s in seats},
        "received": {
            f"{s.key}<-{source}": [counter.packets, counter.gaps]
            for s in seats
            for source, counter in s.received.items()
        },
    }
