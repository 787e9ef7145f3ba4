"""Redis fan-out between two real `storyroom serve` nodes: one PostgreSQL database and one
real redis-server (started here on 127.0.0.1, no persistence, stopped by pid).

A staff page connected to node A sees a room that lives on node B change; signing out on
A hangs up the staff socket on B; seat traffic never goes through Redis (counted with
Redis's own PUBLISH statistics); Redis killed makes /readyz and /metrics say so, and
Redis back makes them recover; a bad STORYROOM_REDIS_URL stops the server at start."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from support.cluster import Nodes, two_nodes
from support.polling import wait_for
from support.postgres import Postgres
from support.process import ServerProcess, storyroom
from support.redis import RedisServer, running_redis
from support.server import (
    CONSENT,
    STAFF_TOKEN,
    call,
    close_clients,
    create_session,
    give_consent,
    seat_clients,
)
from support.staff import (
    STAFF_EMAIL,
    StaffBrowser,
    StaffSocket,
    cookie_session,
    session_cookie,
    signed_in,
)


@pytest.fixture
async def nodes(tmp_path: Path, postgres: Postgres) -> AsyncIterator[Nodes]:
    async with two_nodes(tmp_path, postgres) as running:
        yield running


def publishes(redis: RedisServer) -> int:
    """How many PUBLISH commands Redis has run since it started."""
    stats = redis.info("commandstats").get("cmdstat_publish", "calls=0")
    return int(stats.split(",")[0].removeprefix("calls="))


async def metric(node: ServerProcess, name: str) -> float:
    """The sum of a /metrics family's samples on `node` (loopback may scrape)."""
    async with aiohttp.ClientSession() as http, http.get(node.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    ]
    assert values, f"{name} not in /metrics"
    return sum(values)


async def readyz(node: ServerProcess) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/readyz") as resp:
        return resp.status, await resp.json()


@dataclass(frozen=True)
class PublishFigures:
    """Redis's PUBLISH count read between two readings of what the nodes counted (a
    node counts a message just after Redis took it; finalization may still be sending)."""

    counted_before: float
    published: int
    counted_after: float


async def publish_figures(nodes: Nodes) -> PublishFigures:
    before = await counted(nodes)
    published = publishes(nodes.redis)
    return PublishFigures(before, published, await counted(nodes))


async def counted(nodes: Nodes) -> float:
    """What both nodes published on purpose: staff summaries and staff messages."""
    total = 0.0
    for node in (nodes.a, nodes.b):
        total += await metric(node, "storyroom_staff_updates_total")
        total += await metric(node, "storyroom_fanout_messages_total")
    return total


def redis_check(body: dict[str, Any]) -> dict[str, Any]:
    return next(check for check in body["checks"] if check["name"] == "redis")


async def test_staff_on_one_node_see_a_room_on_the_other_and_seats_stay_off_redis(
    nodes: Nodes,
) -> None:
    async with signed_in(nodes.a) as staff:
        page = StaffSocket()
        await page.connect(nodes.a.url, cookie=session_cookie(staff.http))
        try:
            created = await create_session(nodes.b.url)
            session_id = created["id"]
            # the page's resync (asked by A, answered by A and B: no live rooms yet) is done
            await wait_for(
                lambda: metric(nodes.a, "storyroom_fanout_messages_total"), what="the resync"
            )
            start = await publish_figures(nodes)
            clients = await seat_clients(nodes.b.url, created)
            try:
                await page.seen(
                    session_id,
                    "node B's room with its three seats, on node A's staff page",
                    connected=["a", "b", "facilitator"],
                )
                await give_consent(clients, CONSENT)
                ack = await clients["facilitator"].call("recording:start")
                assert ack["ok"], ack
                await page.seen(session_id, "recording on node A's page", recording="recording")
                for n in range(10):
                    ack = await clients["facilitator"].call("marker", {"label": f"m{n}"})
                    assert ack["ok"], ack
                ack = await clients["facilitator"].call("recording:stop")
                assert ack["ok"], ack
                await page.seen(
                    session_id,
                    "the take stopped, on node A's page",
                    recording=lambda status: status not in ("recording", "paused"),
                )
                seat_snapshots = sum(len(c.snapshots) for c in clients.values())
            finally:
                await close_clients(clients)
            await page.seen(session_id, "nobody left in node B's room", connected=[])
            end = await publish_figures(nodes)
            published = end.published - start.published
            least, most = (
                end.counted_before - start.counted_after,
                end.counted_after - start.counted_before,
            )
            print(
                f"\nseat snapshots sent by node B: {seat_snapshots}; staff summaries and "
                f"staff channel messages: {least:.0f}-{most:.0f}; PUBLISH calls in Redis: {published}"
            )
            # every PUBLISH is a staff summary or a staff channel message: no seat
            # snapshot, level or close went through Redis
            assert least <= published <= most, (least, published, most)
            assert seat_snapshots > most
        finally:
            await page.close()


