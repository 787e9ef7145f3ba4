"""A 1:1 NAT on loopback, for the announced ICE address: every UDP port of a range on
the public address forwards to the same port on the private one, and replies come back
from the public port, as a cloud VM's or a container host's NAT does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast


class _Inside(asyncio.DatagramProtocol):
    """The NAT's socket towards the server for one outside peer: replies go back out."""

    def __init__(self, nat: OneToOneNat, public: asyncio.DatagramTransport, peer: tuple[str, int]):
        self.nat = nat
        self.public = public
        self.peer = peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.nat.outbound += 1
        self.public.sendto(data, self.peer)


class _Outside(asyncio.DatagramProtocol):
    """The public port: each outside peer gets its own inside socket to the server."""

    def __init__(self, nat: OneToOneNat, port: int) -> None:
        self.nat = nat
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.inside: dict[tuple[str, int], asyncio.DatagramTransport] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.nat.inbound += 1
        inside = self.inside.get(addr)
        if inside is not None:
            inside.sendto(data)
            return
        asyncio.get_running_loop().create_task(self._open(data, addr))

    async def _open(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr not in self.inside:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Inside(self.nat, self.transport, addr),  # type: ignore[arg-type]
                local_addr=(self.nat.public_host, 0),
                remote_addr=(self.nat.private_host, self.port),
            )
            if addr in self.inside:  # a second datagram from this peer opened one meanwhile
                transport.close()
            else:
                self.inside[addr] = transport
        self.inside[addr].sendto(data)


@dataclass
class OneToOneNat:
    public_host: str
    private_host: str
    ports: range
    inbound: int = 0
    outbound: int = 0
    _outside: list[_Outside] = field(default_factory=list)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.ports:
            _, protocol = await loop.create_datagram_endpoint(
                lambda port=port: _Outside(self, port), local_addr=(self.public_host, port)
            )
            self._outside.append(protocol)

    async def close(self) -> None:
        """Close every socket (the outside ones and the inside ones they opened)."""
        for outside in self._outside:
            for inside in outside.inside.values():
                inside.close()
            if outside.transport is not None:
                outside.transport.close()
        await asyncio.sleep(0)  # transports close their sockets on the next turn
