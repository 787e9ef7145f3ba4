"""The impairment relay itself: loss, bursts, jitter, reordering, duplication, outages,
SDP rewriting and its control process, with real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from support.netimpair import (
    Impairment,
    Link,
    Relay,
    RelayClient,
    host_candidate,
    rewrite_candidates,
    start_relay_process,
)
from support.polling import wait_for


@dataclass
class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that records (arrival, payload) of what it gets."""

    got: list[tuple[float, bytes]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((time.monotonic(), data))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def sendto(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))


@dataclass
class Setup:
    relay: Relay
    seat: Endpoint
    server: Endpoint

    async def link(self, up: Impairment, down: Impairment | None = None, seed: int = 7) -> Link:
        return await self.relay.open(
            f"link{len(self.relay.links)}",
            up,
            down or Impairment(),
            seed,
            self.seat.addr,
            self.server.addr,
        )


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    loop = asyncio.get_running_loop()
    seat, server = Endpoint(), Endpoint()
    await loop.create_datagram_endpoint(lambda: seat, local_addr=("127.0.0.1", 0))
    await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    relay = Relay()
    yield Setup(relay, seat, server)
    relay.close_all()
    for endpoint in (seat, server):
        assert endpoint.transport is not None
        endpoint.transport.close()


async def drained(link: Link, setup: Setup, up: int, down: int = 0) -> None:
    """Until the relay has read `up` datagrams from the seat and `down` from the server,
    and each end all that the relay passed on. asyncio reads one datagram per socket per
    loop turn and the kernel drops what a backlog cannot hold: a sender on a busy machine
    must not run ahead of its readers."""
    stats = link.directions["up"].stats, link.directions["down"].stats

    def caught_up() -> bool:
        return (stats[0].received, stats[1].received) == (up, down) and (
            len(setup.server.got),
            len(setup.seat.got),
        ) == (stats[0].sent, stats[1].sent)

    await wait_for(caught_up, interval=0.001, what=f"{up} up and {down} down read")


def rtp(seq: int) -> bytes:
    """A minimal RTP header (payload type 111) and a payload carrying `seq`."""
    return bytes([0x80, 111]) + seq.to_bytes(2, "big") + bytes(8) + seq.to_bytes(4, "big")


def numbers(endpoint: Endpoint) -> list[int]:
    return [int.from_bytes(data[-4:], "big") for _, data in endpoint.got]


async def send_paced(seat: Endpoint, port: int, count: int, every: float, first: int = 0) -> None:
    for n in range(first, first + count):
        seat.sendto(rtp(n % 65536) + n.to_bytes(4, "big"), port)
        await asyncio.sleep(every)


async def test_random_loss_is_counted_and_the_other_way_is_clean(setup: Setup) -> None:
    link = await setup.link(Impairment(loss=0.1))
    for n in range(3000):
        setup.seat.sendto(n.to_bytes(4, "big"), link.seat_port)
        setup.server.sendto(n.to_bytes(4, "big"), link.server_port)
        if n % 20 == 19:
            await drained(link, setup, n + 1, n + 1)
    assert len(setup.seat.got) == 3000
    up = link.directions["up"].stats
    assert len(setup.server.got) == 3000 - up.lost
    assert up.lost_random == up.lost
    assert 3000 * 0.1 - 60 < up.lost < 3000 * 0.1 + 60  # about 3.5 standard deviations
    assert link.directions["down"].stats.lost == 0
    assert numbers(setup.server) == sorted(numbers(setup.server))


async def test_bursty_loss_comes_in_runs(setup: Setup) -> None:
    link = await setup.link(Impairment(burst_enter=0.02, burst_exit=0.25))
    for n in range(4000):
        setup.seat.sendto(n.to_bytes(4, "big"), link.seat_port)
        if n % 20 == 19:
            await drained(link, setup, n + 1)
    stats = link.directions["up"].stats
    assert len(setup.server.got) == 4000 - stats.lost
    arrived = set(numbers(setup.server))
    runs, length = [], 0
    for n in range(4000):
        if n in arrived:
            if length:
                runs.append(length)
            length = 0
        else:
            length += 1
    assert stats.lost_burst == stats.lost > 100
    assert sum(runs) / len(runs) > 2.5  # mean burst 1/burst_exit = 4 packets


async def test_jitter_delays_without_reordering(setup: Setup) -> None:
    link = await setup.link(Impairment(jitter_ms=30))
    sent: dict[int, float] = {}
    for n in range(200):
        sent[n] = time.monotonic()
        setup.seat.sendto(n.to_bytes(4, "big"), link.seat_port)
        await asyncio.sleep(0.005)
    await wait_for(lambda: len(setup.server.got) == 200, what="every datagram")
    assert numbers(setup.server) == list(range(200))
    delays = [
        at - sent[n] for n, (at, _) in zip(numbers(setup.server), setup.server.got, strict=True)
    ]
    assert min(delays) >= 0
    assert max(delays) < 0.2
    assert sum(d > 0.010 for d in delays) > 50  # really jittered, not just forwarded


