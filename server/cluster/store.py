"""The cluster's tables, `nodes` and `room_leases`, and the SQL on them (owner: this wing).

The tables are created on both engines (migrations run everywhere), but only a
PostgreSQL cluster reads or writes them. Every time in them is the database's clock
(`clock_timestamp()`), never a node's: nodes' clocks may disagree, the database's is
one. Each method is one transaction on the cluster's own connection, taken under one
lock (`_lock`), so no other statement of this process lands inside it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from storyroom.database import Database
from storyroom.store import (
    JobWriter,
    ModuleMigrations,
    fetch_all,
    fetch_one,
    interrupt_running,
    write_job,
)

TABLES = ModuleMigrations(
    "cluster",
    (
        """
        CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            started_at REAL NOT NULL,
            last_seen REAL NOT NULL,
            dead_at REAL                -- set once by the reaper; a node never outlives it
        );
        -- one row per room that some node runs; no row: the room is free
        CREATE TABLE room_leases (
            session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
            node_id TEXT NOT NULL REFERENCES nodes(id),
            claimed_at REAL NOT NULL
        );
        CREATE INDEX room_leases_by_node ON room_leases(node_id);
        """,
    ),
)

NOW = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"
"""The database's wall clock, in seconds (PostgreSQL only, as is everything here)."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    id: str
    address: str
    started_at: float
    last_seen: float
    dead_at: float | None


@dataclass(frozen=True, slots=True)
class Reaped:
    """What declaring one node dead did, in one transaction."""

    node_id: str
    interrupted: tuple[str, ...]
    """Its takes that were recording or paused, now `interrupted`."""
    freed: tuple[str, ...]
    """The sessions whose rooms it ran, now free."""


class ClusterStore:
    """Nodes and room leases on the cluster's own PostgreSQL connection."""

    def __init__(self, db: Database, job_writer: JobWriter | None = None) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self.job_writer = job_writer
        """With the PostgreSQL job queue: the interrupted takes' finalization jobs are
        written in the reaping transaction (`store.write_job`)."""

    async def close(self) -> None:
        await self._db.close()

    async def register(self, node_id: str, address: str) -> None:
        """A node starts (again, if it had the id before): alive from now."""
        async with self._lock:
            await self._db.execute(
                "INSERT INTO nodes (id, address, started_at, last_seen, dead_at)"
                f" VALUES (?, ?, {NOW}, {NOW}, NULL) ON CONFLICT (id) DO UPDATE SET"
                " address = excluded.address, started_at = excluded.started_at,"
                " last_seen = excluded.last_seen, dead_at = NULL",
                (node_id, address),
            )
            await self._db.commit()

    async def heartbeat(self, node_id: str) -> bool:
        """Seen now; False when the reaper declared this node dead in the meantime."""
        async with self._lock:
            cur = await self._db.execute(
                f"UPDATE nodes SET last_seen = {NOW} WHERE id = ? AND dead_at IS NULL",
                (node_id,),
            )
            await self._db.commit()
            return cur.rowcount == 1

    async def claim(self, session_id: str, node_id: str) -> str | None:
        """Take the room's lease if it is free or already this node's, in one statement
        (concurrent claims queue on the row: exactly one node wins a free room). The
        node that holds it afterwards (`node_id` when the claim won); None when nobody
        does: this node was declared dead, and claims nothing."""
        async with self._lock:
            row = await fetch_one(
                self._db,
                "INSERT INTO room_leases (session_id, node_id, claimed_at)"
                f" SELECT ?, id, {NOW} FROM nodes WHERE id = ? AND dead_at IS NULL"
                " ON CONFLICT (session_id) DO UPDATE SET claimed_at = excluded.claimed_at"
                " WHERE room_leases.node_id = excluded.node_id RETURNING node_id",
                (session_id, node_id),
            )
            if row is None:
                row = await fetch_one(
                    self._db,
                    "SELECT node_id FROM room_leases WHERE session_id = ?",
                    (session_id,),
                )
            await self._db.commit()
            return str(row[0]) if row else None

    async def release(self, session_id: str, node_id: str) -> bool:
        """Give the room up (only if this node holds it)."""
        async with self._lock:
            cur = await self._db.execute(
                "DELETE FROM room_leases WHERE session_id = ? AND node_id = ?",
                (session_id, node_id),
            )
            await self._db.commit()
            return cur.rowcount == 1

    async def node(self, node_id: str) -> NodeRow | None:
        async with self._lock:
            row = await fetch_one(self._db, "SELECT * FROM nodes WHERE id = ?", (node_id,))
            await self._db.commit()
        if row is None:
            return None
        return NodeRow(row[0], row[1], row[2], row[3], row[4])

    async def overdue(self, dead_after_s: float) -> list[str]:
        """Nodes not yet declared dead whose last heartbeat is older than `dead_after_s`."""
        async with self._lock:
            rows = await fetch_all(
                self._db,
                f"SELECT id FROM nodes WHERE dead_at IS NULL AND last_seen < {NOW} - ? ORDER BY id",
                (dead_after_s,),
            )
            await self._db.commit()
        return [str(r[0]) for r in rows]

    async def reap(self, node_id: str, dead_after_s: float | None) -> Reaped | None:
        """In one transaction: declare `node_id` dead (if it still is overdue, or
        unconditionally with `dead_after_s` None: this node's own previous life), mark
        the takes of its rooms `interrupted` and free its leases. None when another
        reaper was first or the node came back."""
        async with self._lock:
            try:
                if dead_after_s is None:
                    declared = await fetch_one(
                        self._db,
                        "SELECT id FROM nodes WHERE id = ? FOR UPDATE",
                        (node_id,),
                    )
                else:
                    # the row lock makes concurrent reapers of the same node take turns;
                    # the second finds dead_at set and does nothing
                    declared = await fetch_one(
                        self._db,
                        f"UPDATE nodes SET dead_at = {NOW} WHERE id = ? AND dead_at IS NULL"
                        f" AND last_seen < {NOW} - ? RETURNING id",
                        (node_id, dead_after_s),
                    )
                if declared is None:
                    await self._db.rollback()
                    return None
                now = await fetch_one(self._db, f"SELECT {NOW}")
                assert now is not None
                interrupted = await interrupt_running(
                    self._db,
                    float(now[0]),
                    of_sessions="SELECT session_id FROM room_leases WHERE node_id = ?",
                    params=(node_id,),
                    why="the node running this room stopped",
                )
                for rec_id in interrupted:
                    await write_job(self._db, rec_id, self.job_writer)
                freed = await fetch_all(
                    self._db,
                    "DELETE FROM room_leases WHERE node_id = ? RETURNING session_id",
                    (node_id,),
                )
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
        return Reaped(node_id, tuple(interrupted), tuple(str(r[0]) for r in freed))
