"""Audio through NAT: the server's ICE host candidates bind in the configured UDP port
range and offer the announced address; a 1:1 NAT in front of the range carries the
conversation; a full range or a full server is refused in words, not in silence."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storyroom.media.aiortc_internals import bind_ice_ports, check_ice_binding
from support.media import TONES, SeatPeer, ToneTrack, dominant_frequency, tone_room
from support.nat import OneToOneNat
from support.polling import wait_for
from support.server import RunningServer, create_session, seated, serving

CANDIDATE = re.compile(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)", re.IGNORECASE)
PUBLIC = "127.0.0.2"


@pytest.fixture(autouse=True)
def ephemeral_ports_after() -> AsyncIterator[None]:
    yield
    bind_ice_ports(None)  # the binding is process-wide: later tests get ephemeral ports


def test_aioice_still_binds_the_way_we_redirect() -> None:
    check_ice_binding()


@pytest.fixture
async def natted(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, OneToOneNat]]:
    ports = range(21000, 21024)
    nat = OneToOneNat(PUBLIC, "127.0.0.1", ports)
    await nat.start()
    try:
        async with serving(
            tmp_path / "data",
            ice_port_range=f"{ports[0]}-{ports[-1]}",
            ice_public_address=PUBLIC,
        ) as server:
            yield server, nat
    finally:
        await nat.close()


async def refused_offer(url: str) -> dict[str, Any]:
    """Seat a of a new session offers its audio; the server's ack, expected a refusal."""
    async with seated(url, await create_session(url)) as clients:
        peer = SeatPeer(clients["a"], ToneTrack(TONES["a"]))
        try:
            ack = await peer.offer()
        finally:
            await peer.close()
    assert ack["ok"] is False, ack
    return ack


async def test_a_room_through_a_one_to_one_nat(
    natted: tuple[RunningServer, OneToOneNat],
) -> None:
    server, nat = natted
    async with tone_room(server.url) as (_, peers):
        for seat, peer in peers.items():
            answer = peer.pc.remoteDescription
            assert answer is not None
            candidates = CANDIDATE.findall(answer.sdp)
            hosts = [(addr, int(port)) for addr, port, kind in candidates if kind == "host"]
            assert hosts, f"{seat}: no host candidate in {answer.sdp}"
            for addr, port in hosts:
                assert addr == PUBLIC, (seat, addr)
                assert port in nat.ports, (seat, port)
            assert f"c=IN IP4 {PUBLIC}" in answer.sdp

        def hears_everyone() -> bool:
            return all(
                abs(dominant_frequency(peer.samples_from(other, 1.0)) - TONES[other]) < 20
                for seat, peer in peers.items()
                for other in TONES
                if other != seat
            )

        await wait_for(hears_everyone, timeout=30, what="each seat hearing the other two")
        # The seats' connectivity checks reached the server through the announced address
        # and its answers came back through it. (On loopback the server also reaches the
        # seats directly, so the pair the seats settle on may bypass the NAT.)
        assert nat.inbound > 0 and nat.outbound > 0, (nat.inbound, nat.outbound)


async def test_a_full_port_range_is_refused_in_words(tmp_path: Path) -> None:
    ports = range(21100, 21106)
    taken = []
    async with serving(tmp_path / "data", ice_port_range=f"{ports[0]}-{ports[-1]}") as server:
        try:
            for port in ports:  # another program holds every port of the range
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.0.1", port))
                taken.append(sock)
            ack = await refused_offer(server.url)
        finally:
            for sock in taken:
                sock.close()
    assert ack["error"]["code"] == "no_media_ports", ack


async def test_a_server_at_its_room_limit_says_so(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "data", max_rooms=1) as server,
        tone_room(server.url) as (_, peers),
    ):
        ack = await refused_offer(server.url)
        assert ack == {"ok": False, "error": ack["error"]}
        assert ack["error"]["code"] == "server_full"
        # the first room's seats may still replace their connections
        again = await peers["a"].client.call("rtc:offer", {"sdp": "v=0", "type": "offer"})
        assert again["error"]["code"] != "server_full"
