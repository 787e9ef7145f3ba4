"""The one place that reaches into aiortc's private internals.

aiortc (pinned to 1.16.x) decodes everything it receives and offers no public way
to read received RTP packets. storyroom forwards and records the encoded Opus
packets instead, so this module:

- replaces one receiver's RTP handler (:func:`tap_receiver`) so each audio
  packet goes to a callback and never to aiortc's jitter buffer or decoder, taken
  straight from the ICE connection's datagram callback once the SRTP keys are set (no
  hop through aioice's queue and the DTLS transport's task per packet),
- supplies :class:`EncodedAudioTrack`, which an ``RTCRtpSender`` sends without
  re-encoding (aiortc packs non-``Frame`` data it gets from a track as-is), or which,
  given the transceiver (:meth:`EncodedAudioTrack.send_directly`), writes each packet's
  RTP header itself and hands it to SRTP and the ICE socket at once: no aiortc packet
  objects and no hop through a queue and the sender's task per packet,
- and checks (:func:`check_internals`) that everything relied on is still there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import fractions
import inspect
import logging
import random
import struct
import types
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import av
import pylibsrtp
from aioice import ice as aioice_ice
from aiortc import (
    RTCRtpReceiver,
    RTCRtpTransceiver,
    clock,
    codecs,
    rtcdtlstransport,
    rtcicetransport,
    rtcrtpreceiver,
    rtcrtpsender,
    rtcrtptransceiver,
)
from aiortc import rtp as aiortc_rtp
from aiortc.codecs import opus
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from storyroom.clock import steady

if TYPE_CHECKING:
    from aiortc.rtp import RtpPacket
from storyroom.recording.oggopus import OPUS_SAMPLE_RATE, opus_packet_samples

__all__ = [
    "EncodedAudioTrack",
    "IcePortRange",
    "ReceiverTap",
    "RtpAudioPacket",
    "bind_ice_ports",
    "check_ice_binding",
    "check_internals",
    "tap_receiver",
]

logger = logging.getLogger(__name__)

OPUS_TIME_BASE: Final = fractions.Fraction(1, OPUS_SAMPLE_RATE)

# Name-mangled private attributes of RTCRtpReceiver that the tap reads or feeds.
_CODECS: Final = "_RTCRtpReceiver__codecs"
_REMOTE_STREAMS: Final = "_RTCRtpReceiver__remote_streams"
_ACTIVE_SSRC: Final = "_RTCRtpReceiver__active_ssrc"
_DECODER_THREAD: Final = "_RTCRtpReceiver__decoder_thread"
_DECODER_QUEUE: Final = "_RTCRtpReceiver__decoder_queue"
# ... and of RTCRtpSender, which its RTCP sender reports and getStats() read.
_EXTENSIONS_MAP: Final = "_RTCRtpSender__rtp_header_extensions_map"
_SENT_PACKETS: Final = "_RTCRtpSender__packet_count"
_SENT_OCTETS: Final = "_RTCRtpSender__octet_count"
_SENT_NTP: Final = "_RTCRtpSender__ntp_timestamp"
_SENT_RTP: Final = "_RTCRtpSender__rtp_timestamp"
# ... and of RTCDtlsTransport, whose transport stats count what it received.
_DTLS_RX_BYTES: Final = "_RTCDtlsTransport__rx_bytes"
_DTLS_RX_PACKETS: Final = "_RTCDtlsTransport__rx_packets"


@dataclass(frozen=True, slots=True)
class RtpAudioPacket:
    """One received audio RTP packet, as it arrived."""

    payload: bytes
    """The Opus payload, untouched."""
    sequence_number: int
    """16-bit RTP sequence number."""
    timestamp: int
    """32-bit RTP timestamp (48 kHz clock for Opus)."""
    ssrc: int
    arrival: float
    """``clock.steady()`` when the packet was handled (never jumps with the wall clock)."""
    audio_level: int | None
    """0..127 (-dBov) from the ssrc-audio-level header extension, ``None`` if absent."""
    marker: bool


def check_internals() -> None:
    """Fail loudly if aiortc no longer has the private names this module uses.

    Raises :class:`RuntimeError` naming the first missing attribute. Call it at
    server start-up; a test calls it too.
    """

    def require(owner: object, name: str, what: str) -> object:
        if not hasattr(owner, name):
            raise RuntimeError(
                f"aiortc internals changed: {what} has no attribute {name!r}; "
                "storyroom.media.aiortc_internals must be updated for this aiortc version"
            )
        return getattr(owner, name)

    def require_uses(function: object, name: str, what: str) -> None:
        code = getattr(function, "__code__", None)
        if code is None or name not in code.co_names:
            raise RuntimeError(
                f"aiortc internals changed: {what} no longer uses {name!r}; "
                "storyroom.media.aiortc_internals must be updated for this aiortc version"
            )

    receiver_cls = rtcrtpreceiver.RTCRtpReceiver
    handler = require(receiver_cls, "_handle_rtp_packet", "RTCRtpReceiver")
    if not inspect.iscoroutinefunction(handler):
        raise RuntimeError(
            "aiortc internals changed: RTCRtpReceiver._handle_rtp_packet is no longer "
            "a coroutine function"
        )
    # The DTLS transport must still deliver RTP through that (replaceable) method.
    require_uses(
        require(rtcdtlstransport.RTCDtlsTransport, "_handle_rtp_data", "RTCDtlsTransport"),
        "_handle_rtp_packet",
        "RTCDtlsTransport._handle_rtp_data",
    )
    # The attributes the tap feeds must still be created and still be read by
    # the RTCP receiver reports, getStats() and getSynchronizationSources().
    for name in (
        _CODECS,
        _REMOTE_STREAMS,
        _ACTIVE_SSRC,
        _DECODER_THREAD,
        _DECODER_QUEUE,
        "_enabled",
    ):
        require_uses(receiver_cls.__init__, name, "RTCRtpReceiver.__init__")
    for method, name in (
        ("_run_rtcp", _REMOTE_STREAMS),
        ("getStats", _REMOTE_STREAMS),
        ("getSynchronizationSources", _ACTIVE_SSRC),
    ):
        require_uses(
            require(receiver_cls, method, "RTCRtpReceiver"), name, f"RTCRtpReceiver.{method}"
        )
    for name in (_DECODER_THREAD, _DECODER_QUEUE):
        require_uses(receiver_cls.receive, name, "RTCRtpReceiver.receive")
    require_uses(
        require(receiver_cls, "_RTCRtpReceiver__stop_decoder", "RTCRtpReceiver"),
        _DECODER_THREAD,
        "RTCRtpReceiver.__stop_decoder",
    )
    stream_statistics = require(rtcrtpreceiver, "StreamStatistics", "aiortc.rtcrtpreceiver")
    require(stream_statistics, "add", "StreamStatistics")
    require(codecs, "is_rtx", "aiortc.codecs")
    extensions = require(aiortc_rtp, "HeaderExtensions", "aiortc.rtp")
    if not dataclasses.is_dataclass(extensions) or "audio_level" not in {
        field.name for field in dataclasses.fields(extensions)
    }:
        raise RuntimeError(
            "aiortc internals changed: aiortc.rtp.HeaderExtensions has no attribute 'audio_level'"
        )
    # The sender must still hand non-Frame data from the track to encoder.pack().
    sender_cls = rtcrtpsender.RTCRtpSender
    require_uses(
        require(sender_cls, "_next_encoded_frame", "RTCRtpSender"),
        "pack",
        "RTCRtpSender._next_encoded_frame",
    )
    pack = require(opus.OpusEncoder, "pack", "OpusEncoder")
    if getattr(pack, "__isabstractmethod__", False):
        raise RuntimeError(
            "aiortc internals changed: OpusEncoder has no attribute 'pack' of its own"
        )
    for name in ("pts", "time_base"):
        require_uses(pack, name, "OpusEncoder.pack")
    # What _DirectSender reads and feeds, on the way from a sender to the socket.
    for name in ("_ssrc", _EXTENSIONS_MAP, _SENT_PACKETS, _SENT_OCTETS, _SENT_NTP, _SENT_RTP):
        require_uses(sender_cls.__init__, name, "RTCRtpSender.__init__")
    for name in (_SENT_PACKETS, _SENT_OCTETS, _SENT_NTP, _SENT_RTP):
        require_uses(sender_cls._run_rtcp, name, "RTCRtpSender._run_rtcp")
    require_uses(rtcrtptransceiver.RTCRtpTransceiver.__init__, "_codecs", "RTCRtpTransceiver")
    require_uses(rtcdtlstransport.RTCDtlsTransport._send_rtp, "_tx_srtp", "_send_rtp")
    require_uses(
        rtcdtlstransport.RTCDtlsTransport._set_state, "_state", "RTCDtlsTransport._set_state"
    )
    require_uses(
        getattr(
            require(rtcdtlstransport.RTCDtlsTransport, "state", "RTCDtlsTransport"), "fget", None
        ),
        "_state",
        "RTCDtlsTransport.state",
    )
    require(require(rtcdtlstransport, "State", "aiortc.rtcdtlstransport"), "CONNECTED", "State")
    require_uses(rtcdtlstransport.RTCDtlsTransport._send_rtp, "protect", "_send_rtp")
    require_uses(rtcicetransport.RTCIceGatherer.__init__, "_connection", "RTCIceGatherer")
    # What _receive_directly reads and feeds, on the way from the socket to the tap.
    dtls_cls = rtcdtlstransport.RTCDtlsTransport
    for name in (
        _DTLS_RX_BYTES,
        _DTLS_RX_PACKETS,
        "_rx_srtp",
        "_rtp_router",
        "_rtp_header_extensions_map",
    ):
        require_uses(dtls_cls.__init__, name, "RTCDtlsTransport.__init__")
    for name in (_DTLS_RX_BYTES, _DTLS_RX_PACKETS, "_rx_srtp", "unprotect", "_handle_rtp_data"):
        require_uses(dtls_cls._recv_next, name, "RTCDtlsTransport._recv_next")
    require_uses(dtls_cls._get_stats, _DTLS_RX_PACKETS, "RTCDtlsTransport._get_stats")
    router_cls = require(rtcdtlstransport, "RtpRouter", "aiortc.rtcdtlstransport")
    require_uses(require(router_cls, "route_rtp", "RtpRouter"), "ssrc_table", "RtpRouter.route_rtp")
    require_uses(rtcicetransport.RTCIceTransport.__init__, "_connection", "RTCIceTransport")
    require_uses(aioice_ice.Connection.__init__, "_queue", "aioice Connection.__init__")
    require_uses(aioice_ice.Connection.recvfrom, "_queue", "aioice Connection.recvfrom")
    require_uses(
        require(aioice_ice.Connection, "data_received", "aioice Connection"),
        "_queue",
        "aioice Connection.data_received",
    )
    for name in ("receiver", "data_received", "parse_message"):
        require_uses(
            aioice_ice.StunProtocol.datagram_received, name, "aioice StunProtocol.datagram_received"
        )
    require_uses(aioice_ice.Connection.sendto, "_nominated", "aioice Connection.sendto")
    require_uses(aioice_ice.Connection.sendto, "send_data", "aioice Connection.sendto")
    for name in ("transport", "sendto"):
        require_uses(aioice_ice.StunProtocol.send_data, name, "aioice StunProtocol.send_data")


@dataclass(slots=True)
class ReceiverTap:
    """What :func:`tap_receiver` did with one receiver's packets."""

    packets: int = 0
    """Audio packets handed to the callback."""
    direct: int = 0
    """Of those, the ones taken straight from the socket's callback (no queue hop)."""


