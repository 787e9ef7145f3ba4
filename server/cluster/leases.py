"""The seam between signaling and room ownership: before a connection is seated in a
room, the node must hold the room's lease (`Leases.claim`); when the room is left empty
with no take running, the lease goes (`Leases.release`). Embedded mode is one node that
owns every room (`SingleNode`); a cluster asks PostgreSQL (`node.ClusterNode`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import parse_qs

from storyroom.config import NODE_ID
from storyroom.errors import AuthError, StoryroomError

PIN_PARAMETER = "node"
"""The query parameter of the Socket.IO URL that pins a client to a node (HAProxy routes
on it; the server only checks its form: the lease decides who runs the room)."""

SESSION_PARAMETER = "session"
"""The query parameter HAProxy hashes to send a room's clients to one node."""


class WrongNode(StoryroomError, status=409, code="wrong_node"):
    """Another node runs this room: reconnect with the pin `node`."""

    def __init__(self, node: str) -> None:
        super().__init__("This conversation is on another server; reconnecting there.")
        self.node = node

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "node": self.node}


class NodeUnavailable(StoryroomError, status=503, code="node_unavailable"):
    """This node may not take rooms now (the cluster declared it dead): try again."""


class BadPin(AuthError, code="node_pin_invalid"):
    """A `node` pin that cannot be a node id."""


class Leases(Protocol):
    """Room ownership, as signaling needs it."""

    @property
    def node_id(self) -> str: ...

    @property
    def releases_rooms(self) -> bool:
        """Whether a room left empty is closed and its lease freed (a cluster), or kept
        for as long as the process runs (a single node)."""

    def guard(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """An async context in which nobody else on this node claims or releases the
        room: a connection is seated, or the room let go, without a race between them."""

    def holds(self, session_id: str) -> bool:
        """Whether this node runs the room now (as far as it knows: a node declared dead
        learns it at its next heartbeat)."""

    async def claim(self, session_id: str) -> None:
        """Hold the room's lease, else `WrongNode` (or `NodeUnavailable`)."""

    async def release(self, session_id: str) -> None:
        """The room is closed here: its lease goes."""


class RoomGuards:
    """One lock per room a node is seating or closing; dropped when nobody waits."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def guard(self, session_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)


class SingleNode(RoomGuards):
    """Embedded mode: this process is the only node and owns every room."""

    node_id = "single"
    releases_rooms = False

    def holds(self, session_id: str) -> bool:
        return True

    async def claim(self, session_id: str) -> None:
        return None

    async def release(self, session_id: str) -> None:
        return None


def parse_pin(environ: Mapping[str, Any]) -> str | None:
    """The `node` pin of a Socket.IO connect's URL, None when there is none; `BadPin`
    when it is there but cannot name a node (empty, repeated, too long, other characters)."""
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    values = query.get(PIN_PARAMETER)
    if values is None:
        return None
    if len(values) != 1 or not NODE_ID.fullmatch(values[0]):
        raise BadPin(
            "This connection names a server that cannot exist. Please reload the page.",
        )
    return values[0]
