"""The media plane: one aiortc RTCPeerConnection per connected seat, forwarding each
seat's encoded Opus packets to the two other seats without decoding them.

Fixed three-seat topology: a seat's offer carries its microphone on the first audio
m-line and two receive-only m-lines, which the server fills with the other two seats'
voices; the answer's `mids` tells which is which. A seat joining, leaving or
reconnecting never makes the others renegotiate: their outgoing tracks simply go
quiet and resume. Subscribers (the recorder) see every packet as it arrives.

Knows nothing of Socket.IO; signaling calls `offer`, `seat_disconnected`,
`seat_replaced`, and reads `levels`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from storyroom.clock import steady
from storyroom.config import PORTS_PER_ROOM, Settings
from storyroom.errors import Busy, InvalidInput, UserError
from storyroom.media import sdp
from storyroom.media.aiortc_internals import (
    EncodedAudioTrack,
    IcePortRange,
    RtpAudioPacket,
    bind_ice_ports,
    check_internals,
    ice_host_addresses,
    restrict_host_addresses,
    tap_receiver,
)
from storyroom.media.metrics import LatencyHistogram
from storyroom.media.turn import seat_ice_servers
from storyroom.room.protocol import OfferIn
from storyroom.room.rooms import CloseReason, Room
from storyroom.seats import SEATS
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0
LEVEL_DECAY_S = 0.5  # a level older than this reads as silence


class PacketSubscriber(Protocol):
    def on_packet(self, room_id: str, seat: str, conn_id: str, packet: RtpAudioPacket) -> None: ...

    def on_seat_closed(
        self, room_id: str, seat: str, conn_id: str, reason: CloseReason
    ) -> None: ...


@dataclass(slots=True)
class SeatMedia:
    """One seat's peer connection. Owner: RoomMedia."""

    seat: str
    conn_id: str
    pc: RTCPeerConnection
    mic: RTCRtpTransceiver
    outgoing: dict[str, EncodedAudioTrack]
    mids: dict[str, str]
    level: float = 0.0
    level_at: float = 0.0
    packets: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    grace_task: asyncio.Task[None] | None = None
    closed: bool = False


class RoomMedia:
    """The peer connections of one room. Owner: MediaPlane."""

    def __init__(self, plane: MediaPlane, room_id: str) -> None:
        self.plane = plane
        self.room_id = room_id
        self.seats: dict[str, SeatMedia] = {}
        self.negotiating: set[str] = set()

    def forward(self, source: str, conn_id: str, packet: RtpAudioPacket) -> None:
        """Runs on the loop for each received packet: no decoding, no queueing here."""
        seat_media = self.seats.get(source)
        if seat_media is None or seat_media.conn_id != conn_id or seat_media.closed:
            return
        seat_media.packets += 1
        seat_media.level = _level(packet)
        seat_media.level_at = packet.arrival
        for listener, target in self.seats.items():
            # Not before the listener's connection is up: what would wait for it is
            # stale by then, and would reach it as a late burst after every (re)join.
            if (
                listener != source
                and not target.closed
                and target.pc.connectionState == "connected"
            ):
                target.outgoing[source].push(packet)
        for subscriber in self.plane.subscribers:
            subscriber.on_packet(self.room_id, source, conn_id, packet)

    async def close_seat(self, seat: str, reason: CloseReason, conn_id: str | None = None) -> None:
        """Idempotent: close `seat`'s peer connection (only if it is `conn_id`'s, when given)."""
        seat_media = self.seats.get(seat)
        if seat_media is None or (conn_id is not None and seat_media.conn_id != conn_id):
            return
        del self.seats[seat]
        await _close_seat_media(seat_media, reason, self.plane, self.room_id)


async def _close_seat_media(
    seat_media: SeatMedia, reason: CloseReason, plane: MediaPlane, room_id: str
) -> None:
    if seat_media.closed:
        return
    seat_media.closed = True
    task, seat_media.grace_task = seat_media.grace_task, None
    await cancel_and_wait(task)  # unless it is that task closing its seat
    for subscriber in plane.subscribers:
        subscriber.on_seat_closed(room_id, seat_media.seat, seat_media.conn_id, reason)
    for track in seat_media.outgoing.values():
        track.stop()
    await seat_media.pc.close()
    log.info("room %s seat %s: peer connection closed (%s)", room_id, seat_media.seat, reason.value)


def _level(packet: RtpAudioPacket) -> float:
    """0..1 from the RTP audio-level extension (-dBov); else a cheap size proxy."""
    if packet.audio_level is not None:
        dbov = -float(packet.audio_level)
        return max(0.0, min(1.0, (dbov + 60.0) / 60.0))
    # Opus at speech bitrates: comfort noise / DTX packets are tiny, voice is larger.
    return max(0.0, min(1.0, (len(packet.payload) - 10) / 150))