async def test_reordering_and_duplication(setup: Setup) -> None:
    link = await setup.link(Impairment(reorder=0.1, reorder_ms=30, duplicate=0.1))
    for n in range(500):
        setup.seat.sendto(n.to_bytes(4, "big"), link.seat_port)
        await asyncio.sleep(0.002)
    stats = link.directions["up"].stats
    await wait_for(lambda: len(setup.server.got) == 500 + stats.duplicated, what="all copies")
    got = numbers(setup.server)
    assert sorted(set(got)) == list(range(500))
    assert len(got) - len(set(got)) == stats.duplicated > 20
    overtaken = sum(1 for a, b in itertools.pairwise(got) if b < a)
    assert overtaken >= stats.reordered // 2 > 10


async def test_outage_on_the_wall_clock_and_its_cut(setup: Setup) -> None:
    link = await setup.link(Impairment())
    start = time.time() + 0.3
    end = start + 0.4
    link.add_outage(start, 0.4)
    # the relay (on this loop) judges each datagram while this coroutine sleeps: between
    # just before it was sent and just after the sleep, however busy the machine is
    judged: dict[int, tuple[float, float]] = {}
    for n in range(100):
        before = time.time()
        setup.seat.sendto(rtp(1000 + n), link.seat_port)
        setup.server.sendto(n.to_bytes(4, "big"), link.server_port)
        await asyncio.sleep(0.01)
        judged[n] = (before, time.time())
    assert judged[99][0] > end, "the run outlasts the outage"

    def arrived() -> set[int]:
        return {int.from_bytes(d[2:4], "big") - 1000 for _, d in setup.server.got}

    await wait_for(lambda: 99 in arrived() and 99 in numbers(setup.seat), what="the last one")
    inside = [n for n, (a, b) in judged.items() if start <= a and b < end]
    outside = [n for n, (a, b) in judged.items() if b < start or a >= end]
    assert inside and outside
    for n in inside:
        assert n not in arrived() and n not in numbers(setup.seat), n
    for n in outside:
        assert n in arrived() and n in numbers(setup.seat), n
    (cut,) = link.stats()["cuts"]
    assert cut["start"] == start
    # the cut names the last datagram through before the outage and the first after it
    assert cut["last_before"] == 1000 + max(n for n in arrived() if judged[n][0] < start)
    assert cut["first_after"] == 1000 + min(n for n in arrived() if judged[n][1] >= end)
    assert link.stats()["first_seq"] == 1000
    assert link.directions["up"].stats.lost_outage > 25


def test_candidates_are_rewritten_to_the_relay() -> None:
    sdp = (
        "v=0\r\nm=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n"
        "a=candidate:abc 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
        "m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n"
        "a=candidate:abc 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    )
    assert host_candidate(sdp) == ("127.0.0.1", 50000)
    rewritten = rewrite_candidates(sdp, 40000)
    assert "50000" not in rewritten
    assert rewritten.count("127.0.0.1 40000 typ host") == 2
    assert rewritten.count("m=audio 40000 ") == 2
    with pytest.raises(ValueError, match="no UDP host candidate"):
        host_candidate("v=0\r\n")
    with pytest.raises(ValueError, match="loss"):
        Impairment(loss=1.5)
    with pytest.raises(ValueError, match="jitter_ms"):
        Impairment(jitter_ms=-1)


async def test_relay_process_is_driven_over_its_control_connection(setup: Setup) -> None:
    process = start_relay_process()
    client = RelayClient(process.control_port)
    try:
        ports = await client.call(
            "open", name="x", seat=list(setup.seat.addr), up={"loss": 0.0}, down={}, seed=1
        )
        await client.call("target", name="x", server=list(setup.server.addr))
        setup.seat.sendto(b"hello", ports["seat_port"])
        await wait_for(lambda: setup.server.got, what="the datagram through the process")
        setup.server.sendto(b"back", ports["server_port"])
        await wait_for(lambda: setup.seat.got, what="the answer")
        assert setup.server.got[0][1] == b"hello" and setup.seat.got[0][1] == b"back"
        stats = (await client.call("stats"))["links"]["x"]
        assert stats["up"]["sent"] == stats["down"]["sent"] == 1
        with pytest.raises(RuntimeError, match="loopback"):
            await client.call("open", name="y", seat=["10.0.0.1", 9])
        with pytest.raises(RuntimeError, match="unknown op"):
            await client.call("explode")
        await client.call("close", name="x")
        assert "x" in (await client.call("stats"))["links"]  # closed links keep their figures
    finally:
        await client.close()
        process.stop()
    assert process.process.returncode is not None
