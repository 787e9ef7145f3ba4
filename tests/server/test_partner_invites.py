"""The published invitation page's API: a person invites someone they know to a
self-guided conversation, confirming their own email first. Real server on loopback,
real Socket.IO clients, the outbox folder as the mail."""

from __future__ import annotations

import re
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.orgs import EVERY_ORGANISATION
from support.mail import outbox_messages, plain_text
from support.polling import wait_for
from support.server import RunningServer, SeatClient, call, serving

INVITE = {
    "name": "Rosa",
    "email": "rosa@example.org",
    "partner_name": "Lupe",
    "partner_email": "lupe@example.org",
    "language": "es",
}
TOKEN = re.compile(r"/invite#token=([A-Za-z0-9_-]+)")
SEAT_LINK = re.compile(r"(http://\S+/together/(ses_[0-9a-f]+)#token=([A-Za-z0-9_-]+))")


def mail(server: RunningServer) -> list[EmailMessage]:
    return outbox_messages(server.settings.outbox_dir)


async def post(url: str, path: str, body: Any, expect: int) -> Any:
    async with aiohttp.ClientSession() as http:
        return await call(http, "POST", f"{url}{path}", body, staff=False, expect=expect)


async def test_invitations_are_closed_unless_turned_on(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        status = await call(http, "GET", f"{server.url}/api/invites", staff=False)
    assert status == {"open": False}
    refused = await post(server.url, "/api/invites", INVITE, 404)
    assert refused["error"]["code"] == "invites_closed"
    refused = await post(server.url, "/api/invites/confirm", {"token": "x" * 32}, 404)
    assert refused["error"]["code"] == "invites_closed"
    assert mail(server) == []


async def test_an_invitation_becomes_a_self_guided_room_for_both(tmp_path: Path) -> None:
    async with serving(tmp_path, self_guided_invites="on") as server:
        async with aiohttp.ClientSession() as http:
            assert await call(http, "GET", f"{server.url}/api/invites", staff=False) == {
                "open": True
            }
        assert await post(server.url, "/api/invites", INVITE, 202) == {"received": True}
        # the email check: only a confirmation link, to the sender, and no session yet
        [confirmation] = await wait_for(lambda: mail(server), what="the confirmation")
        assert confirmation["To"].addresses[0].addr_spec == "rosa@example.org"
        assert "Lupe" in confirmation["Subject"]
        found = TOKEN.search(plain_text(confirmation))
        assert found is not None
        assert server.services.store is not None
        assert await server.services.store.list_sessions(EVERY_ORGANISATION) == []

        confirmed = await post(server.url, "/api/invites/confirm", {"token": found.group(1)}, 201)
        assert "/together/" in confirmed["url"]
        messages = await wait_for(
            lambda: mail(server) if len(mail(server)) == 3 else None, what="both links"
        )
        links = {}
        for message in (m for m in messages if "/together/" in plain_text(m)):
            to = message["To"].addresses[0].addr_spec
            [(_link, session_id, token)] = SEAT_LINK.findall(plain_text(message))
            assert session_id == confirmed["session_id"]
            links[to] = token
        assert set(links) == {"rosa@example.org", "lupe@example.org"}
        assert confirmed["url"].endswith(links["rosa@example.org"])
        # the partner's message names the sender, never the sender's address
        partner_mail = next(m for m in messages if "lupe@" in str(m["To"]))
        assert "Rosa" in str(partner_mail["Subject"])
        assert "rosa@example.org" not in plain_text(partner_mail)

        for address, seat, name in (
            ("rosa@example.org", "a", "Rosa"),
            ("lupe@example.org", "b", "Lupe"),
        ):
            client = SeatClient(server.url, links[address])
            await client.connect()
            try:
                snap = client.last
                assert snap["you"] == seat
                assert snap["session"]["kind"] == "self_guided"
                assert snap["session"]["language"] == "es"
                assert snap["seats"][seat]["name"] == name
            finally:
                await client.close()

        # one confirmation link makes one room
        again = await post(server.url, "/api/invites/confirm", {"token": found.group(1)}, 409)
        assert again["error"]["code"] == "already_confirmed"
        assert len(await server.services.store.list_sessions(EVERY_ORGANISATION)) == 1


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"email": "rosa"}, "invalid_email"),
        ({"partner_email": "lupe@example"}, "invalid_email"),
        ({"partner_email": "ROSA@example.org"}, "same_email"),
        ({"name": ""}, "invalid_value"),
        ({"partner_name": "x" * 41}, "too_long"),
        ({"partner_name": 7}, "invalid_type"),
        ({"language": "fr"}, "invalid_value"),
        ({"phone": "555"}, "unknown_field"),
        ({"partner_email": None}, "invalid_type"),
    ],
)
async def test_bad_invitations_are_refused(
    tmp_path: Path, changes: dict[str, Any], code: str
) -> None:
    async with serving(tmp_path, self_guided_invites="on") as server:
        refused = await post(server.url, "/api/invites", {**INVITE, **changes}, 400)
        assert refused["error"]["code"] == code
        assert mail(server) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"token": "x" * 32}, 401, "link_invalid"),
        ({"token": "short"}, 400, "invalid_value"),
        ({"token": 12345678901234567}, 400, "invalid_value"),
        ({}, 400, "missing_field"),
        ([], 400, "invalid_type"),
    ],
)
async def test_bad_confirmations_are_refused(
    tmp_path: Path, body: Any, status: int, code: str
) -> None:
    async with serving(tmp_path, self_guided_invites="on") as server:
        refused = await post(server.url, "/api/invites/confirm", body, status)
        assert refused["error"]["code"] == code
        assert await server.services.store.list_sessions(EVERY_ORGANISATION) == []


@pytest.mark.embedded_database
async def test_an_old_confirmation_link_has_expired(tmp_path: Path) -> None:
    async with serving(tmp_path, self_guided_invites="on") as server:
        await post(server.url, "/api/invites", INVITE, 202)
        [confirmation] = await wait_for(lambda: mail(server), what="the confirmation")
        found = TOKEN.search(plain_text(confirmation))
        assert found is not None
        with sqlite3.connect(server.settings.database_path) as db:
            db.execute("UPDATE partner_invites SET created_at = ?", (time.time() - 49 * 3600,))
        refused = await post(server.url, "/api/invites/confirm", {"token": found.group(1)}, 401)
        assert refused["error"]["code"] == "link_expired"
        assert await server.services.store.list_sessions(EVERY_ORGANISATION) == []


async def test_requests_are_rate_limited_per_address(tmp_path: Path) -> None:
    async with serving(tmp_path, self_guided_invites="on", invite_rate_limit="2") as server:
        for n in range(2):
            await post(server.url, "/api/invites", {**INVITE, "email": f"r{n}@example.org"}, 202)
        refused = await post(server.url, "/api/invites", INVITE, 429)
        assert refused["error"]["code"] == "rate_limited"
        assert len(mail(server)) == 2