_SSRC_AT: Final = struct.Struct("!I")
_MARK_ACTIVE_EVERY: Final = 0.1
"""Seconds between updates of the receiver's active-SSRC time (read with a 10 s cutoff)."""


def tap_receiver(
    receiver: RTCRtpReceiver, on_packet: Callable[[RtpAudioPacket], None]
) -> ReceiverTap:
    """Hand every audio RTP packet ``receiver`` gets to ``on_packet`` instead of
    aiortc's jitter buffer and decoder.

    ``on_packet`` runs synchronously on the event loop for each packet, in arrival
    order. Packets still feed the per-SSRC statistics behind RTCP receiver reports
    and ``getStats()``; packets with a payload type that was not negotiated are
    dropped. Nothing is decoded, so ``receiver.track`` never yields a frame, and the
    decoder thread aiortc starts with the receiver is ended at once (it would idle for
    the connection's life). Once the SRTP keys are set and the packet's SSRC is routed
    to this receiver, each packet is taken from the ICE connection's datagram
    callback at once (:func:`_receive_directly`) instead of through aioice's queue and
    the DTLS transport's task. Call it before the receiver starts.
    """
    try:
        negotiated = getattr(receiver, _CODECS)
        streams = getattr(receiver, _REMOTE_STREAMS)
        active_ssrc = getattr(receiver, _ACTIVE_SSRC)
        stream_statistics = rtcrtpreceiver.StreamStatistics
        is_rtx = codecs.is_rtx
    except AttributeError as exc:
        raise RuntimeError(f"aiortc internals changed: {exc}") from exc
    tap = ReceiverTap()
    marked = [0.0]

    def handle(packet: RtpPacket) -> None:
        if not receiver._enabled:
            return
        arrival = steady()
        if arrival - marked[0] >= _MARK_ACTIVE_EVERY or packet.ssrc not in active_ssrc:
            marked[0] = arrival
            active_ssrc[packet.ssrc] = clock.current_datetime()
        codec = negotiated.get(packet.payload_type)
        if codec is None or is_rtx(codec):
            return
        statistics = streams.get(packet.ssrc)
        if statistics is None:
            statistics = streams[packet.ssrc] = stream_statistics(codec.clockRate)
        statistics.add(packet)
        level = packet.extensions.audio_level
        audio = RtpAudioPacket(
            payload=packet.payload,
            sequence_number=packet.sequence_number,
            timestamp=packet.timestamp,
            ssrc=packet.ssrc,
            arrival=arrival,
            audio_level=None if level is None else level[1],
            marker=bool(packet.marker),
        )
        tap.packets += 1
        try:
            on_packet(audio)
        except Exception:
            # An exception here would reach aiortc's DTLS receive loop (or the socket's
            # callback) and end the connection; one faulty subscriber must not cut the
            # seat off.
            logger.exception("RTP packet callback failed (ssrc %d)", packet.ssrc)

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        handle(packet)

    # The instance attributes shadow the class methods for this receiver only.
    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receive = receiver.receive

    async def receive_without_decoder(parameters: Any) -> None:
        await receive(parameters)
        if getattr(receiver, _DECODER_THREAD) is not None:
            # The thread ends on None (and ends the unread track); stop() and a
            # disconnect then have no thread to stop.
            getattr(receiver, _DECODER_QUEUE).put(None)
            setattr(receiver, _DECODER_THREAD, None)
            _receive_directly(receiver, handle, tap)

    receiver.receive = receive_without_decoder  # type: ignore[method-assign]
    return tap


