"""The whole cluster of issue 15 on loopback, for the proof test and bench/cluster.py:
PostgreSQL (the caller's), SeaweedFS, Redis, two `storyroom serve` nodes (`node-1`,
`node-2`, queue in PostgreSQL, no in-process worker) behind HAProxy, and one separate
`storyroom worker`. Every process is started here on 127.0.0.1 and stopped by pid.
Also: seating a room through the proxy as the room page does (following `wrong_node`),
and a sampler of which node runs which room, read from each node's own sessions list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import socketio

from support.cluster import add_staff_member
from support.haproxy import Proxy, haproxy
from support.polling import wait_for
from support.postgres import Postgres
from support.process import ServerProcess, WorkerProcess, serve, work
from support.redis import RedisServer, running_redis
from support.seaweedfs import SeaweedS3, seaweed_s3
from support.server import AUTH, SeatClient, close_refused, free_port

NODES = ("node-1", "node-2")


@dataclass
class Cluster:
    folder: Path
    database_url: str
    s3: SeaweedS3
    redis: RedisServer
    settings: dict[str, str]
    """The STORYROOM_* settings every node and the worker share."""
    ports: dict[str, int]
    nodes: dict[str, ServerProcess] = field(default_factory=dict)
    worker: WorkerProcess | None = None
    proxy: Proxy | None = None

    def start_node(self, node_id: str) -> ServerProcess:
        """`storyroom serve` as `node_id` on its port and data folder (again, after a kill)."""
        env = {**self.settings, "STORYROOM_NODE_ID": node_id}
        node = serve(
            self.folder / node_id,
            self.folder / f"{node_id}.log",
            port=self.ports[node_id],
            env=env,
        )
        self.nodes[node_id] = node
        return node

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def holder(self, session_id: str) -> str | None:
        """The node holding the room's lease in PostgreSQL, if any."""
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT node_id FROM room_leases WHERE session_id = %s", (session_id,)
            ).fetchone()
        return str(row[0]) if row else None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self.worker is not None:
            self.worker.stop()


def worker_recordings(cluster: Cluster) -> Path:
    """Where the worker rebuilds and finalizes every take."""
    return cluster.folder / "worker" / "recordings"


@asynccontextmanager
async def running_cluster(
    folder: Path, postgres: Postgres, settings: Mapping[str, str]
) -> AsyncIterator[Cluster]:
    """The whole topology, ready (both nodes answer /readyz, HAProxy routes, the worker
    runs), with the staff member of `support.staff` added and `settings` besides the
    engines' own; all stopped by pid when the block ends."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    database_url = postgres.new_database()
    async with seaweed_s3(folder / "s3") as s3:
        with running_redis() as redis:
            shared = {
                **s3.settings(),
                **settings,
                "STORYROOM_DATABASE_URL": database_url,
                "STORYROOM_REDIS_URL": redis.url,
                "STORYROOM_QUEUE": "postgres",
                "STORYROOM_QUEUE_WORKER": "off",
            }
            cluster = Cluster(
                folder, database_url, s3, redis, shared, {n: free_port() for n in NODES}
            )
            await add_staff_member(shared, folder / "cli")
            try:
                for node_id in NODES:  # the first brings the schema up to date
                    await cluster.start_node(node_id).ready("/readyz", timeout=90)
                cluster.worker = work(folder / "worker", folder / "worker.log", shared)
                addresses = {n: f"127.0.0.1:{p}" for n, p in cluster.ports.items()}
                with haproxy(addresses, folder / "haproxy.log") as proxy:
                    cluster.proxy = proxy
                    await proxy.routes()
                    yield cluster
            finally:
                cluster.stop()


async def until_routed(cluster: Cluster, node_id: str, timeout: float = 30) -> None:
    """Wait until HAProxy's health checks last said `node_id` is up (its own log line):
    before that, a request pinned to it goes to another node."""

    def up() -> bool:
        assert cluster.proxy is not None
        said = [
            line
            for line in cluster.proxy.log().splitlines()
            if line.startswith(f"Server nodes/{node_id} is ")
        ]
        return bool(said) and said[-1].startswith(f"Server nodes/{node_id} is UP")

    await wait_for(up, timeout=timeout, interval=0.2, what=f"HAProxy routing to {node_id}")


async def connect_seat(url: str, token: str) -> tuple[SeatClient | None, dict[str, Any] | None]:
    """A seat client at `url`: connected, or the refusal's data."""
    errors: list[Any] = []
    client = SeatClient(url, token, socketio.AsyncClient(reconnection=False))
    client.sio.on("connect_error", errors.append)
    try:
        await client.connect()
    except socketio.exceptions.ConnectionError:
        await close_refused(client.sio)
        found = await wait_for(lambda: errors, what="connect_error")
        return None, found[0]["data"]
    return client, None


async def seat_through(
    proxy: str, session_id: str, token: str, pin: str | None, timeout: float = 45
) -> SeatClient:
    """Connect as the room page does: through the proxy with the session id (and a pin),
    following `wrong_node` to the pin it names; a node that is not yet free to take the
    room (its holder not yet declared dead) is tried again."""

    async def attempt() -> SeatClient | None:
        nonlocal pin
        query = f"session={session_id}" + (f"&node={pin}" if pin else "")
        client, refused = await connect_seat(f"{proxy}/?{query}", token)
        if client is not None:
            return client
        assert refused is not None and refused["code"] == "wrong_node", refused
        pin = refused["node"]
        return None

    return await wait_for(attempt, timeout=timeout, interval=0.3, what="seated through the proxy")


@dataclass
class RoomSampler:
    """Which node runs which room, sampled from each live node's own `GET /api/sessions`
    (its `connected` seats are that process's live room): a room with seats connected
    on two nodes in one sample is split."""

    cluster: Cluster
    interval: float = 0.25
    samples: int = 0
    splits: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    seen_on: dict[str, set[str]] = field(default_factory=dict)
    """Per session, every node that ever had a seat of it connected."""
    _task: asyncio.Task[None] | None = None

    async def _sample(self, http: aiohttp.ClientSession) -> None:
        where: dict[str, dict[str, list[str]]] = {}
        for node_id, node in list(self.cluster.nodes.items()):
            if node.process.poll() is not None:
                continue
            try:
                async with http.get(node.url + "/api/sessions", headers=AUTH) as resp:
                    if resp.status != 200:
                        continue
                    body = await resp.json()
            except aiohttp.ClientError:
                continue  # starting or just killed
            for session in body["sessions"]:
                if session["connected"]:
                    where.setdefault(session["id"], {})[node_id] = session["connected"]
        for session_id, on in where.items():
            self.seen_on.setdefault(session_id, set()).update(on)
            if len(on) > 1:
                self.splits.append((session_id, on))
        self.samples += 1

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                await self._sample(http)
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cancel the sampling task and wait for it (owner: the caller of `start`)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
