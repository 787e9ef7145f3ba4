"""The seats of the soak benchmark: aiortc peers that send marker bursts through the
impairment relay, drop and rejoin, and know which of their packets arrived.

A seat sends a pre-encoded loop (:func:`encode_marker_loop`): a quiet tone with a
little seeded noise (so that no two packets in the loop are alike) and one loud
100 ms burst per loop, at a place that differs per seat. Packet `i` of a seat is due
at ``epoch + i * 20 ms`` on the wall clock for the whole run, across reconnects, so
burst `k` is spoken at a known wall time and a listener can tell from a payload which
absolute packet it is. Nothing is encoded or decoded while the run lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import socketio
from aioice import turn as aioice_turn
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from seat_load import CONSENT, FRAME, FRAME_S, RATE, TIME_BASE, encode_opus

from storyroom.media.aiortc_internals import RtpAudioPacket, tap_receiver
from support.netimpair import Impairment, RelayClient, host_candidate, rewrite_candidates

LOOP_S = 10.0
"""One burst per seat every this many seconds."""
BURST_S = 0.1
BURST_AT = {"a": 2.0, "b": 5.0, "facilitator": 8.0}
"""Where in the loop each seat's burst starts (s)."""
TONE = {"a": 440.0, "b": 660.0, "facilitator": 880.0}


def encode_marker_loop(seat: str, seed: int) -> list[bytes]:
    """`LOOP_S` of tone + noise with one burst, as 20 ms Opus packets (libopus via PyAV)."""
    frames = round(LOOP_S / FRAME_S)
    n = np.arange(frames * FRAME)
    level = np.full(len(n), 0.08)
    start = round(BURST_AT[seat] * RATE)
    level[start : start + round(BURST_S * RATE)] = 0.8
    noise = np.random.default_rng(seed).normal(0, 0.004, len(n))
    signal = level * np.sin(2 * np.pi * TONE[seat] * n / RATE) + noise
    pcm = (np.clip(signal, -1, 1) * 32767).astype(np.int16)
    packets = encode_opus(pcm)[:frames]
    if len(packets) != frames or len(set(packets)) != frames:
        raise RuntimeError(f"{seat}: the marker loop's packets are not {frames} distinct ones")
    return packets


def refresh_turn_channels_every(seconds: int) -> None:
    """Make this process's aiortc TURN clients rebind their channels every `seconds`.

    For runs with short coturn lifetimes (`--turn-lifetime-s`): aioice rebinds a channel,
    which also refreshes its permission, only every 500 s, which would outlast them.
    With coturn's defaults (600 s channels; a ChannelBind extends the permission with
    the channel) aioice's own timer is enough, measured over 12-minute connections, and
    this is not called. aioice reads the interval from a default argument, so that is
    what changes.
    """
    defaults = aioice_turn.create_turn_endpoint.__defaults__
    names = aioice_turn.create_turn_endpoint.__code__.co_varnames
    if defaults is None or "channel_refresh_time" not in names:
        raise RuntimeError("aioice.turn.create_turn_endpoint has no channel_refresh_time")
    argcount = aioice_turn.create_turn_endpoint.__code__.co_argcount
    index = names.index("channel_refresh_time") - (argcount - len(defaults))
    patched = list(defaults)
    patched[index] = seconds
    aioice_turn.create_turn_endpoint.__defaults__ = tuple(patched)


class MarkerTrack(MediaStreamTrack):
    """Sends the seat's loop in real time: absolute packet `i` at ``epoch + i * 20 ms``.

    A new track for each peer connection starts at the packet that is due now, so
    the seat's audio keeps its place on the wall clock across reconnects.
    """

    kind = "audio"

    def __init__(
        self, packets: list[bytes], epoch: float, sent: dict[str, list[int]], link: str
    ) -> None:
        super().__init__()
        self._packets = packets
        self._epoch = epoch
        self._first = -1
        self._next = -1
        self._sent = sent
        """Shared with the seat: link → [first, last] absolute index handed to aiortc."""
        self._link = link

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._first < 0:  # the sender starts once connected: begin with what is due
            self._first = self._next = max(0, math.ceil((time.time() - self._epoch) / FRAME_S))
            self._sent[self._link] = [self._first, self._first - 1]
        index = self._next
        wait = self._epoch + index * FRAME_S - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
            if self.readyState != "live":
                raise MediaStreamError
        self._next += 1
        packet = av.Packet(self._packets[index % len(self._packets)])
        packet.pts = (index - self._first) * FRAME
        packet.time_base = TIME_BASE
        self._sent[self._link][1] = index
        return packet


