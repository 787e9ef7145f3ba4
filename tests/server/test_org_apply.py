"""An organisation's own application form: `POST /api/apply/{slug}` files the
application under that organisation (in English or Spanish), `/api/applications` under
the default one, and nobody else's staff see it; an unknown or malformed slug is 404,
and bad payloads get the same field errors as on the default form."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from storyroom.orgs import EVERY_ORGANISATION
from storyroom.staff.accounts import Role
from support.apply import DALE, FACILITATOR, ROSA, application
from support.server import RunningServer, call
from support.staff import StaffBrowser, cookie_session

PASSWORD = "a long enough password for tests"


async def organisation(server: RunningServer, slug: str, name: str) -> int:
    async with aiohttp.ClientSession() as http:
        org = await call(
            http,
            "POST",
            f"{server.url}/api/organisations",
            {"slug": slug, "name": name},
            expect=201,
        )
    await server.services.accounts.add_user(
        f"admin@{slug}.example.org", PASSWORD, org["id"], Role.ADMIN
    )
    return int(org["id"])


async def listed(server: RunningServer, email: str) -> list[dict[str, Any]]:
    staff = StaffBrowser(cookie_session(), server.url)
    try:
        status, body = await staff.sign_in(email, PASSWORD)
        assert status == 200, body
        rows: list[dict[str, Any]] = (await staff.call("GET", "/api/applications"))["applications"]
        return rows
    finally:
        await staff.http.close()


async def test_each_form_files_under_its_organisation(server: RunningServer) -> None:
    await organisation(server, "riverside", "Riverside Public Radio")
    await organisation(server, "hilltop", "Hilltop College")
    await server.services.accounts.add_user("admin@default.example.org", PASSWORD)
    url = server.url
    async with aiohttp.ClientSession() as http:
        english = application(first_name="Eve", email="eve@example.org")
        spanish = application(first_name="Inés", email="ines@example.org", language="es")
        for person in (english, spanish):
            body = await call(
                http, "POST", f"{url}/api/apply/riverside", person, staff=False, expect=201
            )
            assert body == {"received": True, "first_name": person["first_name"]}
        await call(
            http,
            "POST",
            f"{url}/api/applications",
            application(first_name="Dora", email="dora@example.org"),
            staff=False,
            expect=201,
        )
    riverside = await listed(server, "admin@riverside.example.org")
    assert sorted((r["first_name"], r["language"]) for r in riverside) == [
        ("Eve", "en"),
        ("Inés", "es"),
    ]
    assert await listed(server, "admin@hilltop.example.org") == []
    assert [r["first_name"] for r in await listed(server, "admin@default.example.org")] == ["Dora"]


@pytest.mark.parametrize("slug", ["nobody", "Riverside", "a" * 41, "-x", "river%2Fside", "x-"])
async def test_an_unknown_organisation_has_no_form(server: RunningServer, slug: str) -> None:
    await organisation(server, "riverside", "Riverside Public Radio")
    async with aiohttp.ClientSession() as http:
        body = await call(
            http, "POST", f"{server.url}/api/apply/{slug}", application(), staff=False, expect=404
        )
        assert body["error"]["code"] == "not_found"
    async with server.services.store.db.execute("SELECT COUNT(*) FROM applications") as cur:
        assert (await cur.fetchone())[0] == 0


BAD = [
    ({**application(), "email": "rosa@example"}, "invalid_email"),
    ({**application(), "surprise": 1}, "unknown_field"),
    ([], "invalid_type"),
]


@pytest.mark.parametrize(("payload", "code"), BAD)
async def test_bad_applications_to_an_organisation(
    server: RunningServer, payload: Any, code: str
) -> None:
    await organisation(server, "riverside", "Riverside Public Radio")
    async with aiohttp.ClientSession() as http:
        body = await call(
            http, "POST", f"{server.url}/api/apply/riverside", payload, staff=False, expect=400
        )
        default = await call(
            http, "POST", f"{server.url}/api/applications", payload, staff=False, expect=400
        )
    assert body == default  # one boundary: the same answer as the default form's
    assert code in str(body), body
    async with server.services.store.db.execute("SELECT COUNT(*) FROM applications") as cur:
        assert (await cur.fetchone())[0] == 0


BAD_ORGANISATIONS = [
    ({"slug": "ok"}, 400, "missing_field"),
    ({"slug": "Bad Slug", "name": "X"}, 400, "invalid_value"),
    ({"slug": "ok", "name": ""}, 400, "invalid_value"),
    ({"slug": "ok", "name": "X", "logo_url": "http://example.org/logo.png"}, 400, "invalid_value"),
    ({"slug": "ok", "name": "X", "settings": {"colour": "red"}}, 400, "unknown_field"),
    ({"slug": "ok", "name": "X", "settings": {"contact_email": "nope"}}, 400, "invalid_email"),
    ({"slug": "ok", "name": "X", "extra": 1}, 400, "unknown_field"),
    ({"slug": "default", "name": "X"}, 409, "exists"),
]


@pytest.mark.parametrize(("payload", "status", "code"), BAD_ORGANISATIONS)
async def test_bad_organisations(
    server: RunningServer, payload: dict[str, Any], status: int, code: str
) -> None:
    async with aiohttp.ClientSession() as http:
        body = await call(http, "POST", f"{server.url}/api/organisations", payload, expect=status)
    assert body["error"]["code"] == code, body
    found = await server.services.store.organisations(EVERY_ORGANISATION)
    assert [o.slug for o in found] == ["default"]


BAD_ACCOUNTS = [
    ({"email": "x@example.org"}, 400, "missing_field"),
    ({"email": "x@example.org", "password": "short"}, 400, "weak_password"),
    ({"email": "not an email", "password": PASSWORD}, 400, "invalid_email"),
    ({"email": "x@example.org", "password": PASSWORD, "role": "platform"}, 400, "invalid_value"),
    ({"email": "x@example.org", "password": PASSWORD, "extra": 1}, 400, "unknown_field"),
    ({"email": "admin@riverside.example.org", "password": PASSWORD}, 409, "exists"),
    # an admin names only their own organisation; another is as if it did not exist
    ({"email": "x@example.org", "password": PASSWORD, "organisation": "hilltop"}, 404, "not_found"),
    ({"email": "x@example.org", "password": PASSWORD, "organisation": "BAD"}, 400, "invalid_value"),
]


@pytest.mark.parametrize(("payload", "status", "code"), BAD_ACCOUNTS)
async def test_bad_staff_accounts(
    server: RunningServer, payload: dict[str, Any], status: int, code: str
) -> None:
    await organisation(server, "riverside", "Riverside Public Radio")
    await organisation(server, "hilltop", "Hilltop College")
    staff = StaffBrowser(cookie_session(), server.url)
    try:
        assert (await staff.sign_in("admin@riverside.example.org", PASSWORD))[0] == 200
        body = await staff.call("POST", "/api/staff/accounts", payload, expect=status)
    finally:
        await staff.http.close()
    assert body["error"]["code"] == code, body
    users = await server.services.accounts.users(EVERY_ORGANISATION)
    assert sorted(u.email for u in users) == [
        "admin@hilltop.example.org",
        "admin@riverside.example.org",
    ]


async def test_admins_add_and_remove_their_own_staff(server: RunningServer) -> None:
    await organisation(server, "riverside", "Riverside Public Radio")
    admin = StaffBrowser(cookie_session(), server.url)
    helper = StaffBrowser(cookie_session(), server.url)
    try:
        assert (await admin.sign_in("admin@riverside.example.org", PASSWORD))[0] == 200
        added = await admin.call(
            "POST",
            "/api/staff/accounts",
            {"email": "helper@riverside.example.org", "password": PASSWORD},
            expect=201,
        )
        assert added["role"] == "staff"
        assert (await helper.sign_in("helper@riverside.example.org", PASSWORD))[0] == 200
        # plain staff do not manage accounts
        refused = await helper.call("GET", "/api/staff/accounts", expect=403)
        assert refused["error"]["code"] == "admin_only"
        own = await admin.call("GET", "/api/staff/accounts")
        assert sorted(a["email"] for a in own["accounts"]) == [
            "admin@riverside.example.org",
            "helper@riverside.example.org",
        ]
        me = next(a for a in own["accounts"] if a["role"] == "admin")
        mine = await admin.call("DELETE", f"/api/staff/accounts/{me['id']}", expect=409)
        assert mine["error"]["code"] == "own_account"
        await admin.call("DELETE", f"/api/staff/accounts/{added['id']}")
        # their session ended with the account
        async with helper.http.get(f"{server.url}/api/staff/me") as resp:
            assert resp.status == 401
        entries = (await admin.call("GET", "/api/audit"))["entries"]
        assert [e["action"] for e in entries if e["action"].startswith("staff_")] == [
            "staff_removed",
            "staff_added",
        ]
    finally:
        await admin.http.close()
        await helper.http.close()


async def test_matching_and_invitations_run_within_the_organisation(
    server: RunningServer,
) -> None:
    """Riverside's applicants are paired by Riverside's run with Riverside's facilitator,
    and their invitations end with Riverside's name and contact line; the default
    organisation's run, facilitators and outbox never see them."""
    store = server.services.store
    org = await store.add_organisation(
        "riverside", "Riverside Public Radio", None, "oss@riverside.example.org", {}
    )
    await server.services.accounts.add_user("admin@riverside.example.org", PASSWORD, org.id)
    await server.services.accounts.add_user("admin@default.example.org", PASSWORD)
    async with aiohttp.ClientSession() as http:
        for person in (ROSA, DALE):
            await call(
                http, "POST", f"{server.url}/api/apply/riverside", person, staff=False, expect=201
            )
    default = StaffBrowser(cookie_session(), server.url)
    riverside = StaffBrowser(cookie_session(), server.url)
    try:
        assert (await default.sign_in("admin@default.example.org", PASSWORD))[0] == 200
        assert (await riverside.sign_in("admin@riverside.example.org", PASSWORD))[0] == 200
        # the default organisation's facilitator and run: nobody of Riverside's
        await default.call("POST", "/api/facilitators", FACILITATOR, expect=201)
        run = await default.call("POST", "/api/matching/run")
        assert run == {"waiting": 0, "unmatched": 0, "proposals": []}
        # Riverside has no facilitator of its own yet: the default one is not offered
        [proposal] = (await riverside.call("POST", "/api/matching/run"))["proposals"]
        await riverside.call("POST", f"/api/proposals/{proposal['id']}/accept")
        await riverside.call("POST", f"/api/proposals/{proposal['id']}/schedule", expect=409)
        own = {**FACILITATOR, "first_name": "Rio", "email": "rio@riverside.example.org"}
        await riverside.call("POST", "/api/facilitators", own, expect=201)
        planned = await riverside.call("POST", f"/api/proposals/{proposal['id']}/schedule")
        assert planned["facilitator"]["first_name"] == "Rio"
        confirmed = await riverside.call("POST", f"/api/schedules/{planned['id']}/confirm")
        assert (await store.session_organisation(confirmed["session_id"])).slug == "riverside"
        messages = (await riverside.call("GET", "/api/outbox"))["messages"]
        assert len(messages) == 3
        for entry in messages:
            shown = await riverside.call("GET", f"/api/outbox/{entry['name']}")
            assert shown["text"].splitlines()[-2:] == [
                "Riverside Public Radio",
                "oss@riverside.example.org",
            ], shown["text"]
        assert (await default.call("GET", "/api/outbox"))["messages"] == []
        assert (await default.call("GET", "/api/schedules"))["schedules"] == []
    finally:
        await default.http.close()
        await riverside.http.close()
