"""Offer checks and the archival-Opus answer, including a round trip through aiortc."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from storyroom.media.sdp import SdpError, archival_opus_answer, check_offer

ARCHIVAL = "useinbandfec=1;maxaveragebitrate=96000;stereo=0;minptime=10"

SESSION = "v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
TRANSPORT = (
    "a=ice-ufrag:abcd\r\n"
    "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    "a=fingerprint:sha-256 "
    "7F:D4:A1:B6:65:EB:D5:58:C4:23:02:86:AF:A5:9E:CC:23:94:83:C6:1B:F7:60:95:D3:16:1B:8F:77:3D:83:FD"
    "\r\na=setup:actpass\r\n"
)


def audio(mid: str = "0", transport: str = TRANSPORT, rtpmap: str = "opus/48000/2") -> str:
    return (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        f"a=mid:{mid}\r\n"
        "a=sendrecv\r\n"
        f"a=rtpmap:111 {rtpmap}\r\n"
        "a=rtcp-fb:111 transport-cc\r\n"
        "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
        "a=rtpmap:0 PCMU/8000\r\n" + transport
    )


VIDEO = (
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
    "a=rtpmap:96 VP8/90000\r\n" + TRANSPORT
)
DATA = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n" + TRANSPORT
GOOD = SESSION + audio()


def test_a_browser_style_offer_passes() -> None:
    check_offer(GOOD)
    check_offer(GOOD.replace("\r\n", "\n"))
    check_offer(SESSION + TRANSPORT + audio(transport=""))  # transport at session level
    check_offer(GOOD + audio(mid="1") + audio(mid="2"))


@pytest.mark.parametrize(
    ("offer", "code"),
    [
        pytest.param("", "sdp_invalid", id="empty"),
        pytest.param("hello", "sdp_invalid", id="garbage"),
        pytest.param("\x00" * 100, "sdp_invalid", id="nul-bytes"),
        pytest.param(GOOD[:-40], "sdp_invalid", id="truncated"),
        pytest.param(GOOD.rstrip("\r\n"), "sdp_invalid", id="no-final-line-ending"),
        pytest.param("v=1\r\n" + GOOD[5:], "sdp_invalid", id="wrong-version"),
        pytest.param(" " + GOOD, "sdp_invalid", id="leading-space"),
        pytest.param(
            GOOD.replace("o=- 46117317 2 IN IP4 127.0.0.1\r\n", ""), "sdp_invalid", id="no-o"
        ),
        pytest.param(GOOD.replace("s=-\r\n", ""), "sdp_invalid", id="no-s"),
        pytest.param(GOOD.replace("t=0 0\r\n", ""), "sdp_invalid", id="no-t"),
        pytest.param(GOOD.replace("a=sendrecv", "sendrecv"), "sdp_invalid", id="bad-line"),
        pytest.param(GOOD.replace("a=sendrecv", "a=send\x01recv"), "sdp_invalid", id="control"),
        pytest.param(GOOD + "\r\n", "sdp_invalid", id="blank-line"),
        pytest.param(
            GOOD.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 0", "m=audio"), "sdp_invalid", id="bad-m"
        ),
        pytest.param(GOOD.replace("a=ice-ufrag:abcd\r\n", ""), "sdp_invalid", id="no-ufrag"),
        pytest.param(
            GOOD.replace("a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n", ""), "sdp_invalid", id="no-pwd"
        ),
        pytest.param(
            SESSION + audio() + audio(mid="1", transport=""), "sdp_invalid", id="no-fingerprint"
        ),
        pytest.param(GOOD + DATA, "sdp_invalid", id="data-channel"),
        pytest.param(SESSION + DATA, "sdp_invalid", id="only-data-channel"),
        pytest.param(SESSION, "sdp_no_audio", id="no-media"),
        pytest.param(SESSION + audio(rtpmap="ISAC/16000"), "sdp_no_audio", id="no-opus"),
        pytest.param(SESSION + audio(rtpmap="opus/8000"), "sdp_no_audio", id="opus-wrong-clock"),
        pytest.param(
            GOOD.replace("SAVPF 111 0", "SAVPF 0"), "sdp_no_audio", id="opus-not-in-m-line"
        ),
        pytest.param(GOOD + VIDEO, "sdp_video_not_supported", id="audio-and-video"),
        pytest.param(SESSION + VIDEO, "sdp_video_not_supported", id="video-only"),
        pytest.param(GOOD + "a=x:" + "y" * 70_000 + "\r\n", "sdp_too_large", id="too-large"),
    ],
)
def test_bad_offers_are_refused_with_a_code(offer: str, code: str) -> None:
    with pytest.raises(SdpError) as caught:
        check_offer(offer)
    assert caught.value.code == code
    assert str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_size_limit_is_configurable() -> None:
    check_offer(GOOD, max_bytes=len(GOOD))
    with pytest.raises(SdpError) as caught:
        check_offer(GOOD, max_bytes=len(GOOD) - 1)
    assert caught.value.code == "sdp_too_large"


def fmtp_lines(sdp: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line.startswith("a=fmtp:")]


def test_archival_answer_merges_into_the_existing_fmtp() -> None:
    answer = archival_opus_answer(GOOD)
    assert fmtp_lines(answer) == [
        "a=fmtp:111 minptime=10;useinbandfec=1;maxaveragebitrate=96000;stereo=0"
    ]
    parameters = dict(p.split("=") for p in fmtp_lines(answer)[0].split(" ", 1)[1].split(";"))
    assert parameters == {
        "minptime": "10",
        "useinbandfec": "1",
        "maxaveragebitrate": "96000",
        "stereo": "0",
    }
    assert answer.endswith("\r\n")
    assert "\n" not in answer.replace("\r\n", "")
    # Everything else is untouched.
    assert [line for line in answer.split("\r\n") if not line.startswith("a=fmtp:111")] == [
        line for line in GOOD.split("\r\n") if not line.startswith("a=fmtp:111")
    ]


def test_archival_answer_keeps_other_parameters_and_overrides_ours() -> None:
    offer = GOOD.replace(
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=fmtp:111 useinbandfec=0; usedtx=1;maxaveragebitrate=20000;sprop-stereo=1;cbr",
    )
    (line,) = fmtp_lines(archival_opus_answer(offer, max_average_bitrate=128_000))
    assert line == (
        "a=fmtp:111 useinbandfec=1;usedtx=1;maxaveragebitrate=128000;sprop-stereo=1;cbr;"
        "stereo=0;minptime=10"
    )


def test_archival_answer_merges_duplicate_fmtp_lines_and_adds_missing_ones() -> None:
    offer = (
        SESSION
        + audio().replace(
            "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
            "a=fmtp:111 usedtx=1\r\na=fmtp:111 usedtx=0;ptime=20\r\n",
        )
        + audio(mid="1").replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "")
        + audio(mid="2").replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "a=fmtp:111\r\n")
    )
    answer = archival_opus_answer(offer)
    assert fmtp_lines(answer) == [
        f"a=fmtp:111 usedtx=1;ptime=20;{ARCHIVAL}",
        f"a=fmtp:111 {ARCHIVAL}",
        f"a=fmtp:111 {ARCHIVAL}",
    ]
    lines = answer.split("\r\n")
    added = lines.index("a=mid:1")
    assert lines[added + 2 : added + 4] == ["a=rtpmap:111 opus/48000/2", f"a=fmtp:111 {ARCHIVAL}"]
    assert archival_opus_answer(answer) == answer  # idempotent


def test_archival_answer_leaves_non_opus_and_non_audio_alone() -> None:
    offer = GOOD + VIDEO.replace("VP8/90000", "opus/48000/2")
    answer = archival_opus_answer(offer)
    assert answer.split("m=video")[1] == offer.split("m=video")[1]
    assert not any(line.startswith("a=fmtp:0") for line in answer.split("\r\n"))


@pytest.mark.parametrize("bitrate", [5_999, 510_001, 0, -1])
def test_archival_answer_refuses_impossible_bitrates(bitrate: int) -> None:
    with pytest.raises(ValueError, match="max_average_bitrate"):
        archival_opus_answer(GOOD, max_average_bitrate=bitrate)


async def test_round_trip_with_aiortc() -> None:
    """A seat-style offer (send the mic, receive two others) through both aiortc peers."""
    seat = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        seat.addTransceiver("audio", direction="sendrecv")
        seat.addTransceiver("audio", direction="recvonly")
        seat.addTransceiver("audio", direction="recvonly")
        await seat.setLocalDescription(await seat.createOffer())
        offer = seat.localDescription
        check_offer(offer.sdp)

        await server.setRemoteDescription(offer)
        await server.setLocalDescription(await server.createAnswer())
        munged = archival_opus_answer(server.localDescription.sdp)
        assert len(fmtp_lines(munged)) == 3
        assert all(line.endswith(ARCHIVAL) for line in fmtp_lines(munged))

        # The offerer accepts it, and aiortc's parser reads our parameters.
        await seat.setRemoteDescription(RTCSessionDescription(munged, "answer"))
        assert seat.signalingState == "stable"
        for media in SessionDescription.parse(munged).media:
            opus = next(c for c in media.rtp.codecs if c.mimeType.lower() == "audio/opus")
            assert {k: str(v) for k, v in opus.parameters.items()} == {
                "useinbandfec": "1",
                "maxaveragebitrate": "96000",
                "stereo": "0",
                "minptime": "10",
            }

        # An answerer may also set the munged answer as its own local description.
        other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await other.setRemoteDescription(offer)
            answer = await other.createAnswer()
            await other.setLocalDescription(
                RTCSessionDescription(archival_opus_answer(answer.sdp), "answer")
            )
            assert other.signalingState == "stable"
        finally:
            await other.close()
    finally:
        await seat.close()
        await server.close()
