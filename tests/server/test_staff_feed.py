"""The staff pages' live view of the rooms (Socket.IO namespace /staff) on one server,
without Redis: who may connect, what a page is sent, and sign-out hanging it up."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from storyroom.__main__ import demo_session
from support.polling import wait_for
from support.server import (
    AUTH,
    CONSENT,
    STAFF_TOKEN,
    RunningServer,
    call,
    close_clients,
    create_session,
    give_consent,
    refused_connect,
    seat_clients,
)
from support.staff import (
    STAFF_NAMESPACE,
    STAFF_PASSWORD,
    StaffBrowser,
    StaffSocket,
    add_staff,
    cookie_session,
    session_cookie,
    signed_in,
)

OTHER = "lee@riverside.example.org"


async def sessions_row(server: RunningServer, session_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/api/sessions", headers=AUTH) as resp:
            body = await resp.json()
    row: dict[str, Any] = next(s for s in body["sessions"] if s["id"] == session_id)
    return row


async def test_a_staff_page_follows_a_room_live(server: RunningServer) -> None:
    await add_staff(server)
    created = await create_session(server.url)
    early = await create_session(server.url, title="Already live")
    early_clients = await seat_clients(server.url, early, ("a",))
    async with signed_in(server) as staff:
        page = StaffSocket()
        await page.connect(server.url, cookie=session_cookie(staff.http))
        clients: dict[str, Any] = {}
        try:
            # a room live before the page connected is sent at connect
            await page.seen(early["id"], "the room that was live already", connected=["a"])
            clients = await seat_clients(server.url, created)
            summary = await page.seen(
                created["id"], "three seats", connected=["a", "b", "facilitator"]
            )
            row = await sessions_row(server, created["id"])
            # the same fields, the same words as the sessions list
            assert {k: row[k] for k in summary} == summary
            await give_consent(clients, CONSENT)
            assert (await clients["facilitator"].call("recording:start"))["ok"]
            await page.seen(created["id"], "the take recording", recording="recording")
            assert (await clients["facilitator"].call("recording:pause"))["ok"]
            await page.seen(created["id"], "the take paused", recording="paused")
        finally:
            await close_clients(clients)
            await close_clients(early_clients)
            await page.close()


async def test_signing_out_hangs_up_the_staff_page(server: RunningServer) -> None:
    await add_staff(server)
    async with signed_in(server) as staff:
        cookie = session_cookie(staff.http)
        page = StaffSocket()
        await page.connect(server.url, cookie=cookie)
        try:
            await staff.call("POST", "/api/staff/signout")
            closed = await wait_for(lambda: page.closed, what="closed")
            assert closed == [{"reason": "signed_out", "message": "Signed out."}]
            await wait_for(lambda: not page.sio.connected, what="the socket hung up")
        finally:
            await page.close()
        refusal = await refused_connect(
            server.url, None, STAFF_NAMESPACE, {"Cookie": f"storyroom_staff={cookie}"}
        )
        assert refusal["data"]["code"] == "unauthorized", refusal


async def test_the_operator_token_opens_the_staff_feed(server: RunningServer) -> None:
    created = await create_session(server.url)
    page = StaffSocket()
    await page.connect(server.url, auth={"token": STAFF_TOKEN})
    clients = await seat_clients(server.url, created, ("b",))
    try:
        await page.seen(created["id"], "seat b", connected=["b"])
    finally:
        await close_clients(clients)
        await page.close()


@pytest.mark.parametrize(
    ("auth", "cookie", "code"),
    [
        (None, "", "unauthorized"),  # neither a cookie nor a token
        (None, "not-a-session", "unauthorized"),
        (None, "x" * 200, "unauthorized"),
        ({"token": "wrong-token"}, "", "unauthorized"),
        ({"token": ""}, "", "bad_auth"),
        ({"token": 12345}, "", "bad_auth"),
        ({"token": "t" * 300}, "", "bad_auth"),
        ({"token": STAFF_TOKEN, "seat": "a"}, "", "bad_auth"),
        ({"staff": STAFF_TOKEN}, "", "bad_auth"),
        ("a string", "", "bad_auth"),
        ([STAFF_TOKEN], "", "bad_auth"),
    ],
)
async def test_the_staff_feed_refuses_whoever_is_not_staff(
    server: RunningServer, auth: Any, cookie: str, code: str
) -> None:
    headers = {"Cookie": f"storyroom_staff={cookie}"} if cookie else {}
    refusal = await refused_connect(server.url, auth, STAFF_NAMESPACE, headers)
    assert refusal["data"]["code"] == code, refusal
    assert refusal["message"]


async def test_a_seat_token_does_not_open_the_staff_feed(server: RunningServer) -> None:
    created = await create_session(server.url)
    token = created["seats"]["facilitator"]["token"]
    refusal = await refused_connect(server.url, {"token": token}, STAFF_NAMESPACE)
    assert refusal["data"]["code"] == "unauthorized"


async def test_a_staff_page_hears_only_its_own_organisation_s_rooms(
    server: RunningServer,
) -> None:
    await add_staff(server)  # an admin of the default organisation
    async with aiohttp.ClientSession() as http:
        await call(
            http,
            "POST",
            f"{server.url}/api/organisations",
            {"slug": "riverside", "name": "R"},
            expect=201,
        )
        body = {
            "email": OTHER,
            "password": STAFF_PASSWORD,
            "role": "admin",
            "organisation": "riverside",
        }
        await call(http, "POST", f"{server.url}/api/staff/accounts", body, expect=201)
    ours = await create_session(server.url)  # the operator's token: the default organisation
    async with signed_in(server) as staff, cookie_session() as other_http:
        other = StaffBrowser(other_http, server.url)
        assert (await other.sign_in(OTHER, STAFF_PASSWORD))[0] == 200
        theirs = await other.call("POST", "/api/sessions", demo_session(), expect=201)
        pages = {"ours": StaffSocket(), "theirs": StaffSocket(), "platform": StaffSocket()}
        await pages["ours"].connect(server.url, cookie=session_cookie(staff.http))
        await pages["theirs"].connect(server.url, cookie=session_cookie(other_http))
        await pages["platform"].connect(server.url, auth={"token": STAFF_TOKEN})
        clients: dict[str, Any] = {}
        try:
            clients = {
                "ours": await seat_clients(server.url, ours, ("a",)),
                "theirs": await seat_clients(server.url, theirs, ("a",)),
            }
            await pages["ours"].seen(ours["id"], "our room", connected=["a"])
            await pages["theirs"].seen(theirs["id"], "their room", connected=["a"])
            await pages["platform"].seen(ours["id"], "our room, for the platform", connected=["a"])
            await pages["platform"].seen(theirs["id"], "theirs, for the platform", connected=["a"])
            # each page has heard of its own room by now, and never of the other's
            assert {s["id"] for s in pages["ours"].sessions} == {ours["id"]}
            assert {s["id"] for s in pages["theirs"].sessions} == {theirs["id"]}
        finally:
            for seats in clients.values():
                await close_clients(seats)
            for page in pages.values():
                await page.close()
