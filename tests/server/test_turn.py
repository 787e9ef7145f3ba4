"""TURN through a real coturn on loopback: seats forced to relay-only ICE reach the
server through coturn with the credentials their own snapshot carries, audio flows
both ways and is recorded, a seat outlives coturn's allocation, permission and channel
lifetimes, and coturn refuses credentials that are not a seat's own and current."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aioice.stun
import aioice.turn
import pytest
from conftest import Launch

from storyroom.config import Settings
from storyroom.media.turn import rest_credential, rest_username, seat_turn_server
from support.browser import (
    assert_hears,
    seat_page,
    turn_on_microphone,
    with_raw_audio,
)
from support.coturn import (
    Coturn,
    aioice_channel_refresh,
    ice_configuration,
    selected_candidate_types,
    start_coturn,
)
from support.media import (
    RATE,
    TONES,
    SeatPeer,
    audio_sent,
    decode_stem,
    dominant_frequency,
    start_recording,
    stop_recording,
    tone_room,
)
from support.polling import wait_for, wait_until
from support.server import (
    CONSENT,
    RunningServer,
    SeatClient,
    close_clients,
    create_session,
    seat_clients,
    serving,
)

SECRET = "turn-test-secret-0123456789"


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    with start_coturn(tmp_path / "coturn", secret=SECRET) as server:
        yield server


def relay_server(
    tmp_path: Path, coturn: Coturn, **overrides: Any
) -> contextlib.AbstractAsyncContextManager[RunningServer]:
    """A storyroom server that hands out `coturn` and tells every seat to relay only."""
    return serving(
        tmp_path / "data",
        turn_urls=coturn.url,
        turn_secret=coturn.secret,
        ice_transport_policy="relay",
        **overrides,
    )


def turn_entry(snapshot: dict[str, Any]) -> dict[str, Any]:
    entries = [s for s in snapshot["ice_servers"] if s["urls"][0].startswith("turn")]
    assert len(entries) == 1, snapshot["ice_servers"]
    return entries[0]


def relay_room(
    server: RunningServer,
    created: dict[str, Any] | None = None,
    seats: tuple[str, ...] = tuple(TONES),
) -> contextlib.AbstractAsyncContextManager[tuple[dict[str, SeatClient], dict[str, SeatPeer]]]:
    """`seats` as aiortc peers, each configured from its own snapshot (its TURN server,
    relay only)."""
    return tone_room(
        server.url, created, seats, configure=lambda client: ice_configuration(client.last)
    )


def hears_everyone(peers: dict[str, SeatPeer], seconds: float) -> bool:
    return all(
        len(peer.samples_from(source)) > RATE * seconds
        for peer in peers.values()
        for source in peer.mids.values()
        if source in peers
    )


def assert_tones(peers: dict[str, SeatPeer], last_seconds: float = 1.0) -> None:
    for seat, peer in peers.items():
        for source in (s for s in peer.mids.values() if s in peers):
            freq = dominant_frequency(peer.samples_from(source, last_seconds=last_seconds))
            assert freq == pytest.approx(TONES[source], abs=5), (seat, source, freq)


def allocated_usernames(coturn: Coturn) -> list[str]:
    return re.findall(r"session \d+: new, realm=<[^>]*>, username=<([^>]*)>", coturn.log())


# -- credentials in snapshots ----------------------------------------------------------


async def test_each_seat_gets_its_own_time_limited_credentials(
    tmp_path: Path, coturn: Coturn
) -> None:
    async with relay_server(tmp_path, coturn, ice_servers="stun:127.0.0.1:3478") as server:
        created = await create_session(server.url)
        clients = await seat_clients(server.url, created)
        # more snapshots: a consent change goes to every seat
        assert (await clients["a"].call("consent", CONSENT))["ok"]
        for seat in clients:
            await clients[seat].wait(lambda s: s["seats"]["a"]["consent"], "a's consent")
        for seat, client in clients.items():
            assert len(client.snapshots) >= 2
            for snapshot in client.snapshots:
                assert snapshot["ice_transport_policy"] == "relay"
                # configured STUN servers first, then this seat's own TURN entry
                assert snapshot["ice_servers"][0] == {"urls": ["stun:127.0.0.1:3478"]}
                entry = turn_entry(snapshot)
                assert entry["urls"] == [coturn.url]
                expiry, who = entry["username"].split(":", 1)
                assert who == f"{created['id']}.{seat}"
                assert int(expiry) == pytest.approx(time.time() + 12 * 3600, abs=120)
                digest = hmac.new(SECRET.encode(), entry["username"].encode(), hashlib.sha1)
                assert entry["credential"] == base64.b64encode(digest.digest()).decode()
            # nothing another seat received names this seat, and the reverse
            others = [s for other, c in clients.items() if other != seat for s in c.snapshots]
            assert all(f".{seat}" not in turn_entry(s)["username"] for s in others)
        await close_clients(clients)


async def test_long_term_credentials_are_the_same_for_every_seat(tmp_path: Path) -> None:
    async with serving(
        tmp_path / "data",
        turn_urls="turn:127.0.0.1:3478?transport=udp",
        turn_username="storyroom",
        turn_password="long-term-password",
    ) as server:
        clients = await seat_clients(server.url, await create_session(server.url))
        for client in clients.values():
            assert client.last["ice_transport_policy"] == "all"
            assert turn_entry(client.last) == {
                "urls": ["turn:127.0.0.1:3478?transport=udp"],
                "username": "storyroom",
                "credential": "long-term-password",
            }
        await close_clients(clients)


# -- aiortc seats through coturn ---------------------------------------------------------


async def test_aiortc_seats_relay_only_through_coturn_and_are_recorded(
    tmp_path: Path, coturn: Coturn
) -> None:
    async with relay_server(tmp_path, coturn) as server:
        created = await create_session(server.url)
        async with relay_room(server, created) as (clients, peers):
            await wait_for(lambda: hears_everyone(peers, 1.5), timeout=30, what="1.5 s each")
            assert_tones(peers)
            for seat, peer in peers.items():
                gathered = peer.pc.getTransceivers()[0].sender.transport.transport
                types = {c.type for c in gathered.iceGatherer.getLocalCandidates()}
                assert types == {"relay"}, (seat, types)
                assert selected_candidate_types(peer.pc) == ("relay", "host"), seat
            # coturn allocated once per seat, each under that seat's own name
            names = allocated_usernames(coturn)
            assert sorted(n.split(":", 1)[1] for n in names) == [
                f"{created['id']}.{seat}" for seat in ("a", "b", "facilitator")
            ]
            assert coturn.allocations() == 3

            rec_dir = await start_recording(server.settings.recordings_dir, clients)
            started = audio_sent(peers)
            await wait_until(time.monotonic() + 2.5)
            stopping = audio_sent(peers)
            await stop_recording(clients, rec_dir)
            # each stem holds what its seat sent while recording, less what was on its way
            for seat in TONES:
                audio = decode_stem(rec_dir, seat)
                sent = stopping[seat] - started[seat]
                assert len(audio) / RATE > sent - 0.5, (seat, len(audio) / RATE, sent)
                assert dominant_frequency(audio[-RATE:]) == pytest.approx(TONES[seat], abs=5)
        # closing the peer connections gives the allocations back
        await wait_for(lambda: coturn.allocations() == 0, timeout=30, what="allocations freed")


@pytest.mark.slow
async def test_a_seat_outlives_allocation_permission_and_channel_lifetimes(
    tmp_path: Path,
) -> None:
    lifetime = 30  # coturn's allocation, permission and channel lifetimes alike
    with (
        start_coturn(
            tmp_path / "coturn",
            secret=SECRET,
            allocate_lifetime_s=lifetime,
            channel_lifetime_s=lifetime,
            permission_lifetime_s=lifetime,
        ) as coturn,
        aioice_channel_refresh(lifetime // 3),
    ):
        async with relay_server(tmp_path, coturn) as server:
            created = await create_session(server.url)
            async with relay_room(server, created) as (clients, peers):
                await wait_for(lambda: hears_everyone(peers, 1.0), timeout=30, what="audio")
                heard_before = {
                    (seat, source): len(peer.samples_from(source))
                    for seat, peer in peers.items()
                    for source in peer.mids.values()
                }
                sent_before = audio_sent(peers)
                rec_dir = await start_recording(server.settings.recordings_dir, clients)
                recording_from = audio_sent(peers)
                # three lifetimes: without refreshes the relay would have gone twice over
                await wait_until(time.monotonic() + 3 * lifetime + 5)
                recording_to = audio_sent(peers)
                await stop_recording(clients, rec_dir)
                assert_tones(peers, last_seconds=1.0)
                for peer in peers.values():
                    assert peer.pc.connectionState == "connected"
                # each seat heard each other seat the whole time, without a gap: all that
                # the other seat sent meanwhile, but for what is still on its way
                for (seat, source), before in heard_before.items():
                    heard = (len(peers[seat].samples_from(source)) - before) / RATE
                    sent = peers[source].tone.sent_s - sent_before[source]
                    assert heard > sent - 2.0, (seat, source, heard, sent)
                # every seat refreshed its allocation and re-bound its channel, and coturn
                # never dropped a permission
                log = coturn.log()
                for seat in peers:
                    name = re.escape(f"{created['id']}.{seat}")
                    refreshes = re.findall(
                        rf"refreshed, .*username=<\d+:{name}>, lifetime=[1-9]", log
                    )
                    binds = re.findall(
                        rf"user <\d+:{name}>: .*CHANNEL_BIND processed, success", log
                    )
                    assert len(refreshes) >= 2, (seat, refreshes)
                    assert len(binds) >= 4, (seat, binds)
                assert not re.search(r"peer \S+ deleted", log)
                # nothing lost: each stem holds all its seat sent while recording
                for seat in peers:
                    stem_s = len(decode_stem(rec_dir, seat)) / RATE
                    sent = recording_to[seat] - recording_from[seat]
                    assert stem_s > sent - 2.0, (seat, stem_s, sent)


# -- Chromium through coturn -------------------------------------------------------------


@pytest.mark.slow
async def test_chromium_relay_only_through_coturn(tmp_path: Path, chromium: Launch) -> None:
    lifetime = 20  # Chromium refreshes an allocation this short after half of it
    browser = await chromium(TONES["a"])
    with start_coturn(tmp_path / "coturn", secret=SECRET, allocate_lifetime_s=lifetime) as coturn:
        async with relay_server(tmp_path, coturn) as server:
            created = await create_session(server.url)
            link = with_raw_audio(created["seats"]["a"]["url"])
            async with (
                relay_room(server, created, ("b", "facilitator")) as (clients, peers),
                seat_page(browser, link, "a") as a,
            ):
                page = a.page
                await turn_on_microphone(page)
                await assert_hears(page, ["b", "facilitator"])
                config = await page.evaluate("() => window.storyroom.client.pc.getConfiguration()")
                assert config["iceTransportPolicy"] == "relay"
                assert [s["username"].split(":", 1)[1] for s in config["iceServers"]] == [
                    f"{created['id']}.a"
                ]
                assert await page.evaluate(SELECTED_PAIR_JS) == {"local": "relay", "remote": "host"}
                # a's fake microphone reaches the aiortc seats through coturn
                await wait_for(
                    lambda: len(peers["facilitator"].samples_from("a")) > RATE * 1.5,
                    timeout=30,
                    what="a's voice at the facilitator",
                )
                for peer in peers.values():
                    heard = dominant_frequency(peer.samples_from("a", last_seconds=1.0))
                    assert heard == pytest.approx(TONES["a"], abs=5)
                consent = await page.evaluate(
                    "(consent) => window.storyroom.client.consent(consent)", CONSENT
                )
                assert consent["ok"], consent
                rec_dir = await start_recording(server.settings.recordings_dir, clients)
                await wait_until(time.monotonic() + lifetime + 2)
                await stop_recording(clients, rec_dir)
                audio = decode_stem(rec_dir, "a")
                assert dominant_frequency(audio[-RATE:]) == pytest.approx(TONES["a"], abs=5)
                # Chromium refreshed its allocation with its minted credentials, and still hears
                name = re.escape(f"{created['id']}.a")
                assert re.search(
                    rf"refreshed, .*username=<\d+:{name}>, lifetime=[1-9]", coturn.log()
                )
                await assert_hears(page, ["b", "facilitator"])
                a.watch.assert_clean()


SELECTED_PAIR_JS = """async () => {
    const stats = await window.storyroom.client.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) {
            pair = stats.get(s.selectedCandidatePairId);
        }
    });
    if (!pair) return null;
    return {local: stats.get(pair.localCandidateId).candidateType,
            remote: stats.get(pair.remoteCandidateId).candidateType};
}"""


# -- coturn refuses what is not a seat's own, current credential --------------------------


def rest_settings(coturn: Coturn) -> Settings:
    assert coturn.secret is not None
    return Settings.load(environ={}, turn_urls=coturn.url, turn_secret=coturn.secret)


def minted(coturn: Coturn, seat: str = "a", now: float | None = None) -> tuple[str, str]:
    entry = seat_turn_server(rest_settings(coturn), "ses_0123456789abcdef", seat, now)
    assert entry is not None and entry.username and entry.credential
    return entry.username, entry.credential


def expired(coturn: Coturn) -> tuple[str, str]:
    return minted(coturn, now=time.time() - rest_settings(coturn).turn_ttl_s - 60)


def forged(coturn: Coturn) -> tuple[str, str]:
    username, _ = minted(coturn)
    return username, rest_credential("not-the-secret", username)


def other_seats_name(coturn: Coturn) -> tuple[str, str]:
    _, credential = minted(coturn, "a")
    username, _ = minted(coturn, "b")
    return username, credential


def later_expiry(coturn: Coturn) -> tuple[str, str]:
    username, credential = minted(coturn)
    expiry, who = username.split(":", 1)
    return f"{int(expiry) + 86400}:{who}", credential


CASES: list[tuple[str, Callable[[Coturn], tuple[str | None, str | None]], int | None]] = [
    ("minted for this seat now", minted, None),
    ("expired", expired, 401),
    ("forged with another secret", forged, 401),
    ("another seat's name with this seat's credential", other_seats_name, 401),
    ("expiry moved later, credential kept", later_expiry, 401),
    ("no credentials", lambda _: (None, None), 401),
]


@contextlib.asynccontextmanager
async def turn_client(
    coturn: Coturn, username: str | None, password: str | None
) -> AsyncIterator[aioice.turn.TurnClientUdpProtocol]:
    """aioice's own TURN client over UDP, not yet allocated."""
    server = ("127.0.0.1", coturn.port)
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: aioice.turn.TurnClientUdpProtocol(
            server, username, password, lifetime=600, channel_refresh_time=500
        ),
        remote_addr=server,
    )
    try:
        yield client
    finally:
        transport.close()