def _receive_directly(
    receiver: RTCRtpReceiver, handle: Callable[[RtpPacket], None], tap: ReceiverTap
) -> None:
    """Take `receiver`'s SRTP packets from the ICE connection's datagram callback.

    aioice puts every datagram in a queue that the DTLS transport's task reads one at a
    time: a future, a task wake-up and a loop turn per packet. Here, in the callback, a
    packet that is SRTP (not SRTCP), arrives while that queue is empty (so nothing older
    waits in it) and carries an SSRC the transport already routes to `receiver` is
    counted as the transport would, unprotected, parsed and handed to `handle`; all
    else (DTLS, RTCP, the first packets before the SSRC is learnt from the mid) takes
    aioice's queue as before. The socket protocol of the nominated pair then skips its
    STUN parse for RTP/RTCP datagrams (their first two bits, 10, are never STUN's 00).
    """
    dtls = receiver.transport
    connection = dtls.transport._connection
    queue = connection._queue
    routes = dtls._rtp_router.ssrc_table
    extensions_map = dtls._rtp_header_extensions_map
    queued = connection.data_received
    counts = dtls.__dict__  # the transport's own attributes, read by its stats

    def data_received(data: bytes, component: int) -> None:
        srtp = dtls._rx_srtp
        if (
            srtp is None
            or len(data) < 12
            or not 127 < data[0] < 192
            or 191 < data[1] < 209  # RTCP (aiortc.rtp.is_rtcp)
            or routes.get(_SSRC_AT.unpack_from(data, 8)[0]) is not receiver
            or not queue.empty()
        ):
            queued(data, component)
            return
        counts[_DTLS_RX_BYTES] += len(data)
        counts[_DTLS_RX_PACKETS] += 1
        try:
            packet = aiortc_rtp.RtpPacket.parse(srtp.unprotect(data), extensions_map)
        except (pylibsrtp.Error, ValueError):
            return  # as aiortc's transport does: a bad or replayed packet is dropped
        tap.direct += 1
        if tap.direct == 1:
            _skip_stun_parse(connection, component)
        handle(packet)

    connection.data_received = data_received  # type: ignore[method-assign]