async def test_signing_out_on_one_node_hangs_up_the_staff_socket_on_the_other(
    nodes: Nodes,
) -> None:
    async with signed_in(nodes.a) as staff:
        cookie = session_cookie(staff.http)
        # node B never saw this sign-in: it reads the session from the database
        page_b, page_a = StaffSocket(), StaffSocket()
        await page_b.connect(nodes.b.url, cookie=cookie)
        await page_a.connect(nodes.a.url, cookie=cookie)
        try:
            assert page_b.sio.connected and page_a.sio.connected
            await staff.call("POST", "/api/staff/signout")
            for page, node in ((page_b, "B"), (page_a, "A")):
                closed = await wait_for(
                    lambda page=page: page.closed, what=f"the staff socket on node {node} closed"
                )
                assert closed[0]["reason"] == "signed_out"
                await wait_for(
                    lambda page=page: not page.sio.connected,
                    what=f"node {node} hung up the staff socket",
                )
        finally:
            await page_a.close()
            await page_b.close()
        # and the session opens nothing on either node any more
        for node in (nodes.a, nodes.b):
            again = StaffSocket()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await again.connect(node.url, cookie=cookie)
            await again.close()
            async with aiohttp.ClientSession() as plain:
                async with plain.get(
                    node.url + "/api/sessions", headers={"Cookie": f"storyroom_staff={cookie}"}
                ) as resp:
                    assert resp.status == 401
    # an account removed on node A: its session's socket on node B is hung up too
    async with signed_in(nodes.b) as staff:
        page = StaffSocket()
        await page.connect(nodes.b.url, cookie=session_cookie(staff.http))
        try:
            async with aiohttp.ClientSession() as http:
                listed = await call(http, "GET", nodes.a.url + "/api/staff/accounts")
                (account,) = (a for a in listed["accounts"] if a["email"] == STAFF_EMAIL)
                await call(http, "DELETE", f"{nodes.a.url}/api/staff/accounts/{account['id']}")
            closed = await wait_for(lambda: page.closed, what="the socket on B closed")
            assert closed[0]["reason"] == "signed_out"
            await wait_for(lambda: not page.sio.connected, what="node B hung up")
        finally:
            await page.close()


async def test_an_account_locked_out_on_one_node_is_locked_out_on_the_other(
    tmp_path: Path, postgres: Postgres
) -> None:
    # three wrong passwords per account (and three attempts per address on each node)
    async with two_nodes(tmp_path, postgres, {"STORYROOM_SIGNIN_RATE_LIMIT": "3"}) as nodes:
        async with cookie_session() as a_http, cookie_session() as b_http:
            on_a, on_b = StaffBrowser(a_http, nodes.a.url), StaffBrowser(b_http, nodes.b.url)
            for staff in (on_a, on_a, on_b):
                status, body = await staff.sign_in(password="not the password")
                assert status == 401, body
            # B saw one wrong password itself and two on A: the account is locked there
            status, body = await on_b.sign_in()
            assert status == 429 and body["error"]["code"] == "rate_limited", body