class MediaPlane:
    """Owner of every room's peer connections (app-wide, in cleanup_ctx)."""

    def __init__(self, settings: Settings, subscribers: Sequence[PacketSubscriber]) -> None:
        check_internals()
        if settings.ice_host_addresses:
            restrict_host_addresses(settings.ice_host_addresses)
        ports = IcePortRange(*settings.ice_port_range) if settings.ice_port_range else None
        bind_ice_ports(ports)
        if ports is not None:
            addresses = max(1, len(ice_host_addresses()))
            log.info(
                "ICE host candidates on UDP %d-%d: room for %d rooms on %d address(es)%s",
                ports.first,
                ports.last,
                ports.size // (PORTS_PER_ROOM * addresses),
                addresses,
                f", announced as {settings.ice_public_address}"
                if settings.ice_public_address
                else "",
            )
        self.settings = settings
        self.rooms: dict[str, RoomMedia] = {}
        self.subscribers = tuple(subscribers)
        self.latency = LatencyHistogram()
        """Every forwarded packet's time in the server (owner: this plane)."""
        self._stats_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stats_task = asyncio.create_task(self._stats_loop(), name="media-stats")

    async def close(self) -> None:
        task, self._stats_task = self._stats_task, None
        await cancel_and_wait(task)
        bind_ice_ports(None)
        for room_media in list(self.rooms.values()):
            for seat in list(room_media.seats):
                await room_media.close_seat(seat, CloseReason.SERVER_SHUTDOWN)
        self.rooms.clear()

    def peer_connections(self) -> int:
        return sum(len(r.seats) for r in self.rooms.values())

    def metrics(self) -> dict[str, Any]:
        """Forwarding latency and, per live seat, what it sent us and what waits for it."""
        return {
            "peer_connections": self.peer_connections(),
            "forward_latency": self.latency.to_json(),
            "rooms": {
                room_id: {
                    seat: {
                        "conn_id": m.conn_id,
                        "packets": m.packets,
                        "loss": m.stats.get("loss", 0.0),
                        "jitter_ms": m.stats.get("jitter_ms", 0.0),
                        "outgoing": {
                            source: {
                                "queued": track.queued,
                                "dropped": track.dropped,
                                "late": track.dropped_late,
                            }
                            for source, track in m.outgoing.items()
                        },
                    }
                    for seat, m in room_media.seats.items()
                }
                for room_id, room_media in self.rooms.items()
            },
        }

    def _check_capacity(self, room_id: str) -> None:
        """`Busy` (`server_full`) for a room that would go over `max_rooms` live rooms."""
        limit = self.settings.max_rooms
        live = [r for r, media in self.rooms.items() if media.seats or media.negotiating]
        if limit and room_id not in live and len(live) >= limit:
            raise Busy(
                "The server is at its limit of rooms with audio. Please try again shortly.",
                code="server_full",
            )

    def _room(self, room_id: str) -> RoomMedia:
        room_media = self.rooms.get(room_id)
        if room_media is None:
            room_media = self.rooms[room_id] = RoomMedia(self, room_id)
        return room_media

    def ice_servers(self, session_id: str, seat: str) -> list[dict[str, Any]]:
        """What `seat` gives its RTCPeerConnection: STUN/TURN servers, its own TURN
        credentials included (never shown to another seat)."""
        return seat_ice_servers(self.settings, session_id, seat)

    # -- signaling's interface ---------------------------------------------------------

    async def offer(self, room: Room, seat: str, conn_id: str, offer: OfferIn) -> dict[str, Any]:
        """Answer a seat's offer with a fresh peer connection that replaces its old one."""
        try:
            sdp.check_offer(offer.sdp)
        except sdp.SdpError as exc:
            raise InvalidInput(exc.message, code=exc.code) from None
        self._check_capacity(room.id)
        room_media = self._room(room.id)
        if seat in room_media.negotiating:
            raise Busy("an offer from this seat is already being answered", code="offer_in_flight")
        room_media.negotiating.add(seat)
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[
                    RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                    for s in self.settings.ice_servers
                ]
            )
        )
        try:
            seat_media = await self._negotiate(room_media, seat, conn_id, pc, offer)
        except BaseException:
            await pc.close()
            raise
        finally:
            room_media.negotiating.discard(seat)
        previous = room_media.seats.get(seat)
        room_media.seats[seat] = seat_media
        if previous is not None:
            await _close_seat_media(previous, CloseReason.REPLACED, self, room.id)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await room_media.close_seat(seat, CloseReason.CLIENT_LEFT, conn_id)

        assert pc.localDescription is not None
        answer = sdp.archival_opus_answer(
            pc.localDescription.sdp, self.settings.opus_max_average_bitrate
        )
        if self.settings.ice_public_address:
            answer = sdp.announce_host_candidates(answer, self.settings.ice_public_address)
        return {"answer": {"sdp": answer, "type": "answer"}, "mids": seat_media.mids}

    async def _negotiate(
        self, room_media: RoomMedia, seat: str, conn_id: str, pc: RTCPeerConnection, offer: OfferIn
    ) -> SeatMedia:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:
            log.info("seat %s offer refused by aiortc: %s", seat, exc)
            raise InvalidInput("the audio offer could not be read", code="sdp_invalid") from None
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if len(audio) != 3:
            raise InvalidInput(
                "the offer must have three audio lines: your microphone and the two other voices",
                code="sdp_invalid",
            )
        mic, *receive = audio
        remote_directions = _offered_directions(offer.sdp)
        if remote_directions[0] not in ("sendonly", "sendrecv"):
            raise InvalidInput("the first audio line must send your microphone", code="sdp_invalid")
        if any(d not in ("recvonly", "sendrecv") for d in remote_directions[1:3]):
            raise InvalidInput("the second and third audio lines must receive", code="sdp_invalid")
        mic.direction = "recvonly"
        others = [s for s in SEATS if s != seat]
        outgoing: dict[str, EncodedAudioTrack] = {}
        mids: dict[str, str] = {}
        for transceiver, other in zip(receive, others, strict=True):
            track = EncodedAudioTrack(on_sent=self.latency.add)
            transceiver.sender.replaceTrack(track)  # keeps aiortc's sender task idle
            track.send_directly(transceiver)
            transceiver.direction = "sendonly"
            outgoing[other] = track
        seat_media = SeatMedia(seat, conn_id, pc, mic, outgoing, mids)
        tap_receiver(mic.receiver, lambda packet: room_media.forward(seat, conn_id, packet))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        local = pc.localDescription.sdp if pc.localDescription is not None else ""
        if self.settings.ice_port_range and " typ host" not in local:
            raise Busy(
                "The server has no free port for audio right now. Please try again shortly.",
                code="no_media_ports",
            )
        for transceiver, other in zip(receive, others, strict=True):
            if transceiver.mid is None:
                raise UserError("the offer has no mid for an audio line", code="sdp_invalid")
            mids[transceiver.mid] = other
        return seat_media

    async def seat_disconnected(self, room: Room, seat: str, conn_id: str) -> None:
        """Socket.IO went away: keep the audio for a grace period, then close it."""
        room_media = self.rooms.get(room.id)
        seat_media = room_media.seats.get(seat) if room_media else None
        if room_media is None or seat_media is None or seat_media.conn_id != conn_id:
            return

        async def close_after_grace() -> None:
            await asyncio.sleep(self.settings.reconnect_grace_s)
            await room_media.close_seat(seat, CloseReason.GRACE_EXPIRED, conn_id)

        if seat_media.grace_task is None:
            seat_media.grace_task = asyncio.create_task(close_after_grace(), name=f"grace-{seat}")

    async def seat_replaced(self, room: Room, seat: str, old_conn_id: str) -> None:
        room_media = self.rooms.get(room.id)
        if room_media is not None:
            await room_media.close_seat(seat, CloseReason.REPLACED, old_conn_id)

    # -- levels and stats for the facilitator ---------------------------------------------

    def levels(self, room_id: str) -> dict[str, Any] | None:
        room_media = self.rooms.get(room_id)
        if room_media is None or not room_media.seats:
            return None
        now = steady()  # packet arrivals are on the steady clock
        return {
            "at": time.time(),
            "levels": {
                seat: (m.level if now - m.level_at < LEVEL_DECAY_S else 0.0)
                for seat, m in room_media.seats.items()
            },
            "stats": {seat: m.stats for seat, m in room_media.seats.items()},
        }

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            for room_media in list(self.rooms.values()):
                for seat_media in list(room_media.seats.values()):
                    try:
                        seat_media.stats = await _seat_stats(seat_media)
                    except Exception:
                        # a peer connection closing under us: the seat keeps its last
                        # stats (shown to the facilitator only) and the others are read
                        log.warning(
                            "room %s seat %s: link stats not read",
                            room_media.room_id,
                            seat_media.seat,
                            exc_info=True,
                        )


