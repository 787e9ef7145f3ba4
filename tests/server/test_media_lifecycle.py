"""Media-plane lifecycle and bad input: SDP tables, grace periods, no leaks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from support.media import SeatPeer, ToneTrack, dominant_frequency
from support.server import (
    RunningServer,
    SeatClient,
    create_session,
    seat_clients,
    start_server,
    wait_for,
)

TONES = {"a": 440.0, "b": 660.0, "facilitator": 880.0}


async def browser_like_offer(video: bool = False, lines: int = 3, first: str = "sendonly") -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
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
    srv = await start_server(tmp_path / "data", reconnect_grace_s="0.3")
    try:
        yield srv
    finally:
        await srv.close()


async def test_bad_offers_answered_with_codes_and_nothing_leaks(
    quick_server: RunningServer,
) -> None:
    created = await create_session(quick_server.url)
    clients = await seat_clients(quick_server.url, created)
    # b and the facilitator have working audio throughout
    peers = {s: SeatPeer(clients[s], ToneTrack(TONES[s])) for s in ("b", "facilitator")}
    for peer in peers.values():
        await peer.connect()
    media = quick_server.services.media
    try:
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
    finally:
        for peer in peers.values():
            await peer.close()
        for client in clients.values():
            await client.close()
    await wait_for(
        lambda: media.peer_connections() == 0, timeout=10, what="all peer connections closed"
    )


async def test_peer_connection_closes_after_grace_not_before(quick_server: RunningServer) -> None:
    created = await create_session(quick_server.url)
    clients = await seat_clients(quick_server.url, created)
    peers = {s: SeatPeer(clients[s], ToneTrack(TONES[s])) for s in clients}
    media = quick_server.services.media
    try:
        for peer in peers.values():
            await peer.connect()
        assert media.peer_connections() == 3
        # the Socket.IO connection goes away but the peer connection is still up
        await clients["a"].close()
        await clients["b"].wait(lambda s: not s["seats"]["a"]["connected"], "a gone")
        assert media.peer_connections() == 3
        await wait_for(lambda: media.peer_connections() == 2, timeout=5, what="grace expiry")
    finally:
        for peer in peers.values():
            await peer.close()
        for client in clients.values():
            await client.close()


def our_tasks() -> set[asyncio.Task[Any]]:
    """Live tasks, less engine.io's per-socket ping tasks: after a socket closes, each
    sleeps out its ping interval (25 s) and then ends by itself."""
    return {t for t in asyncio.all_tasks() if "_send_ping" not in repr(t.get_coro())}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_fifty_join_leave_cycles_leave_nothing_behind(quick_server: RunningServer) -> None:
    created = await create_session(quick_server.url)
    clients = await seat_clients(quick_server.url, created)
    media = quick_server.services.media
    recorder = quick_server.services.recorder
    for seat in ("a", "b"):
        assert (
            await clients[seat].call("consent", {"record": True, "archive": False, "public": False})
        )["ok"]
    steady = {s: SeatPeer(clients[s], ToneTrack(TONES[s])) for s in ("b", "facilitator")}
    for peer in steady.values():
        await peer.connect()
    start = await clients["facilitator"].call("recording:start")
    assert start["ok"]
    await clients["a"].close()
    await wait_for(lambda: not clients["b"].last["seats"]["a"]["connected"])
    # the steady seats are fully up (DTLS, RTCP loops, readers) before counting
    await wait_for(lambda: len(steady["b"].samples_from("facilitator")) > 48_000, timeout=10)
    await wait_for(lambda: media.peer_connections() == 2)
    tasks_at_start = our_tasks()
    tasks_before = len(tasks_at_start)
    fds_before = open_fds()
    try:
        for cycle in range(50):
            client = SeatClient(quick_server.url, created["seats"]["a"]["token"])
            await client.connect()
            peer = SeatPeer(client, ToneTrack(TONES["a"]))
            await peer.connect()
            if cycle % 10 == 0:
                # audio really flows on some cycles, so stems are opened and closed
                await wait_for(lambda p=peer: len(p.samples_from("b")) > 4800, timeout=10)
            await peer.close()
            await client.close()
        await wait_for(
            lambda: media.peer_connections() == 2, timeout=10, what="cycling seat's PCs closed"
        )
        try:
            await wait_for(
                lambda: len(our_tasks()) <= tasks_before,
                timeout=10,
                what=f"tasks back to {tasks_before}",
            )
        except AssertionError:
            leaked = [repr(t.get_coro()) for t in our_tasks() - tasks_at_start]
            raise AssertionError(f"{len(leaked)} tasks left: {sorted(set(leaked))[:10]}") from None
        await wait_for(
            lambda: open_fds() <= fds_before + 2, timeout=10, what=f"fds back to {fds_before}"
        )
        rec_dir = quick_server.settings.recordings_dir / start["recording"]["id"]
        assert len(list((rec_dir / "stems").glob("a-*.opus"))) >= 5
        assert (await clients["facilitator"].call("recording:stop"))["ok"]
        await wait_for(lambda: not recorder.active and not recorder._finishing, what="stems closed")
    finally:
        for peer in steady.values():
            await peer.close()
        for client in clients.values():
            await client.close()
    await wait_for(lambda: media.peer_connections() == 0, timeout=10)
