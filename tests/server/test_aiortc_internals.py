"""The aiortc tap and encoded track, against real aiortc peer connections.

If these fail after an aiortc upgrade, storyroom.media.aiortc_internals needs updating.
"""

from __future__ import annotations

import asyncio
import fractions
import random
from collections.abc import Callable
from itertools import pairwise

import av
import numpy as np
import pytest
from aioice.ice import Connection
from aiortc import (
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    rtcdtlstransport,
    rtcrtpreceiver,
)
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError

from storyroom.media.aiortc_internals import (
    EncodedAudioTrack,
    ReceiverTap,
    RtpAudioPacket,
    check_internals,
    tap_receiver,
)
from storyroom.recording.oggopus import opus_packet_samples
from support.media import NO_ICE_SERVERS, ToneTrack, dominant_frequency
from support.ogg import FRAME, RATE, TONE_HZ
from support.polling import wait_for


def new_peer(peers: list[RTCPeerConnection]) -> RTCPeerConnection:
    peer = RTCPeerConnection(NO_ICE_SERVERS)
    peers.append(peer)
    return peer


async def negotiate(
    offerer: RTCPeerConnection,
    answerer: RTCPeerConnection,
    on_offer_applied: Callable[[], None] = lambda: None,
) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    on_offer_applied()
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


def test_check_internals_passes_on_the_installed_aiortc() -> None:
    check_internals()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (RTCRtpReceiver, "_handle_rtp_packet"),
        (RTCRtpReceiver, "_run_rtcp"),
        (rtcrtpreceiver, "StreamStatistics"),
        (RTCRtpSender, "_next_encoded_frame"),
        (OpusEncoder, "pack"),
        (Connection, "data_received"),
        (rtcdtlstransport.RtpRouter, "route_rtp"),
    ],
)
def test_check_internals_names_what_moved(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(RuntimeError, match=name):
        check_internals()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "through-aiortc-sender"])
