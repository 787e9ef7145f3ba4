"""Room leases on PostgreSQL: a free room is won by exactly one of two nodes claiming it
at once; a node that does not hold a room refuses its seats with `wrong_node` and the
holder's id; a room left empty is freed for the next node; the reaper declares a silent
node dead and, in one transaction, interrupts its takes and frees its rooms; bad `node`
pins are refused with a clear code. Two real servers share one database here (in this
process, on loopback); tests/server/test_cluster_failover.py runs them as processes
behind HAProxy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storyroom.app import STORE_MODULES
from storyroom.cluster.store import ClusterStore
from storyroom.database import open_database
from storyroom.recording import layout
from storyroom.store import RecordingRow, SessionRow, Store
from support.media import start_recording, tone_room
from support.polling import wait_for
from support.postgres import Postgres
from support.server import (
    RunningServer,
    SeatClient,
    create_session,
    refused_connect,
    serving,
)

pytestmark = pytest.mark.cluster

FAST = {
    "node_heartbeat_s": "0.2",
    # never reached by a live node, however busy the machine: the tests that need a
    # node declared dead do it themselves (`ClusterStore.reap`)
    "node_dead_after_s": "60",
    "node_reap_interval_s": "0.2",
    "reconnect_grace_s": "0.5",  # a room left empty goes after this
}


async def _schema(url: str) -> None:
    store = await Store.open(url, modules=STORE_MODULES)
    await store.close()


async def _sessions(url: str, count: int) -> list[str]:
    store = await Store.open(url, modules=STORE_MODULES)
    try:
        ids = [f"s{i:03d}" for i in range(count)]
        for session_id in ids:
            await store.create_session(
                SessionRow(session_id, "t", "en", 40, [], [], time.time()), []
            )
        return ids
    finally:
        await store.close()


async def _cluster_store(url: str) -> ClusterStore:
    return ClusterStore(await open_database(url))


async def test_two_nodes_claiming_a_free_room_at_once_exactly_one_wins(postgres: Postgres) -> None:
    url = postgres.new_database()
    await _schema(url)
    sessions = await _sessions(url, 40)
    one, two = await _cluster_store(url), await _cluster_store(url)
    try:
        await one.register("n1", "http://127.0.0.1:1")
        await two.register("n2", "http://127.0.0.1:2")
        wins = {"n1": 0, "n2": 0}
        for session_id in sessions:
            # two connections, two transactions in flight at once
            seen = await asyncio.gather(one.claim(session_id, "n1"), two.claim(session_id, "n2"))
            assert seen[0] == seen[1] and seen[0] in wins, seen
            wins[str(seen[0])] += 1
            # whoever lost still loses on a second try; the winner keeps it
            assert await one.claim(session_id, "n1") == seen[0]
            assert await two.claim(session_id, "n2") == seen[0]
        print(f"40 races: n1 won {wins['n1']}, n2 won {wins['n2']}")
        assert sum(wins.values()) == 40
        # released by its holder only
        loser = "n2" if seen[0] == "n1" else "n1"
        store = one if loser == "n1" else two
        assert not await store.release(sessions[-1], loser)
        holder = one if seen[0] == "n1" else two
        assert await holder.release(sessions[-1], str(seen[0]))
        assert await store.claim(sessions[-1], loser) == loser
    finally:
        await one.close()
        await two.close()


async def test_the_reaper_interrupts_a_silent_nodes_takes_and_frees_its_rooms_at_once(
    postgres: Postgres,
) -> None:
    url = postgres.new_database()
    await _schema(url)
    taken, other = await _sessions(url, 2)
    store = await Store.open(url, modules=STORE_MODULES)
    live, dead = await _cluster_store(url), await _cluster_store(url)
    try:
        await live.register("n1", "http://127.0.0.1:1")
        await dead.register("n2", "http://127.0.0.1:2")
        assert await dead.claim(taken, "n2") == "n2"
        assert await live.claim(other, "n1") == "n1"
        for session_id in (taken, other):
            await store.insert_recording(
                RecordingRow(
                    f"rec_{session_id}",
                    session_id,
                    1,
                    "recording",
                    time.time(),
                    None,
                    0.0,
                    time.time(),
                    None,
                )
            )
        # n1 keeps beating; n2 falls silent
        assert await live.reap("n2", 30.0) is None  # not overdue yet: nothing happens

        async def overdue() -> list[str]:
            assert await live.heartbeat("n1")
            return await live.overdue(0.5)

        assert await wait_for(overdue, timeout=10, interval=0.1) == ["n2"]
        both = await asyncio.gather(live.reap("n2", 0.5), live.reap("n2", 0.5))
        reaped = [r for r in both if r is not None]
        assert len(reaped) == 1, both  # two reapers at once: one does it
        assert reaped[0].interrupted == (f"rec_{taken}",)
        assert reaped[0].freed == (taken,)
        rows = {r.session_id: r for r in await store.recordings_for(taken)}
        assert rows[taken].status == "interrupted"
        assert "node" in (rows[taken].status_reason or "")
        # the live node's take and room are untouched
        assert (await store.recordings_for(other))[0].status == "recording"
        assert await live.claim(other, "n1") == "n1"
        # the room is free for a live node; the dead one hears it is dead and claims nothing
        assert await live.claim(taken, "n1") == "n1"
        assert not await dead.heartbeat("n2")
        assert await dead.claim(other, "n2") == "n1"
        row = await live.node("n2")
        assert row is not None and row.dead_at is not None
    finally:
        await store.close()
        await live.close()
        await dead.close()


@pytest.fixture
async def two_nodes(
    postgres: Postgres, tmp_path: Path
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    url = postgres.new_database()
    async with (
        serving(tmp_path / "n1", database_url=url, node_id="n1", **FAST) as one,
        serving(tmp_path / "n2", database_url=url, node_id="n2", **FAST) as two,
    ):
        yield one, two


async def test_a_node_without_the_lease_refuses_seats_with_the_holders_id(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    one, two = two_nodes
    created = await create_session(one.url)
    token = created["seats"]["a"]["token"]
    a = SeatClient(one.url, token)
    await a.connect()
    try:
        refused = await refused_connect(two.url, {"token": created["seats"]["b"]["token"]})
        assert refused["data"] == {"code": "wrong_node", "node": "n1"}, refused
        # a pin does not move a room: the lease does
        refused = await refused_connect(
            f"{two.url}/?session={created['id']}&node=n2",
            {"token": created["seats"]["b"]["token"]},
        )
        assert refused["data"] == {"code": "wrong_node", "node": "n1"}, refused
    finally:
        await a.close()
    # everyone left and nothing records: n1 lets the room go, and n2 may run it
    room = created["id"]
    await wait_for(lambda: one.services.rooms.live(room) is None, what="n1 closed the room")
    b = SeatClient(two.url, created["seats"]["b"]["token"])
    await b.connect()
    try:
        assert b.last["you"] == "b"
        refused = await refused_connect(one.url, {"token": token})
        assert refused["data"] == {"code": "wrong_node", "node": "n2"}, refused
    finally:
        await b.close()


BAD_PINS = [
    ("empty", "node="),
    ("spaces", "node=n%201"),
    ("markup", "node=%3Cscript%3E"),
    ("too long", "node=" + "n" * 65),
    ("twice", "node=n1&node=n2"),
    ("leading dash", "node=-n1"),
]


@pytest.mark.parametrize(("label", "query"), BAD_PINS, ids=[b[0] for b in BAD_PINS])
async def test_a_bad_pin_is_refused_with_a_clear_code(
    two_nodes: tuple[RunningServer, RunningServer], label: str, query: str
) -> None:
    one, _ = two_nodes
    created = await create_session(one.url)
    refused = await refused_connect(
        f"{one.url}/?session={created['id']}&{query}", {"token": created["seats"]["a"]["token"]}
    )
    assert refused["data"] == {"code": "node_pin_invalid"}, (label, refused)


async def test_a_pin_naming_a_node_that_is_not_there_is_only_a_hint(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    """Well-formed pins of gone or unknown nodes: the lease decides, the seat is seated."""
    one, _ = two_nodes
    created = await create_session(one.url)
    for pin, seat in (("n9", "a"), ("node-that-died", "b")):
        client = SeatClient(
            f"{one.url}/?session={created['id']}&node={pin}", created["seats"][seat]["token"]
        )
        await client.connect()
        try:
            assert client.last["you"] == seat
        finally:
            await client.close()


async def test_seats_of_a_free_room_racing_to_two_nodes_land_on_one(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    one, two = two_nodes
    for _ in range(5):
        created = await create_session(one.url)
        clients = [
            SeatClient(one.url, created["seats"]["a"]["token"]),
            SeatClient(two.url, created["seats"]["b"]["token"]),
        ]
        outcomes = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
        try:
            seated = [c for c, o in zip(clients, outcomes, strict=True) if o is None]
            assert len(seated) == 1, outcomes  # exactly one node runs the room
            winner = one if seated[0] is clients[0] else two
            loser = two if winner is one else one
            assert winner.services.rooms.live(created["id"]) is not None
            assert loser.services.rooms.live(created["id"]) is None
        finally:
            for client in clients:
                await client.close()


async def test_a_node_restarted_under_its_id_takes_over_what_it_left_at_once(
    postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.new_database()
    await _schema(url)
    (session_id,) = await _sessions(url, 1)
    store = await Store.open(url, modules=STORE_MODULES)
    before = await _cluster_store(url)
    try:
        # what a node-1 killed mid-take left: its lease and a running take
        await before.register("n1", "http://127.0.0.1:1")
        assert await before.claim(session_id, "n1") == "n1"
        await store.insert_recording(
            RecordingRow(
                "rec_left", session_id, 1, "recording", time.time(), None, 0.0, time.time(), None
            )
        )
        # node-1 comes back at once, long before the reaper would call it dead
        async with serving(tmp_path / "n1", database_url=url, node_id="n1"):
            (rec,) = await store.recordings_for(session_id)
            assert rec.status == "interrupted"
            assert await before.claim(session_id, "other") is None  # no lease left to see
    finally:
        await store.close()
        await before.close()


async def test_a_stalled_node_declared_dead_lets_its_rooms_go(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    one, two = two_nodes
    created = await create_session(one.url)
    a = SeatClient(one.url, created["seats"]["a"]["token"])
    await a.connect()
    reaper = await _cluster_store(one.settings.database_url)
    try:
        # as if node n1 had been stalled past the dead-after time: another reaper
        # declares it dead while it still runs the room
        reaped = await reaper.reap("n1", 0.0)
        assert reaped is not None and reaped.freed == (created["id"],)
        # n1 hears it at its next heartbeat: the seat is dropped, the room let go
        await wait_for(lambda: not a.sio.connected, what="n1 dropped the seat")
        await wait_for(lambda: one.services.rooms.live(created["id"]) is None)
        # and the room is free: the seat comes back on the other node
        back = SeatClient(two.url, created["seats"]["a"]["token"])
        await back.connect()
        try:
            assert back.last["you"] == "a"

            # n1 joined again as a live node, and refuses the room it lost
            async def rejoined() -> bool:
                row = await reaper.node("n1")
                return row is not None and row.dead_at is None

            await wait_for(rejoined, what="n1 alive again")
            refused = await refused_connect(one.url, {"token": created["seats"]["b"]["token"]})
            assert refused["data"] == {"code": "wrong_node", "node": "n2"}, refused
        finally:
            await back.close()
    finally:
        await a.close()
        await reaper.close()


async def test_a_stalled_node_stops_writing_the_take_it_lost(
    two_nodes: tuple[RunningServer, RunningServer],
) -> None:
    one, _ = two_nodes
    reaper = await _cluster_store(one.settings.database_url)
    try:
        async with tone_room(one.url) as (clients, peers):
            await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30)
            rec_dir = await start_recording(one.settings.recordings_dir, clients)
            log = rec_dir / layout.RECORDING_LOG
            await wait_for(lambda: log.exists() and '"segment_open"' in log.read_text())
            reaped = await reaper.reap("n1", 0.0)
            assert reaped is not None and reaped.interrupted == (rec_dir.name,)
            # n1 hears it: its recorder closes the take as interrupted, the seats go
            await wait_for(lambda: not one.services.recorder.active, what="the take closed")
            kinds = [json.loads(line)["type"] for line in log.read_text().splitlines()]
            assert "interrupted" in kinds and "stop" not in kinds, kinds
            await wait_for(lambda: not any(c.sio.connected for c in clients.values()))
            (rec,) = await one.services.store.recordings_for(reaped.freed[0])
            assert rec.status == "interrupted"  # as the reaper left it: nothing wrote over it
    finally:
        await reaper.close()
