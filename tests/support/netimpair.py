"""A network-impairment relay for tests and benchmarks that stays on this machine.

Each *link* is a pair of UDP sockets on 127.0.0.1 between one peer (a seat) and the
other (the server, or a TURN server): what the seat sends to the link's seat-facing
socket goes out of its server-facing socket to the server, and back the same way.
Both peers talk only to the relay, so rewriting the ICE candidates in the offer and
answer (:func:`rewrite_candidates`) is all it takes to put a link between an aiortc
seat and storyroom; nothing has to learn peer-reflexive addresses. As a plain UDP
proxy in front of a TURN server the link learns the seat's address from its first
datagram and needs no rewriting at all.

Per direction, from a seeded RNG: random loss, Gilbert-Elliott bursty loss, jitter
(a random extra delay; order is kept unless a packet is chosen for reordering),
reordering, duplication; per link, outages (both directions dropped) scheduled on the
wall clock, so that another process can say exactly when.

Run in-process (:class:`Relay`) or as its own process (:func:`start_relay_process`,
controlled over a JSON-lines TCP connection on 127.0.0.1 with :class:`RelayClient`),
which keeps the impairment's timing independent of a busy benchmark loop.

    python tests/support/netimpair.py --control-port 0    # prints "control-port N", serves
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

HOST = "127.0.0.1"
UP, DOWN = "up", "down"
"""Directions: seat → server, server → seat."""


@dataclass(frozen=True)
class Impairment:
    """What one direction of a link does to datagrams. Probabilities are 0..1."""

    loss: float = 0.0
    """Random (independent) loss, and the loss in the Gilbert-Elliott good state."""
    burst_enter: float = 0.0
    """Gilbert-Elliott: chance per packet of going from good to bad (0: no bursts)."""
    burst_exit: float = 0.25
    """Chance per packet of going from bad back to good (mean burst 1/burst_exit)."""
    burst_loss: float = 1.0
    """Loss in the bad state."""
    delay_ms: float = 0.0
    """Fixed one-way delay added to every packet."""
    jitter_ms: float = 0.0
    """Extra delay drawn uniformly from [0, jitter_ms]; order is still kept."""
    reorder: float = 0.0
    """Chance that a packet is held back `reorder_ms` more, ignoring order."""
    reorder_ms: float = 40.0
    duplicate: float = 0.0
    """Chance that a packet is sent twice."""

    def __post_init__(self) -> None:
        for name in ("loss", "burst_enter", "burst_exit", "burst_loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, not {value!r}")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Impairment:
        return cls(**(data or {}))


@dataclass
class DirectionStats:
    received: int = 0
    sent: int = 0
    lost_random: int = 0
    lost_burst: int = 0
    lost_outage: int = 0
    duplicated: int = 0
    reordered: int = 0
    unroutable: int = 0
    """Datagrams that arrived before the far side's address was known."""

    @property
    def lost(self) -> int:
        return self.lost_random + self.lost_burst + self.lost_outage