async def test_tap_forward_and_decode_end_to_end(
    caplog: pytest.LogCaptureFixture, direct: bool
) -> None:
    """Seat -> server (tap) -> EncodedAudioTrack -> listener, which decodes the tone;
    the track sends either itself (`send_directly`) or through aiortc's sender task."""
    check_internals()
    peers: list[RTCPeerConnection] = []
    listener_frames: list[av.AudioFrame] = []
    reader: asyncio.Task[None] | None = None
    try:
        seat = new_peer(peers)
        server_in = new_peer(peers)
        server_out = new_peer(peers)
        listener = new_peer(peers)

        seat_sender = seat.addTrack(ToneTrack(TONE_HZ))
        relay = EncodedAudioTrack()
        tapped: list[RtpAudioPacket] = []
        taps: list[ReceiverTap] = []

        def on_packet(packet: RtpAudioPacket) -> None:
            tapped.append(packet)
            if len(tapped) == 1:
                raise RuntimeError("a faulty subscriber")
            relay.push(packet)

        def tap() -> None:
            (transceiver,) = server_in.getTransceivers()
            taps.append(tap_receiver(transceiver.receiver, on_packet))

        await negotiate(seat, server_in, on_offer_applied=tap)
        out_sender = server_out.addTrack(relay)
        if direct:
            (out_transceiver,) = server_out.getTransceivers()
            relay.send_directly(out_transceiver)
        await negotiate(server_out, listener)

        await wait_for(lambda: len(tapped) >= 50, timeout=30, what="a second of tapped packets")
        (server_receiver,) = server_in.getReceivers()

        # A callback that raises is logged; the connection keeps going.
        assert "RTP packet callback failed" in caplog.text
        assert server_in.connectionState == "connected"

        # Tapped packets are whole, in order, and carry the audio level.
        first = tapped[0]
        assert all(p.ssrc == first.ssrc for p in tapped)
        for before, after in pairwise(tapped):
            assert after.sequence_number == (before.sequence_number + 1) & 0xFFFF
            assert after.timestamp == (before.timestamp + FRAME) & 0xFFFFFFFF
            assert after.arrival >= before.arrival
        assert all(opus_packet_samples(p.payload) == FRAME for p in tapped)
        assert all(p.audio_level is not None and 0 <= p.audio_level <= 30 for p in tapped)

        # Once the SSRC is routed, packets come straight from the socket's callback,
        # not through aioice's queue and the DTLS transport's task.
        (tap,) = taps
        received = len(tapped)
        assert tap.packets == received
        assert received - 10 <= tap.direct <= received

        # Statistics still see every packet; aiortc's own decoding path sees none.
        stats = await server_receiver.getStats()
        (transport,) = [s for s in stats.values() if s.type == "transport"]
        assert transport.packetsReceived >= received
        (inbound,) = [s for s in stats.values() if s.type == "inbound-rtp"]
        assert inbound.ssrc == first.ssrc
        assert inbound.packetsReceived == received
        assert inbound.packetsLost == 0
        assert inbound.jitter >= 0
        assert [s.source for s in server_receiver.getSynchronizationSources()] == [first.ssrc]
        # ... nor does it keep a decoder thread: the thread is ended, so is the track.
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(server_receiver.track.recv(), 5)
        assert server_receiver._RTCRtpReceiver__decoder_thread is None

        # The seat's sender gets RTCP receiver reports built from those statistics.
        async def seat_got_receiver_report() -> bool:
            report = await seat_sender.getStats()
            return any(
                s.type == "remote-inbound-rtp" and s.packetsReceived > 0 and s.packetsLost == 0
                for s in report.values()
            )

        await wait_for(
            seat_got_receiver_report, timeout=15, what="an RTCP receiver report at the seat"
        )

        # The listener decodes the forwarded packets with plain aiortc.
        (listener_receiver,) = listener.getReceivers()

        async def read_listener() -> None:
            while True:
                frame = await listener_receiver.track.recv()
                assert isinstance(frame, av.AudioFrame)
                listener_frames.append(frame)

        reader = asyncio.create_task(read_listener())
        await wait_for(
            lambda: len(listener_frames) >= 75, timeout=30, what="1.5 s of decoded audio"
        )
        left = np.concatenate(
            [f.to_ndarray().reshape(-1)[:: len(f.layout.channels)] for f in listener_frames[25:]]
        ).astype(np.float64)
        assert dominant_frequency(left[:RATE]) == pytest.approx(TONE_HZ, abs=3)

        # Sent as one stream: no gaps, and the sender's counts (behind its RTCP sender
        # reports and getStats) and the listener's agree.
        (inbound,) = [
            s for s in (await listener_receiver.getStats()).values() if s.type == "inbound-rtp"
        ]
        assert inbound.packetsLost == 0
        (outbound,) = [
            s for s in (await out_sender.getStats()).values() if s.type == "outbound-rtp"
        ]
        assert outbound.packetsSent >= inbound.packetsReceived > 75
        if direct:
            assert relay.queued == 0
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for peer in peers:
            await peer.close()


def packet(
    ssrc: int, timestamp: int, arrival: float, sequence_number: int = 0, payload: bytes = b""
) -> RtpAudioPacket:
    return RtpAudioPacket(
        payload=payload or b"\xf8" + bytes(40),  # one 20 ms CELT frame
        sequence_number=sequence_number & 0xFFFF,
        timestamp=timestamp & 0xFFFFFFFF,
        ssrc=ssrc,
        arrival=arrival,
        audio_level=None,
        marker=False,
    )


async def drain(track: EncodedAudioTrack) -> list[int | None]:
    """The pts of every packet queued now."""
    return [(await track.recv()).pts for _ in range(track.queued)]