async def allocate(coturn: Coturn, username: str | None, password: str | None) -> int | None:
    """Ask coturn for an allocation (then give it back): None when granted, else its error code."""
    async with turn_client(coturn, username, password) as client:
        try:
            await client.connect()
        except aioice.stun.TransactionFailed as exc:
            return exc.response.error_code
        await client.delete()
        return None


@pytest.mark.parametrize(("case", "credentials", "refusal"), CASES, ids=[c[0] for c in CASES])
async def test_coturn_accepts_only_current_seat_credentials(
    coturn: Coturn,
    case: str,
    credentials: Callable[[Coturn], tuple[str | None, str | None]],
    refusal: int | None,
) -> None:
    assert await allocate(coturn, *credentials(coturn)) == refusal, case


@pytest.mark.parametrize(
    ("username", "password", "refusal"),
    [
        ("storyroom", "long-term-password", None),
        ("storyroom", "wrong-password", 401),
        ("stranger", "long-term-password", 401),
    ],
)
async def test_coturn_long_term_users(
    tmp_path: Path, username: str, password: str, refusal: int | None
) -> None:
    with start_coturn(
        tmp_path / "coturn", secret=None, users={"storyroom": "long-term-password"}
    ) as coturn:
        assert await allocate(coturn, username, password) == refusal


async def test_an_expired_credential_keeps_its_allocation_but_gets_no_new_one(
    coturn: Coturn,
) -> None:
    """coturn 4.6.1 checks a REST credential's expiry when it first authenticates it (a
    new allocation) and keeps the key for that allocation's life: a seat's relay outlives
    its credential, and a new peer connection needs the fresh one from the latest
    snapshot."""
    assert coturn.secret is not None
    expires_at = time.time() + 3
    username = rest_username("ses_0123456789abcdef", "a", expires_at)
    password = rest_credential(coturn.secret, username)
    async with turn_client(coturn, username, password) as client:
        await client.connect()  # valid now
        await wait_for(lambda: time.time() > int(expires_at) + 1.5, timeout=10, what="expiry")
        refresh = aioice.stun.Message(
            message_method=aioice.stun.Method.REFRESH, message_class=aioice.stun.Class.REQUEST
        )
        refresh.attributes["LIFETIME"] = 600
        response, _ = await client.request_with_retry(refresh)
        assert response.attributes["LIFETIME"] == 600
        assert await allocate(coturn, username, password) == 401
        await client.delete()