class _Direction:
    """One direction's impairment state: RNG, Gilbert-Elliott state, send clock."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment = impairment
        self.rng = rng
        self.bad = False
        self.stats = DirectionStats()
        self.in_order: deque[tuple[float, bytes, tuple[str, int]]] = deque()
        """Datagrams waiting for their due time (monotonic), in arrival order: jitter
        delays them but never lets one overtake another."""
        self.timer: asyncio.TimerHandle | None = None

    def fate(self) -> tuple[bool, list[float]] | None:
        """None to drop the next datagram; else whether it may overtake others, and the
        delay (s) of each copy to send."""
        imp, rng = self.impairment, self.rng
        if imp.burst_enter > 0:
            if self.bad and rng.random() < imp.burst_exit:
                self.bad = False
            elif not self.bad and rng.random() < imp.burst_enter:
                self.bad = True
            if self.bad and rng.random() < imp.burst_loss:
                self.stats.lost_burst += 1
                return None
        if imp.loss > 0 and rng.random() < imp.loss:
            self.stats.lost_random += 1
            return None
        delay = (imp.delay_ms + rng.random() * imp.jitter_ms) / 1000.0
        copies = 2 if imp.duplicate > 0 and rng.random() < imp.duplicate else 1
        self.stats.duplicated += copies - 1
        if imp.reorder > 0 and rng.random() < imp.reorder:
            self.stats.reordered += 1
            return True, [delay + imp.reorder_ms / 1000.0] * copies
        return False, [delay] * copies


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, link: Link, direction: str) -> None:
        self.link = link
        self.direction = direction
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.link.received(self.direction, data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable after a peer closed: like a real network, carry on


class Link:
    """Seat ⇄ relay ⇄ server for one peer connection (or one TURN client)."""

    def __init__(
        self,
        name: str,
        up: Impairment,
        down: Impairment,
        seed: int,
        seat_addr: tuple[str, int] | None = None,
        server_addr: tuple[str, int] | None = None,
    ) -> None:
        self.name = name
        self.seat_addr = seat_addr
        self.server_addr = server_addr
        rng = random.Random(seed)
        self.directions = {
            UP: _Direction(up, random.Random(rng.random())),
            DOWN: _Direction(down, random.Random(rng.random())),
        }
        self.outages: list[tuple[float, float]] = []
        """Wall-clock [start, end) intervals in which both directions are dropped."""
        self.first_seq: int | None = None
        """Sequence number of the first RTP packet the seat sent through this link."""
        self.first_forwarded: int | None = None
        self.last_seq: int | None = None
        """... the first and the last one forwarded to the server."""
        self.cuts: list[dict[str, Any]] = []
        """Per outage: the last seat RTP sequence number forwarded before it and the
        first forwarded after it, so a test knows exactly which audio it took."""
        self.seat_side = _Socket(self, UP)
        self.server_side = _Socket(self, DOWN)
        self.closed = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.seat_side, local_addr=(HOST, 0))
        await loop.create_datagram_endpoint(lambda: self.server_side, local_addr=(HOST, 0))

    @property
    def seat_port(self) -> int:
        """Where the seat sends (the address the seat must see for the server)."""
        assert self.seat_side.transport is not None
        return int(self.seat_side.transport.get_extra_info("sockname")[1])

    @property
    def server_port(self) -> int:
        """Where the server sends (the address the server must see for the seat)."""
        assert self.server_side.transport is not None
        return int(self.server_side.transport.get_extra_info("sockname")[1])

    def add_outage(self, start: float, seconds: float) -> None:
        self.outages.append((start, start + seconds))
        now = time.time()
        self.outages = [o for o in self.outages if o[1] > now]

    def in_outage(self) -> tuple[float, float] | None:
        now = time.time()
        return next((o for o in self.outages if o[0] <= now < o[1]), None)

    def received(self, direction: str, data: bytes, addr: tuple[str, int]) -> None:
        state = self.directions[direction]
        state.stats.received += 1
        if direction == UP:
            if self.seat_addr is None:
                self.seat_addr = addr  # proxy mode: the first sender is the seat
            target, out = self.server_addr, self.server_side.transport
        else:
            target, out = self.seat_addr, self.seat_side.transport
        if target is None or out is None or self.closed:
            state.stats.unroutable += 1
            return
        seq = _rtp_seq(data) if direction == UP else None
        if seq is not None and self.first_seq is None:
            self.first_seq = seq
        if self.outages and (outage := self.in_outage()) is not None:
            state.stats.lost_outage += 1
            if seq is not None and (not self.cuts or self.cuts[-1]["start"] != outage[0]):
                self.cuts.append(
                    {
                        "start": outage[0],
                        "end": outage[1],
                        "last_before": self.last_seq,
                        "first_after": None,
                    }
                )
            return
        fate = state.fate()
        if fate is None:
            return
        if seq is not None:
            self.last_seq = seq
            if self.first_forwarded is None:
                self.first_forwarded = seq
            if self.cuts and self.cuts[-1]["first_after"] is None:
                self.cuts[-1]["first_after"] = seq
        overtakes, delays = fate
        loop = asyncio.get_running_loop()
        now = loop.time()
        for delay in delays:
            if overtakes:
                loop.call_later(delay, self._send, out, data, target, state)
            else:
                due = max(now + delay, state.in_order[-1][0] if state.in_order else 0.0)
                state.in_order.append((due, data, target))
                if state.timer is None:
                    self._flush(out, state)

    def _flush(self, out: asyncio.DatagramTransport, state: _Direction) -> None:
        """Send every in-order datagram that is due, then wait for the next one."""
        state.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while state.in_order and state.in_order[0][0] <= now + 0.0002:
            _, data, target = state.in_order.popleft()
            self._send(out, data, target, state)
        if state.in_order:
            state.timer = loop.call_at(state.in_order[0][0], self._flush, out, state)

    def _send(
        self,
        out: asyncio.DatagramTransport,
        data: bytes,
        target: tuple[str, int],
        state: _Direction,
    ) -> None:
        if not self.closed and not out.is_closing():
            out.sendto(data, target)
            state.stats.sent += 1

    def stats(self) -> dict[str, Any]:
        return {
            **{d: asdict(s.stats) for d, s in self.directions.items()},
            "first_seq": self.first_seq,
            "first_forwarded": self.first_forwarded,
            "cuts": self.cuts,
        }

    def close(self) -> None:
        self.closed = True
        for state in self.directions.values():
            if state.timer is not None:
                state.timer.cancel()
            state.in_order.clear()
        for side in (self.seat_side, self.server_side):
            if side.transport is not None:
                side.transport.close()


@dataclass
class Relay:
    """Every link of one relay, by name (in-process use, or inside the relay process)."""

    links: dict[str, Link] = field(default_factory=dict)
    closed_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    controllers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def open(
        self,
        name: str,
        up: Impairment,
        down: Impairment,
        seed: int,
        seat_addr: tuple[str, int] | None = None,
        server_addr: tuple[str, int] | None = None,
    ) -> Link:
        if name in self.links:
            raise ValueError(f"link {name!r} is open already")
        link = Link(name, up, down, seed, seat_addr, server_addr)
        await link.open()
        self.links[name] = link
        return link

    def close(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            self.closed_stats[name] = link.stats()
            link.close()

    def close_all(self) -> None:
        for name in list(self.links):
            self.close(name)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {**self.closed_stats, **{n: link.stats() for n, link in self.links.items()}}

    # -- the control protocol: one JSON object per line, answered by one line ------------

    async def command(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "open":
            link = await self.open(
                str(request["name"]),
                Impairment.from_json(request.get("up")),
                Impairment.from_json(request.get("down")),
                int(request.get("seed", 0)),
                _addr(request.get("seat")),
                _addr(request.get("server")),
            )
            return {"seat_port": link.seat_port, "server_port": link.server_port}
        if op == "target":
            self.links[str(request["name"])].server_addr = _addr(request["server"])
            return {}
        if op == "outage":
            start = float(request.get("start") or time.time())
            for name in request["names"]:
                if name in self.links:
                    self.links[name].add_outage(start, float(request["seconds"]))
            return {"start": start}
        if op == "close":
            self.close(str(request["name"]))
            return {}
        if op == "stats":
            return {"links": self.stats()}
        raise ValueError(f"unknown op {op!r}")

    async def serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.controllers.add(writer)
        try:
            while line := await reader.readline():
                try:
                    reply = {"ok": True, **await self.command(json.loads(line))}
                except Exception as exc:  # a bad request is answered, the relay goes on
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass  # the controller went away
        finally:
            self.controllers.discard(writer)
            writer.close()


def _rtp_seq(data: bytes) -> int | None:
    """The sequence number if `data` is an RTP (not RTCP, STUN or DTLS) packet, also
    inside a TURN ChannelData message (RFC 8656 §12.4: channel 0x4000-0x4FFF, length)."""
    if len(data) >= 16 and 0x40 <= data[0] <= 0x4F:
        data = data[4:]
    if len(data) >= 12 and data[0] & 0xC0 == 0x80 and not 64 <= data[1] & 0x7F < 96:
        return int.from_bytes(data[2:4], "big")
    return None


def _addr(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    host, port = value
    if not str(host).startswith("127."):
        raise ValueError(f"the relay only talks to loopback addresses, not {host!r}")
    return str(host), int(port)


# -- SDP: point a peer at the relay ---------------------------------------------------------

_CANDIDATE = re.compile(
    r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ host.*)$", re.IGNORECASE | re.MULTILINE
)


def host_candidate(sdp: str) -> tuple[str, int]:
    """The (address, port) of the first UDP host candidate in `sdp`."""
    match = _CANDIDATE.search(sdp)
    if match is None:
        raise ValueError("the description has no UDP host candidate")
    return match.group(2), int(match.group(3))


def rewrite_candidates(sdp: str, port: int, host: str = HOST) -> str:
    """`sdp` with every UDP host candidate (and the c=/m= defaults) at host:port."""
    sdp = _CANDIDATE.sub(lambda m: f"{m.group(1)}{host} {port}{m.group(4)}", sdp)
    sdp = re.sub(r"^(m=audio )\d+", rf"\g<1>{port}", sdp, flags=re.MULTILINE)
    return re.sub(r"^c=IN IP4 \S+", f"c=IN IP4 {host}", sdp, flags=re.MULTILINE)


# -- the relay as its own process -------------------------------------------------------------


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    control_port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_relay_process() -> RelayProcess:
    """Start `python netimpair.py` and wait for its control port."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--control-port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if not line.startswith("control-port "):
        process.kill()
        raise RuntimeError(f"the relay process did not start: {line!r}")
    return RelayProcess(process, int(line.split()[1]))


class RelayClient:
    """Talks to a relay process; one request at a time per client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        async with self._lock:
            if self._streams is None:
                self._streams = await asyncio.open_connection(HOST, self.port)
            reader, writer = self._streams
            writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            await writer.drain()
            reply: dict[str, Any] = json.loads(await reader.readline())
        if not reply.pop("ok", False):
            raise RuntimeError(f"relay {op}: {reply.get('error')}")
        return reply

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            with contextlib.suppress(Exception):
                await self._streams[1].wait_closed()
            self._streams = None


async def _serve(port: int) -> None:
    relay = Relay()
    server = await asyncio.start_server(relay.serve_control, HOST, port)
    chosen = server.sockets[0].getsockname()[1]
    print(f"control-port {chosen}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
        for writer in list(relay.controllers):
            writer.transport.abort()  # each handler then ends by itself, uncancelled
        for _ in range(100):  # at most 1 s
            if not relay.controllers:
                break
            await asyncio.sleep(0.01)
    relay.close_all()


def main() -> None:
    parser = argparse.ArgumentParser(description="UDP impairment relay on 127.0.0.1")
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve(args.control_port))


if __name__ == "__main__":
    main()