async def test_encoded_track_keeps_intra_source_deltas_and_rebases_on_ssrc_change() -> None:
    track = EncodedAudioTrack()
    base = random.getrandbits(32)
    clock = 1000.0
    for i in range(5):
        track.push(packet(1, base + i * FRAME, clock + i * 0.02, i))
    assert await drain(track) == [0, 960, 1920, 2880, 3840]

    # Three packets lost: their timestamp gap is kept.
    track.push(packet(1, base + 8 * FRAME, clock + 8 * 0.02, 8))
    assert await drain(track) == [8 * FRAME]

    # The seat reconnects 1.5 s later: new SSRC, random timestamp base.
    clock += 8 * 0.02 + 1.5
    other = random.getrandbits(32)
    for i in range(3):
        track.push(packet(2, other + i * FRAME, clock + i * 0.02, 77 + i))
    resumed = 8 * FRAME + int(1.5 * RATE)
    assert await drain(track) == [resumed, resumed + 960, resumed + 1920]

    # A source switch right away never overlaps the previous packet.
    clock += 2 * 0.02
    track.push(packet(3, 12345, clock + 0.001, 5))
    assert await drain(track) == [resumed + 2880]
    track.stop()


async def test_encoded_track_timestamp_wrap_jump_and_late_packets() -> None:
    track = EncodedAudioTrack()
    base = (1 << 32) - 2 * FRAME  # the RTP timestamp wraps around 2^32 after two packets
    for i in range(4):
        track.push(packet(9, base + i * FRAME, 50.0 + i * 0.02, i))
    assert await drain(track) == [0, 960, 1920, 2880]

    # Late and duplicate packets are dropped, never sent out of order.
    track.push(packet(9, base + 2 * FRAME, 50.1, 2))
    track.push(packet(9, base + 3 * FRAME, 50.1, 3))
    assert await drain(track) == []
    assert track.dropped == 2

    # A timestamp far ahead of the wall clock is a new timeline.
    track.push(packet(9, base + 4 * FRAME + 10 * RATE, 50.1, 4))
    track.push(packet(9, base + 5 * FRAME + 10 * RATE, 50.12, 5))
    # It continues after the last packet by the 40 ms of wall clock between them.
    assert await drain(track) == [4800, 5760]

    # So is one far behind.
    track.push(packet(9, base, 50.14, 6))
    assert await drain(track) == [6720]
    track.stop()


async def test_encoded_track_packets_are_what_aiortc_sends() -> None:
    track = EncodedAudioTrack()
    payload = b"\xfc" + bytes(range(60))
    track.push(packet(4, 777, 1.0, payload=payload))
    track.push(packet(4, 777 + FRAME, 1.02, payload=payload))
    first = await track.recv()
    second = await track.recv()
    assert bytes(second) == payload
    assert second.time_base == fractions.Fraction(1, RATE)
    # aiortc's sender turns the packet into RTP with OpusEncoder.pack().
    encoder = OpusEncoder()
    assert encoder.pack(first) == ([payload], 0)
    assert encoder.pack(second) == ([payload], FRAME)
    track.stop()


async def test_encoded_track_drops_the_oldest_beyond_its_bound() -> None:
    track = EncodedAudioTrack()
    for i in range(15):
        track.push(packet(1, i * FRAME, i * 0.02, i))
    assert await drain(track) == [i * FRAME for i in range(5, 15)]
    assert track.dropped == 5
    track.stop()


async def test_encoded_track_hands_a_pushed_packet_to_a_waiting_recv_at_once() -> None:
    track = EncodedAudioTrack()
    waiting = asyncio.create_task(track.recv())
    try:
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        track.push(packet(1, 0, 0.0))
        for _ in range(3):
            if waiting.done():
                break
            await asyncio.sleep(0)
        assert waiting.done()
        assert waiting.result().pts == 0
    finally:
        waiting.cancel()
        track.stop()


async def test_encoded_track_stop_wakes_recv() -> None:
    track = EncodedAudioTrack()
    waiting = asyncio.create_task(track.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(MediaStreamError):
        await track.recv()
    track.push(packet(1, 0, 0.0))
    assert track.readyState == "ended"
