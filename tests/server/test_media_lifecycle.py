"""Media-plane lifecycle and bad input: SDP tables, grace periods, no leaks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from support.media import (
    NO_ICE_SERVERS,
    TONES,
    SeatPeer,
    ToneTrack,
    dominant_frequency,
    start_recording,
    tone_room,
)
from support.polling import wait_for
from support.server import RunningServer, SeatClient, create_session, seated, serving

GRACE_S = 2.0
"""How long the server keeps a seat's peer connection after its socket went away."""


async def browser_like_offer(video: bool = False, lines: int = 3, first: str = "sendonly") -> str:
    pc = RTCPeerConnection(NO_ICE_SERVERS)
    try:
        pc.addTransceiver(ToneTrack(300.0) if first != "recvonly" else "audio", direction=first)
        for _ in range(lines - 1):
            pc.addTransceiver("audio", direction="recvonly")
        if video:
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        return pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.fixture
async def quick_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serving(tmp_path / "data", reconnect_grace_s="0.3") as srv:
        yield srv


async def test_bad_offers_answered_with_codes_and_nothing_leaks(
    quick_server: RunningServer,
) -> None:
    url = quick_server.url
    created = await create_session(url)
    media = quick_server.services.media
    # a sends the offers; b and the facilitator have working audio throughout
    async with (
        seated(url, created, ("a",)) as clients,
        tone_room(url, created, ("b", "facilitator")) as (_, peers),
    ):
        good = await browser_like_offer()
        table: list[tuple[str, Any, str]] = [
            ("garbage", "hello there", "sdp_invalid"),
            ("binary junk", "\x00\x01\x02" * 50, "sdp_invalid"),
            ("truncated", good[: len(good) // 2], "sdp_invalid"),
            ("no audio", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "sdp_no_audio"),
            ("with video", await browser_like_offer(video=True), "sdp_video_not_supported"),
            ("one audio line", await browser_like_offer(lines=1), "sdp_invalid"),
            ("mic not sent", await browser_like_offer(first="recvonly"), "sdp_invalid"),
            (
                "hostile fingerprint",
                good.replace("a=fingerprint:sha-256", "a=fingerprint:md5"),
                "sdp_invalid",
            ),
            ("oversize", good + "a=x-junk:" + "z" * 70_000 + "\r\n", "sdp_too_large"),
        ]
        for why, sdp, code in table:
            ack = await clients["a"].call("rtc:offer", {"sdp": sdp, "type": "offer"})
            assert ack["ok"] is False, why
            assert ack["error"]["code"] == code, (why, ack)
            assert ack["error"]["message"]
            assert media.peer_connections() == 2, why
        # the others still hear each other
        before = len(peers["b"].samples_from("facilitator"))
        await wait_for(
            lambda: len(peers["b"].samples_from("facilitator")) > before + 48_000, timeout=10
        )
        assert dominant_frequency(peers["b"].samples_from("facilitator", 0.5)) == pytest.approx(
            880, abs=5
        )

        # two offers at once from one seat: one is answered, the other refused
        acks = await asyncio.gather(
            clients["a"].call("rtc:offer", {"sdp": good, "type": "offer"}),
            clients["a"].call("rtc:offer", {"sdp": await browser_like_offer(), "type": "offer"}),
        )
        codes = sorted(a.get("error", {}).get("code", "ok") for a in acks)
        assert codes == ["offer_in_flight", "ok"], acks
        assert media.peer_connections() == 3
    await wait_for(
        lambda: media.peer_connections() == 0, timeout=10, what="all peer connections closed"
    )


async def test_peer_connection_closes_after_grace_not_before(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "data", reconnect_grace_s=str(GRACE_S)) as server,
        tone_room(server.url) as (clients, _),
    ):
        media = server.services.media
        assert media.peer_connections() == 3
        # the Socket.IO connection goes away but the peer connection is still up
        left = time.monotonic()
        await clients["a"].close()
        await clients["b"].wait(lambda s: not s["seats"]["a"]["connected"], "a gone")
        assert media.peer_connections() == 3
        await wait_for(lambda: media.peer_connections() == 2, timeout=GRACE_S + 10, what="expiry")
        # the server noticed the socket go after `left`: the grace ran out no earlier
        assert time.monotonic() - left >= GRACE_S


def our_tasks() -> set[asyncio.Task[Any]]:
    """Live tasks, less engine.io's per-socket ping tasks: after a socket closes, each
    sleeps out its ping interval (25 s) and then ends by itself."""
    return {t for t in asyncio.all_tasks() if "_send_ping" not in repr(t.get_coro())}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_fifty_join_leave_cycles_leave_nothing_behind(quick_server: RunningServer) -> None:
    url = quick_server.url
    created = await create_session(url)
    media = quick_server.services.media
    recorder = quick_server.services.recorder
    async with tone_room(url, created, ("b", "facilitator")) as (clients, steady):
        # a consents and is there when the take starts, then leaves: its seat cycles below
        async with seated(url, created, ("a",)) as first:
            recordings = quick_server.settings.recordings_dir
            rec_dir = await start_recording(recordings, {**first, **clients})
        await wait_for(lambda: not clients["b"].last["seats"]["a"]["connected"], what="a gone")
        # the steady seats are fully up (DTLS, RTCP loops, readers) before counting
        await wait_for(lambda: len(steady["b"].samples_from("facilitator")) > 48_000, timeout=30)
        await wait_for(lambda: media.peer_connections() == 2)
        tasks_at_start = our_tasks()
        tasks_before = len(tasks_at_start)
        fds_before = open_fds()
        for cycle in range(50):
            client = SeatClient(url, created["seats"]["a"]["token"])
            await client.connect()
            peer = SeatPeer(client, ToneTrack(TONES["a"]))
            await peer.connect()
            if cycle % 10 == 0:
                # audio really flows on some cycles, so stems are opened and closed
                await wait_for(lambda p=peer: len(p.samples_from("b")) > 4800, timeout=30)
            await peer.close()
            await client.close()
        await wait_for(
            lambda: media.peer_connections() == 2, timeout=10, what="cycling seat's PCs closed"
        )
        try:
            await wait_for(
                lambda: len(our_tasks()) <= tasks_before,
                timeout=30,
                what=f"tasks back to {tasks_before}",
            )
        except AssertionError:
            leaked = [repr(t.get_coro()) for t in our_tasks() - tasks_at_start]
            raise AssertionError(f"{len(leaked)} tasks left: {sorted(set(leaked))[:10]}") from None
        await wait_for(
            lambda: open_fds() <= fds_before + 2, timeout=30, what=f"fds back to {fds_before}"
        )
        assert len(list((rec_dir / "stems").glob("a-*.opus"))) >= 5
        assert (await clients["facilitator"].call("recording:stop"))["ok"]
        await wait_for(lambda: not recorder.active and not recorder._finishing, what="stems closed")
    await wait_for(lambda: media.peer_connections() == 0, timeout=10)
