"""This process as a node of a cluster (owner: app.py's cleanup context).

It registers itself in `nodes` and heartbeats every `node_heartbeat_s`; it claims the
lease of every room it seats a connection in and frees it when the room closes; and it
runs a reaper every `node_reap_interval_s` that declares dead any node silent for
`node_dead_after_s`: in one transaction (`ClusterStore.reap`) that node's takes become
`interrupted` and its rooms free, then `on_reaped` queues their finalization (from
shared storage: the dead node's disk is out of reach). A room is run by the node that
holds its lease and by no other: a node that does not hold it refuses the connection
(`WrongNode`), whatever routed it there.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from storyroom.cluster.leases import NodeUnavailable, RoomGuards, WrongNode
from storyroom.cluster.store import ClusterStore, Reaped
from storyroom.config import Settings
from storyroom.ids import new_id
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"
"""In the data folder: the id a node without `node_id` made up at its first start, so
that a restart on the same folder is the same node and takes over what it left at once
(without waiting for the reaper)."""


def local_node_id(data_dir: Path) -> str:
    """This data folder's node id, made (`node_<hex>`, exclusive create) on first use."""
    path = data_dir / NODE_ID_FILE
    try:
        return path.read_text("utf-8").strip()
    except FileNotFoundError:
        pass
    node_id = new_id("node")
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(node_id + "\n")
    return node_id


class ClusterNode(RoomGuards):
    """Heartbeat, room leases and the reaper of one node."""

    def __init__(
        self,
        settings: Settings,
        store: ClusterStore,
        on_reaped: Callable[[Reaped], Awaitable[None]],
        on_lost: Callable[[list[str]], Awaitable[None]],
    ) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self._id = settings.node_id or local_node_id(settings.data_dir)
        self._on_reaped = on_reaped
        self._on_lost = on_lost
        self.held: set[str] = set()
        """Sessions whose room this node runs (their leases are this node's)."""
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def node_id(self) -> str:
        return self._id

    releases_rooms = True

    async def rejoin(self) -> list[str]:
        """Register, and take over what this node id left behind (a restart: its takes
        interrupted, its rooms free); the takes interrupted."""
        await self.store.register(self._id, self.settings.base_url)
        previous = await self.store.reap(self._id, None)
        return list(previous.interrupted) if previous else []

    def start(self) -> None:
        """Heartbeat and reap from now on (once what the callbacks use is up)."""
        log.info("node %s up (heartbeat every %.1f s)", self._id, self.settings.node_heartbeat_s)
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="node-heartbeat"),
            asyncio.create_task(self._reaper(), name="node-reaper"),
        ]

    async def close(self) -> None:
        """Stop the tasks and give up every room still held (after the rooms stopped)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        for session_id in sorted(self.held):
            try:
                await self.store.release(session_id, self._id)
            except Exception:
                # the reaper frees them once this node's heartbeats stop
                log.warning("room %s: lease not released at shutdown", session_id, exc_info=True)
        self.held.clear()

    def holds(self, session_id: str) -> bool:
        return session_id in self.held

    async def claim(self, session_id: str) -> None:
        holder = await self.store.claim(session_id, self._id)
        if holder == self._id:
            self.held.add(session_id)
            return
        if holder is None:
            raise NodeUnavailable(
                "This server is rejoining its cluster. Please wait a moment.", status=503
            )
        log.info("room %s is on node %s: refused here", session_id, holder)
        raise WrongNode(holder)

    async def release(self, session_id: str) -> None:
        self.held.discard(session_id)
        await self.store.release(session_id, self._id)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.node_heartbeat_s)
            try:
                alive = await self.store.heartbeat(self._id)
            except Exception:
                # the database is away: try again at the next beat (the reaper elsewhere
                # decides whether this node is dead)
                log.warning("node %s: heartbeat failed", self._id, exc_info=True)
                continue
            if not alive:
                await self._lost()

    async def _lost(self) -> None:
        """The cluster declared this node dead while it ran: its rooms belong to nobody
        now, its takes are interrupted. It lets them go and joins again, afresh."""
        lost, self.held = sorted(self.held), set()
        log.error("node %s was declared dead; letting go of rooms %s", self._id, lost)
        await self._on_lost(lost)
        await self.store.register(self._id, self.settings.base_url)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.node_reap_interval_s)
            try:
                await self.reap_once()
            except Exception:
                log.warning("node %s: reaping failed", self._id, exc_info=True)

    async def reap_once(self) -> list[Reaped]:
        """Declare dead every node silent for `node_dead_after_s`; what each reap did."""
        done = []
        for node_id in await self.store.overdue(self.settings.node_dead_after_s):
            if node_id == self._id:
                continue  # this node's own beats are late (a busy loop), it is not dead
            reaped = await self.store.reap(node_id, self.settings.node_dead_after_s)
            if reaped is None:
                continue
            log.warning(
                "node %s declared dead: takes %s interrupted, rooms %s free",
                node_id,
                list(reaped.interrupted),
                list(reaped.freed),
            )
            done.append(reaped)
            await self._on_reaped(reaped)
        return done