@dataclass
class Heard:
    """What one seat received from one source: absolute packet indices and arrival."""

    lookup: dict[bytes, int]
    """The source's loop: payload → index in the loop."""
    source_epoch: float
    loop: int
    indices: set[int] = field(default_factory=set)
    last_arrival: float = 0.0
    unknown: int = 0

    def on_packet(self, packet: RtpAudioPacket) -> None:
        position = self.lookup.get(packet.payload)
        if position is None:
            self.unknown += 1
            return
        # The absolute index whose due time is closest before the arrival.
        due_index = (packet.arrival - self.source_epoch) / FRAME_S
        cycles = round((due_index - position) / self.loop)
        self.indices.add(cycles * self.loop + position)
        self.last_arrival = packet.arrival


@dataclass
class SoakSeat:
    """One seat: Socket.IO with its token, and one peer connection at a time via a link."""

    name: str
    """Unique over the run, e.g. "r0/a"."""
    seat: str
    url: str
    token: str
    packets: list[bytes]
    epoch: float
    relay: RelayClient
    impairment: Impairment
    seed: int
    lookups: dict[str, dict[bytes, int]]
    """Every seat's loop lookup (source seat → payload → loop index)."""
    turn_port: int | None = None
    """Relay-only through the TURN server on this port (through a proxy link), else
    host candidates through a rewriting link."""
    sio: socketio.AsyncClient | None = None
    pc: RTCPeerConnection | None = None
    link: str | None = None
    connections: int = 0
    sent: dict[str, list[int]] = field(default_factory=dict)
    """Relay link (one per connection) → [first, last] absolute packet index sent."""
    heard: dict[str, Heard] = field(default_factory=dict)
    snapshots: int = 0
    recording: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    unplanned: list[tuple[float, float]] = field(default_factory=list)
    """(failed, rejoined) wall times of each rejoin the seat made by itself, as the
    browser client does, when its peer connection failed or its socket closed outside
    the schedule (an overloaded machine, not the relay's planned outages)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whoever is dropping and rejoining the seat (schedule or recovery)."""
    closing: bool = False

    async def join(self) -> None:
        """Socket.IO (if not connected) and a new peer connection through a new link."""
        if self.sio is None or not self.sio.connected:
            sio = self.sio = socketio.AsyncClient(reconnection=False)
            sio.on("room", self._on_room)
            sio.on("disconnect", lambda *_: self._lost(sio))
            await self.sio.connect(
                self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=20
            )
        self.connections += 1
        self.link = f"{self.name}#{self.connections}"
        if self.turn_port is not None:
            await self._join_through_turn(self.link)
            return
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._watch(pc)
        pc.addTransceiver(
            MarkerTrack(self.packets, self.epoch, self.sent, self.link), direction="sendonly"
        )
        receivers = [pc.addTransceiver("audio", direction="recvonly") for _ in range(2)]
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        ports = await self.relay.call(
            "open",
            name=self.link,
            seat=list(host_candidate(pc.localDescription.sdp)),
            up=self.impairment.__dict__,
            down=self.impairment.__dict__,
            seed=self.seed * 1000 + self.connections,
        )
        offer = rewrite_candidates(pc.localDescription.sdp, ports["server_port"])
        ack = await self.call("rtc:offer", {"sdp": offer, "type": "offer"})
        if not ack.get("ok"):
            raise RuntimeError(f"{self.name}: offer refused: {ack}")
        await self.relay.call(
            "target", name=self.link, server=list(host_candidate(ack["answer"]["sdp"]))
        )
        self._tap(receivers, ack["mids"])
        answer = rewrite_candidates(ack["answer"]["sdp"], ports["seat_port"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _join_through_turn(self, link: str) -> None:
        """Relay-only, with the seat's own TURN credentials from its snapshot; the TURN
        server's address replaced by a proxy link in front of it (seat ⇄ link ⇄ coturn)."""
        await poll(lambda: self.snapshot.get("ice_servers"), 10, "the seat's ICE servers")
        ports = await self.relay.call(
            "open",
            name=link,
            server=["127.0.0.1", self.turn_port],
            up=self.impairment.__dict__,
            down=self.impairment.__dict__,
            seed=self.seed * 1000 + self.connections,
        )
        servers = [
            RTCIceServer(
                urls=[
                    re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{ports['seat_port']}", url)
                    for url in server["urls"]
                ],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in self.snapshot["ice_servers"]
            if server["urls"][0].startswith("turn")
        ]
        pc = self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )
        self._watch(pc)
        pc.addTransceiver(
            MarkerTrack(self.packets, self.epoch, self.sent, link), direction="sendonly"
        )
        receivers = [pc.addTransceiver("audio", direction="recvonly") for _ in range(2)]
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        ack = await self.call("rtc:offer", {"sdp": pc.localDescription.sdp, "type": "offer"})
        if not ack.get("ok"):
            raise RuntimeError(f"{self.name}: offer refused: {ack}")
        self._tap(receivers, ack["mids"])
        await pc.setRemoteDescription(RTCSessionDescription(**ack["answer"]))

    def _watch(self, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._lost(pc)

    def _lost(self, what: object) -> None:
        """The current connection or socket went away without the schedule asking."""
        if self.closing or self.lock.locked() or what not in (self.pc, self.sio):
            return
        asyncio.get_running_loop().create_task(self._recover(time.time()))

    async def _recover(self, failed: float) -> None:
        async with self.lock:
            if self.closing:
                return
            for attempt in range(10):
                await self.drop()
                try:
                    await self.join()
                    break
                except Exception:  # the server or relay is too busy: try again
                    await asyncio.sleep(1 + attempt)
            self.unplanned.append((failed, time.time()))

    def _tap(self, receivers: list[Any], mids: dict[str, str]) -> None:
        for transceiver in receivers:
            source = mids[transceiver.mid or ""]
            heard = self.heard.get(source)
            if heard is None:
                heard = self.heard[source] = Heard(
                    self.lookups[source], self.epoch, len(self.packets)
                )
            tap_receiver(transceiver.receiver, heard.on_packet)

    def _on_room(self, snapshot: dict[str, Any]) -> None:
        self.snapshots += 1
        self.snapshot = snapshot
        self.recording = snapshot.get("recording") or {}

    async def call(self, event: str, payload: Any = None, timeout: float = 30) -> dict[str, Any]:
        assert self.sio is not None
        ack: dict[str, Any] = await self.sio.call(event, payload, timeout=timeout)
        return ack

    @property
    def connected(self) -> bool:
        return self.pc is not None and self.pc.connectionState == "connected"

    async def drop(self) -> None:
        """Gone as a phone that lost its network: the peer connection and the socket."""
        pc, self.pc = self.pc, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()
        if self.link is not None:
            await self.relay.call("close", name=self.link)
            self.link = None
        sio, self.sio = self.sio, None
        if sio is not None:
            with contextlib.suppress(Exception):
                await sio.disconnect()
            with contextlib.suppress(Exception):
                await sio.shutdown()

    async def close(self) -> None:
        self.closing = True
        await self.drop()


async def start_recording(seats: list[SoakSeat]) -> str:
    """Both participants consent; the facilitator starts; returns the recording id."""
    by_seat = {s.seat: s for s in seats}
    for seat in ("a", "b"):
        ack = await by_seat[seat].call("consent", CONSENT)
        if not ack.get("ok"):
            raise RuntimeError(f"{by_seat[seat].name}: consent refused: {ack}")
    deadline = time.monotonic() + 20
    while True:
        ack = await by_seat["facilitator"].call("recording:start")
        if ack.get("ok"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"recording did not start: {ack}")
        await asyncio.sleep(0.2)
    await poll(lambda: by_seat["facilitator"].recording.get("id"), 10, "the recording id")
    return str(by_seat["facilitator"].recording["id"])


async def poll(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value