async def test_redis_down_fails_readiness_with_the_reason_and_rooms_go_on(nodes: Nodes) -> None:
    for node in (nodes.a, nodes.b):
        status, body = await readyz(node)
        assert status == 200, body
        assert redis_check(body)["ok"], body
        assert await metric(node, "storyroom_redis_up") == 1.0
    created = await create_session(nodes.b.url)
    clients = await seat_clients(nodes.b.url, created)
    page = StaffSocket()
    await page.connect(nodes.a.url, auth={"token": STAFF_TOKEN})
    try:
        await give_consent(clients, CONSENT)
        nodes.redis.stop()
        for node in (nodes.a, nodes.b):
            body = (await wait_for(lambda node=node: refused(node), what="/readyz failing"))[1]
            check = redis_check(body)
            assert not check["ok"] and "redis" in body["failing"], body
            assert f"127.0.0.1:{nodes.redis.port}" in check["detail"], check
            assert await metric(node, "storyroom_redis_up") == 0.0
        # the room does not notice: its events are answered and its seats hear of them
        began = time.monotonic()
        ack = await clients["facilitator"].call("recording:start")
        assert ack["ok"], ack
        await clients["a"].wait(lambda s: s["recording"]["state"] == "recording", "recording")
        print(f"\nrecording:start with Redis down: {time.monotonic() - began:.3f} s")
        nodes.redis.start()  # the same port, empty
        for node in (nodes.a, nodes.b):
            await wait_for(lambda node=node: ready(node), timeout=60, what="/readyz back")
            assert await metric(node, "storyroom_redis_up") == 1.0
        # and the staff page on A hears of B's room again
        ack = await clients["facilitator"].call("recording:pause")
        assert ack["ok"], ack
        await page.seen(created["id"], "the pause, after Redis came back", recording="paused")
    finally:
        await page.close()
        await close_clients(clients)


async def refused(node: ServerProcess) -> tuple[int, dict[str, Any]] | None:
    status, body = await readyz(node)
    return (status, body) if status == 503 else None


async def ready(node: ServerProcess) -> bool:
    return (await readyz(node))[0] == 200


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "is not a redis:// or rediss:// URL"),
        ("http://127.0.0.1:6379", "is not a redis:// or rediss:// URL"),
        ("redis://", "is not a redis:// or rediss:// URL"),
        ("redis://127.0.0.1:99999/0", "bad port"),
        ("redis://127.0.0.1:6379/zero", "database must be a number"),
        ("redis://127.0.0.1:6379/0?timeout=1", "must not carry options"),
    ],
)
def test_a_bad_redis_url_stops_the_server_at_start(url: str, says: str) -> None:
    done = storyroom("serve", "--port", "0", env={"STORYROOM_REDIS_URL": url})
    assert done.returncode != 0
    assert says in done.stderr, done.stderr
    assert "redis_url" in done.stderr, done.stderr


def test_check_says_whether_redis_answers(tmp_path: Path) -> None:
    with running_redis() as redis:
        env = {"STORYROOM_REDIS_URL": redis.url}
        result = storyroom("check", "--data-dir", str(tmp_path / "data"), env=env)
        line = next(x for x in result.stdout.splitlines() if " redis " in f" {x} ")
        assert line.startswith("ok"), result.stdout
        assert f"127.0.0.1:{redis.port}" in line
        redis.stop()
        result = storyroom("check", "--data-dir", str(tmp_path / "data"), env=env)
        assert result.returncode != 0
        line = next(x for x in result.stdout.splitlines() if " redis " in f" {x} ")
        assert line.startswith("FAIL") and "does not answer" in line, result.stdout