def _skip_stun_parse(connection: aioice_ice.Connection, component: int) -> None:
    pair = connection._nominated.get(component)
    protocol = pair.protocol if pair is not None else None
    if not isinstance(protocol, aioice_ice.StunProtocol) or (
        type(protocol).datagram_received is not aioice_ice.StunProtocol.datagram_received
    ):
        return  # TURN and other protocols keep their own handling
    parse_first = protocol.datagram_received

    def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data and 127 < data[0] < 192:
            protocol.receiver.data_received(data, component)
        else:
            parse_first(data, addr)

    protocol.datagram_received = datagram_received  # type: ignore[method-assign]


_RTP_HEADER: Final = struct.Struct("!BBHII")
_DTLS_CONNECTED: Final = rtcdtlstransport.State.CONNECTED
_SYNC_EVERY: Final = 10
"""Packets between updates of the (NTP, RTP) time pair the sender's reports carry."""


class _DirectSender:
    """Sends encoded packets as one transceiver's RTP stream, as aiortc's sender would
    (its SSRC, payload type and mid extension; its packet and octet counts and
    time pair for RTCP sender reports), from the caller: write the 12-byte header and
    the extensions, SRTP-protect once, `sendto` on the nominated ICE pair (host or
    TURN: aioice's StunProtocol.send_data does just that). Audio is not retransmitted
    (aiortc negotiates no NACK for audio), so no history is kept."""

    def __init__(self, transceiver: RTCRtpTransceiver) -> None:
        self._transceiver = transceiver
        self._sender = transceiver.sender
        self._sequence = random.randrange(1 << 16)
        self._origin = random.randrange(1 << 32)
        self._first_byte = 0x80
        self._payload_type = -1
        self._extensions = b""
        self._unsynced = _SYNC_EVERY
        self._route: _Route | None = None

    def _prepare(self) -> bool:
        """Read the negotiated payload type and header extensions once the sender runs."""
        codecs_ = getattr(self._transceiver, "_codecs", None)
        extensions_map = getattr(self._sender, _EXTENSIONS_MAP)
        if not codecs_:
            return False
        template = aiortc_rtp.RtpPacket(payload_type=codecs_[0].payloadType)
        template.extensions.mid = self._transceiver.mid
        header = template.serialize(extensions_map)
        self._extensions = header[_RTP_HEADER.size :]
        self._first_byte = header[0]
        self._payload_type = codecs_[0].payloadType
        return True

    def _connect(self) -> _Route | None:
        """The way out once DTLS and ICE are up (then fixed for the connection's
        life: aiortc renegotiates no transport, aioice nominates a pair once)."""
        dtls = self._sender.transport
        srtp = dtls._tx_srtp
        if srtp is None or dtls._state is not _DTLS_CONNECTED:
            return None
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or (self._payload_type < 0 and not self._prepare()):
            return None
        self._route = _Route(dtls, srtp.protect, pair.protocol.transport.sendto, pair.remote_addr)
        return self._route

    def send(self, payload: bytes, pts: int, marker: bool) -> bool:
        """Send one packet whose timestamp is `pts` on this stream's timeline; False
        when the connection is not (or no longer) up, nothing sent."""
        route = self._route
        if route is None:
            route = self._connect()
            if route is None:
                return False
        elif route.dtls._state is not _DTLS_CONNECTED:
            return False
        sender = self._sender
        timestamp = (self._origin + pts) & 0xFFFFFFFF
        header = _RTP_HEADER.pack(
            self._first_byte,
            self._payload_type | (0x80 if marker else 0),
            self._sequence,
            timestamp,
            sender._ssrc,
        )
        route.sendto(route.protect(header + self._extensions + payload), route.remote_addr)
        self._sequence = (self._sequence + 1) & 0xFFFF
        counts = sender.__dict__  # the sender's own attributes, read by its RTCP reports
        counts[_SENT_PACKETS] += 1
        counts[_SENT_OCTETS] += len(payload)
        self._unsynced += 1
        if self._unsynced >= _SYNC_EVERY:
            self._unsynced = 0
            counts[_SENT_NTP] = clock.current_ntp_time()
            counts[_SENT_RTP] = timestamp
        return True


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a direct sender's packets go: its connection's DTLS transport (whose state
    says whether it is still up), SRTP protect and the nominated pair's socket."""

    dtls: rtcdtlstransport.RTCDtlsTransport
    protect: Callable[[bytes], bytes]
    sendto: Callable[[bytes, Any], None]
    remote_addr: tuple[str, int]


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class EncodedAudioTrack(MediaStreamTrack):
    """An outgoing audio track that carries already-encoded Opus packets.

    Give it to ``RTCPeerConnection.addTrack`` or ``RTCRtpSender.replaceTrack``;
    aiortc then sends each packet's bytes without re-encoding. :meth:`push` feeds
    it from the event loop. The outgoing timeline is continuous even when the
    source changes: within one source, timestamp differences are kept exactly
    (so a lost packet stays a gap); on a new SSRC or a timestamp jump the
    timeline continues from the last packet by the wall-clock time between them.
    """

    kind = "audio"

    MAX_QUEUED: Final = 10
    """Packets waiting beyond this drop the oldest: late audio is worse than lost."""
    REORDER_WINDOW: Final = OPUS_SAMPLE_RATE
    """A timestamp this far (1 s) behind the last one is a late packet, dropped;
    further back it is a new timeline."""
    JUMP_TOLERANCE: Final = 2 * OPUS_SAMPLE_RATE
    """A timestamp running this far (2 s) ahead of the wall clock is a new timeline."""

    def __init__(self, on_sent: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self._queue: deque[tuple[av.Packet, float]] = deque()
        self._on_sent = on_sent
        """Called with each packet's time in the server (arrival to hand-off), seconds."""
        self._ready = asyncio.Event()
        self._ssrc: int | None = None
        self._source_timestamp = 0
        self._arrival = 0.0
        self._pts = 0
        self._duration = 0
        self.dropped = 0
        """Packets discarded because the queue was full or they came late."""
        self.dropped_late = 0
        """Of those, the late or duplicate ones."""
        self._direct: _DirectSender | None = None

    def send_directly(self, transceiver: RTCRtpTransceiver) -> None:
        """From now on :meth:`push` sends each packet itself as `transceiver`'s RTP
        stream (this track must be its sender's track, which then stays idle), or drops
        it while the connection is not up; nothing is queued."""
        self._direct = _DirectSender(transceiver)

    @property
    def queued(self) -> int:
        """Packets waiting for :meth:`recv`."""
        return len(self._queue)

    def push(self, packet: RtpAudioPacket) -> None:
        """Queue ``packet`` for sending. Runs on the event loop; never blocks."""
        if self.readyState != "live" or not packet.payload:
            return
        pts = self._next_pts(packet)
        if pts is None:
            self.dropped += 1
            self.dropped_late += 1
            return
        if self._direct is not None:
            if not self._direct.send(packet.payload, pts, packet.marker):
                self.dropped += 1
            elif self._on_sent is not None:
                self._on_sent(steady() - packet.arrival)  # arrival is on the steady clock
            return
        outgoing = av.Packet(packet.payload)
        outgoing.pts = pts
        outgoing.time_base = OPUS_TIME_BASE
        self._queue.append((outgoing, packet.arrival))
        while len(self._queue) > self.MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
        self._ready.set()

    def _next_pts(self, packet: RtpAudioPacket) -> int | None:
        """Map the packet's RTP timestamp onto this track's timeline, or ``None``
        for a late or duplicate packet."""
        duration = opus_packet_samples(packet.payload) or 960
        if self._ssrc is None:
            pts = 0
        else:
            delta = _signed32(packet.timestamp - self._source_timestamp)
            elapsed = round((packet.arrival - self._arrival) * OPUS_SAMPLE_RATE)
            same_timeline = packet.ssrc == self._ssrc and (
                -self.REORDER_WINDOW < delta <= elapsed + self.JUMP_TOLERANCE
            )
            if same_timeline and delta <= 0:
                return None
            if same_timeline:
                pts = self._pts + delta
            else:
                pts = self._pts + max(self._duration, elapsed)
        self._ssrc = packet.ssrc
        self._source_timestamp = packet.timestamp
        self._arrival = packet.arrival
        self._pts = pts
        self._duration = duration
        return pts

    async def recv(self) -> av.Packet:
        """Return the next queued packet, waiting for one; raise
        :class:`MediaStreamError` once the track is stopped."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        outgoing, arrival = self._queue.popleft()
        if self._on_sent is not None:
            # aiortc's sender packs, encrypts and hands this to the socket without
            # yielding to the loop, so this is the moment it leaves for the transport.
            self._on_sent(steady() - arrival)  # arrival is on the steady clock
        return outgoing

    def stop(self) -> None:
        """End the track and wake a waiting :meth:`recv`."""
        super().stop()
        self._queue.clear()
        self._ready.set()


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Gather ICE host candidates only on `addresses` (process-wide).

    aioice gathers every interface's address but never loopback; an operator may
    want one interface, and tests and benchmarks need 127.0.0.1 alone. aioice looks
    `get_host_addresses` up at gathering time, so replacing it takes effect for
    every later peer connection.
    """
    chosen = list(addresses)
    if not hasattr(aioice_ice, "get_host_addresses"):
        raise RuntimeError("aioice internals changed: aioice.ice.get_host_addresses is gone")

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice_ice.get_host_addresses = host_addresses


class IcePortRange:
    """Binds the sockets of ICE host candidates to UDP ports in `first..last`.

    aioice binds each peer connection's host candidate to an ephemeral port, which no
    firewall rule or published container port can name. It binds through
    `asyncio.get_running_loop().create_datagram_endpoint(..., local_addr=(address, 0))`
    in `aioice.ice`; :func:`bind_ice_ports` gives that module a loop whose
    `create_datagram_endpoint` takes the next free port of the range instead. Ports
    in use (by another peer connection or another program) are skipped.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        self._next = first

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    async def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.DatagramProtocol],
        address: str,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        for _ in range(self.size):
            port = self._next
            self._next = self.first if port >= self.last else port + 1
            try:
                return await loop.create_datagram_endpoint(
                    factory,
                    local_addr=(address, port),
                    **kwargs,
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {self.first}-{self.last}")


class _RangeLoop:
    """The running loop, but host candidates' sockets come from an `IcePortRange`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: IcePortRange) -> None:
        self._loop = loop
        self._ports = ports

    def __getattr__(self, name: str) -> object:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(
        self,
        factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        if local_addr is not None and local_addr[1] == 0:
            return await self._ports.bind(self._loop, factory, local_addr[0], **kwargs)
        return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr, **kwargs)


class _IceAsyncio(types.ModuleType):
    """`asyncio` as aioice.ice sees it: itself, but for `get_running_loop`."""

    def __init__(self, ports: IcePortRange) -> None:
        super().__init__("asyncio")
        self._ports = ports

    def __getattr__(self, name: str) -> object:
        return getattr(asyncio, name)

    def get_running_loop(self) -> _RangeLoop:
        return _RangeLoop(asyncio.get_running_loop(), self._ports)


def check_ice_binding() -> None:
    """Fail loudly if aioice no longer binds host candidates the way `bind_ice_ports`
    redirects: through the module's `asyncio.get_running_loop()` and an ephemeral port."""
    method = getattr(aioice_ice.Connection, "get_component_candidates", None)
    source = inspect.getsource(method) if method is not None else ""
    if "asyncio.get_running_loop()" not in source or "local_addr=(address, 0)" not in source:
        raise RuntimeError(
            "aioice internals changed: Connection.get_component_candidates no longer binds "
            "host candidates with asyncio.get_running_loop().create_datagram_endpoint("
            "local_addr=(address, 0)); storyroom.media.aiortc_internals.bind_ice_ports "
            "must be updated for this aioice version"
        )


def bind_ice_ports(ports: IcePortRange | None) -> None:
    """Bind every later peer connection's host candidates in `ports` (process-wide);
    None: ephemeral ports again."""
    check_ice_binding()
    aioice_ice.asyncio = asyncio if ports is None else _IceAsyncio(ports)


def ice_host_addresses() -> list[str]:
    """The addresses aioice gathers host candidates on (after any restriction)."""
    return list(aioice_ice.get_host_addresses(use_ipv4=True, use_ipv6=True))
