"""Audio through NAT: the server's ICE host candidates bind in the configured UDP port
range and offer the announced address; a 1:1 NAT in front of the range carries the
conversation; a full range or a full server is refused in words, not in silence."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storyroom.media.aiortc_internals import bind_ice_ports, check_ice_binding
from support.media import TONES, SeatPeer, ToneTrack, close_room, dominant_frequency, open_room
from support.nat import OneToOneNat
from support.server import RunningServer, create_session, seat_clients, start_server, wait_for

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
    server = await start_server(
        tmp_path / "data",
        ice_port_range=f"{ports[0]}-{ports[-1]}",
        ice_public_address=PUBLIC,
    )
    try:
        yield server, nat
    finally:
        await server.close()
        await nat.close()


async def test_a_room_through_a_one_to_one_nat(
    natted: tuple[RunningServer, OneToOneNat],
) -> None:
    server, nat = natted
    clients, peers = await open_room(server)
    try:
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
    finally:
        await close_room(clients, peers)


async def test_a_full_port_range_is_refused_in_words(tmp_path: Path) -> None:
    ports = range(21100, 21106)
    server = await start_server(tmp_path / "data", ice_port_range=f"{ports[0]}-{ports[-1]}")
    taken = []
    try:
        for port in ports:  # another program holds every port of the range
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", port))
            taken.append(sock)
        created = await create_session(server.url)
        clients = await seat_clients(server.url, created)
        peer = SeatPeer(clients["a"], ToneTrack(TONES["a"]))
        try:
            peer.pc.addTransceiver(peer.tone, direction="sendonly")
            peer.pc.addTransceiver("audio", direction="recvonly")
            peer.pc.addTransceiver("audio", direction="recvonly")
            await peer.pc.setLocalDescription(await peer.pc.createOffer())
            assert peer.pc.localDescription is not None
            ack = await clients["a"].call(
                "rtc:offer", {"sdp": peer.pc.localDescription.sdp, "type": "offer"}
            )
            assert ack["ok"] is False
            assert ack["error"]["code"] == "no_media_ports", ack
        finally:
            await peer.close()
            for client in clients.values():
                await client.close()
    finally:
        for sock in taken:
            sock.close()
        await server.close()


async def test_a_server_at_its_room_limit_says_so(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", max_rooms=1)
    clients, peers = await open_room(server)
    try:
        created = await create_session(server.url)
        second = await seat_clients(server.url, created)
        peer = SeatPeer(second["a"], ToneTrack(TONES["a"]))
        try:
            peer.pc.addTransceiver(peer.tone, direction="sendonly")
            peer.pc.addTransceiver("audio", direction="recvonly")
            peer.pc.addTransceiver("audio", direction="recvonly")
            await peer.pc.setLocalDescription(await peer.pc.createOffer())
            assert peer.pc.localDescription is not None
            ack = await second["a"].call(
                "rtc:offer", {"sdp": peer.pc.localDescription.sdp, "type": "offer"}
            )
            assert ack == {"ok": False, "error": ack["error"]}
            assert ack["error"]["code"] == "server_full"
        finally:
            await peer.close()
            for client in second.values():
                await client.close()
        # the first room's seats may still replace their connections
        again = await peers["a"].client.call("rtc:offer", {"sdp": "v=0", "type": "offer"})
        assert again["error"]["code"] != "server_full"
    finally:
        await close_room(clients, peers)
        await server.close()