async def _seat_stats(seat_media: SeatMedia) -> dict[str, Any]:
    """Loss and jitter of what the seat sends us; round trip from what we send it."""
    out: dict[str, Any] = {
        "loss": 0.0,
        "jitter_ms": 0.0,
        "rtt_ms": None,
        "packets": seat_media.packets,
    }
    report = await seat_media.mic.receiver.getStats()
    for stat in report.values():
        if stat.type == "inbound-rtp":
            received = getattr(stat, "packetsReceived", 0) or 0
            lost = max(0, getattr(stat, "packetsLost", 0) or 0)
            out["loss"] = round(lost / (received + lost), 4) if received + lost else 0.0
            out["jitter_ms"] = round(float(getattr(stat, "jitter", 0) or 0) / 48.0, 2)
    for transceiver in seat_media.pc.getTransceivers():
        if transceiver is seat_media.mic:
            continue
        sender_report = await transceiver.sender.getStats()
        for stat in sender_report.values():
            if (
                stat.type == "remote-inbound-rtp"
                and getattr(stat, "roundTripTime", None) is not None
            ):
                out["rtt_ms"] = round(float(stat.roundTripTime) * 1000, 1)
        if out["rtt_ms"] is not None:
            break
    return out


def _offered_directions(offer_sdp: str) -> list[str]:
    """Directions of the offer's audio m-lines, in order (sendrecv when unstated)."""
    directions: list[str] = []
    in_audio = False
    for line in offer_sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
            if in_audio:
                directions.append("sendrecv")
        elif in_audio and line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive"):
            directions[-1] = line[2:]
    return directions + ["inactive"] * (3 - len(directions))
