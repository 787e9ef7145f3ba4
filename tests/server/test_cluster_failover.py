"""Two storyroom nodes behind HAProxy (deploy/haproxy.cfg), sharing one PostgreSQL and
one S3 bucket (SeaweedFS), each with its own data folder; every process is started here
on 127.0.0.1 and stopped by pid. A room lands on one node through the proxy; a seat sent
to the other node is refused with `wrong_node` and comes in with the pin; a take records;
its node is SIGKILLed; the survivor's reaper marks the take interrupted and it is
finalized from shared storage with at most ~2 s missing at the kill; the seats come back
through the proxy to the survivor, which takes the room, and a new take records there."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiortc import RTCPeerConnection

from storyroom.recording.recorder import FLUSH_INTERVAL
from support.haproxy import check, environment, haproxy
from support.media import (
    NO_ICE_SERVERS,
    RATE,
    TONES,
    SeatPeer,
    ToneTrack,
    audio_sent,
    decode_stem,
    dominant_frequency,
    start_recording,
)
from support.polling import wait_for, wait_until
from support.postgres import Postgres
from support.process import ServerProcess, metric, serve
from support.seaweedfs import seaweed_s3
from support.server import SeatClient, call, create_session, finalized, free_port
from support.topology import connect_seat, seat_through

DEAD_AFTER_S = 6.0
CLUSTER = {
    "STORYROOM_NODE_HEARTBEAT_S": "0.5",
    "STORYROOM_NODE_DEAD_AFTER_S": str(DEAD_AFTER_S),
    "STORYROOM_NODE_REAP_INTERVAL_S": "0.5",
    "STORYROOM_LOG_LEVEL": "INFO",
}


def test_the_shipped_haproxy_config_is_valid() -> None:
    checked = check(
        environment("127.0.0.1:8000", {"node-1": "10.0.0.11:8080", "node-2": "10.0.0.12:8080"})
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # and a config HAProxy would refuse is refused: the check can fail
    broken = check(environment("127.0.0.1:8000", {"node-1": "", "node-2": "10.0.0.12:8080"}))
    assert broken.returncode != 0


@asynccontextmanager
async def _room(clients: Mapping[str, SeatClient]) -> AsyncIterator[dict[str, SeatPeer]]:
    peers = {
        seat: SeatPeer(clients[seat], ToneTrack(TONES[seat]), RTCPeerConnection(NO_ICE_SERVERS))
        for seat in clients
    }
    try:
        for peer in peers.values():
            await peer.connect()
        await wait_for(lambda: all(len(p.received) == 2 for p in peers.values()), timeout=30)
        yield peers
    finally:
        for peer in peers.values():
            await peer.close()
        for client in clients.values():
            await client.close()


def _holder(database_url: str, session_id: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT node_id FROM room_leases WHERE session_id = %s", (session_id,)
        ).fetchone()
    return str(row[0]) if row else None


@pytest.mark.cluster
@pytest.mark.slow
async def test_a_node_dies_mid_take_and_its_room_goes_on_on_the_survivor(
    postgres: Postgres, tmp_path: Path
) -> None:
    database_url = postgres.new_database()
    ports = {"node-1": free_port(), "node-2": free_port()}
    async with seaweed_s3(tmp_path / "s3") as s3:
        nodes: dict[str, ServerProcess] = {}
        try:
            for node_id, port in ports.items():
                env = {
                    **s3.settings(),
                    **CLUSTER,
                    "STORYROOM_DATABASE_URL": database_url,
                    "STORYROOM_NODE_ID": node_id,
                }
                nodes[node_id] = serve(
                    tmp_path / node_id, tmp_path / f"{node_id}.log", port=port, env=env
                )
            for node in nodes.values():
                await node.ready("/readyz", timeout=90)
            addresses = {n: f"127.0.0.1:{p}" for n, p in ports.items()}
            with haproxy(addresses, tmp_path / "haproxy.log") as proxy:
                await proxy.routes()
                created = await create_session(proxy.url)
                session_id = created["id"]
                tokens = {seat: created["seats"][seat]["token"] for seat in TONES}

                # the room lands on one node through the proxy
                a = await seat_through(proxy.url, session_id, tokens["a"], None)
                owner = _holder(database_url, session_id)
                assert owner in nodes, owner
                survivor = next(n for n in nodes if n != owner)
                # a seat sent to the other node is refused there, then comes in pinned
                b, refused = await connect_seat(
                    f"{proxy.url}/?session={session_id}&node={survivor}", tokens["b"]
                )
                assert b is None and refused == {"code": "wrong_node", "node": owner}, refused
                b = await seat_through(proxy.url, session_id, tokens["b"], owner)
                facilitator = await seat_through(proxy.url, session_id, tokens["facilitator"], None)
                assert _holder(database_url, session_id) == owner
                clients = {"a": a, "b": b, "facilitator": facilitator}
                owner_url = nodes[owner].url
                async with _room(clients) as peers:
                    before_start = audio_sent(peers)
                    rec_dir = await start_recording(tmp_path / owner / "recordings", clients)
                    rec_id = rec_dir.name
                    started = audio_sent(peers)
                    await wait_until(time.monotonic() + 6.0)
                    asked = time.monotonic()
                    lag = await metric(owner_url, "storyroom_shipping_lag_seconds")
                    killed_at = nodes[owner].signal(signal.SIGKILL)
                    at_most_lost = lag + (killed_at - asked) + 2 * FLUSH_INTERVAL
                    killed = audio_sent(peers)
                    await nodes[owner].exited(timeout=10)

                # the survivor's reaper: the take is interrupted within the dead-after time
                async def interrupted() -> bool:
                    async with aiohttp.ClientSession() as http:
                        rec = await call(http, "GET", f"{proxy.url}/api/recordings/{rec_id}")
                    return rec["status"] not in ("recording", "paused")

                await wait_for(interrupted, timeout=DEAD_AFTER_S + 30, interval=0.2)
                reaped_after = time.monotonic() - killed_at
                print(f"take {rec_id} interrupted {reaped_after:.1f} s after the kill")
                assert reaped_after >= DEAD_AFTER_S - 1.0  # never before the node is overdue
                assert _holder(database_url, session_id) is None

                # finalized from shared storage on the survivor
                rec = await finalized(nodes[survivor].url, rec_id, timeout=180)
                rebuilt = tmp_path / survivor / "recordings" / rec_id
                for seat in TONES:
                    seconds = len(decode_stem(rebuilt, seat)) / RATE
                    sent = killed[seat] - started[seat]
                    print(
                        f"{seat}: {seconds:.2f} s finalized of {sent:.2f} s sent while recording "
                        f"(at most {at_most_lost:.2f} s may be missing at the kill)"
                    )
                    assert sent - 2.0 - at_most_lost <= seconds
                    assert seconds <= killed[seat] - before_start[seat] + 0.1
                    assert dominant_frequency(decode_stem(rebuilt, seat)[-RATE:]) == pytest.approx(
                        TONES[seat], abs=5
                    )
                assert rec["duration_s"] > 3.0

                # the seats come back through the proxy (one still pinned to the dead
                # node): the survivor takes the room and the next take records there
                back = {
                    seat: await seat_through(
                        proxy.url, session_id, tokens[seat], owner if seat == "b" else None
                    )
                    for seat in TONES
                }
                assert _holder(database_url, session_id) == survivor
                snapshot = back["facilitator"].last
                assert snapshot["recording"]["state"] == "interrupted", snapshot["recording"]
                async with _room(back) as peers:
                    ack = await back["facilitator"].call("recording:start")
                    assert ack["ok"] and ack["recording"]["take"] == 2, ack
                    second = tmp_path / survivor / "recordings" / ack["recording"]["id"]
                    await wait_until(time.monotonic() + 3.0)
                    assert (await back["facilitator"].call("recording:stop"))["ok"]
                await finalized(nodes[survivor].url, second.name, timeout=180)
                for seat in TONES:
                    audio = decode_stem(second, seat)
                    assert len(audio) / RATE > 1.0
                    assert dominant_frequency(audio[-RATE:]) == pytest.approx(TONES[seat], abs=5)
        finally:
            for node in nodes.values():
                node.stop()
