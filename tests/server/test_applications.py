"""The application form over HTTP: valid applications, table-driven bad input for every
field (each answered with a field code, nothing stored), the honeypot, the rate limit,
and the staff list, filters, detail, withdraw and delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from support.apply import application
from support.server import AUTH, RunningServer, call, serving

LONG = "x" * 2000


def window(day: Any = 1, start: Any = "18:00", end: Any = "21:00") -> dict[str, Any]:
    return {"day": day, "start": start, "end": end}


# (case, field, value, code); value None removes the field
BAD_FIELDS: list[tuple[str, str, Any, str]] = [
    ("first name missing", "first_name", None, "required"),
    ("first name blank", "first_name", "   ", "required"),
    ("first name number", "first_name", 5, "invalid_type"),
    ("first name too long", "first_name", "n" * 41, "too_long"),
    ("first name two lines", "first_name", "Ro\nsa", "invalid_value"),
    ("first name control", "first_name", "Ro\x00sa", "invalid_value"),
    ("last name missing", "last_name", None, "required"),
    ("last name too long", "last_name", "n" * 61, "too_long"),
    ("last name list", "last_name", ["Delgado"], "invalid_type"),
    ("email missing", "email", None, "required"),
    ("email no at", "email", "rosa.example.org", "invalid_email"),
    ("email no domain dot", "email", "rosa@example", "invalid_email"),
    ("email space", "email", "ro sa@example.org", "invalid_email"),
    ("email header injection", "email", "rosa@example.org\nBcc: x@y.z", "invalid_value"),
    ("email too long", "email", "r" * 250 + "@example.org", "too_long"),
    ("email number", "email", 12, "invalid_type"),
    ("phone letters", "phone", "call me maybe", "invalid_phone"),
    ("phone too few digits", "phone", "555-01", "invalid_phone"),
    ("phone too long", "phone", "1" * 31, "too_long"),
    ("phone number type", "phone", 9155550100, "invalid_type"),
    ("city missing", "city", None, "required"),
    ("city too long", "city", "c" * 81, "too_long"),
    ("region missing", "region", None, "required"),
    ("region unknown", "region", "ZZ", "unknown_region"),
    ("region number", "region", 48, "invalid_type"),
    ("time zone missing", "time_zone", None, "required"),
    ("time zone unknown", "time_zone", "Mars/Olympus_Mons", "unknown_time_zone"),
    ("time zone number", "time_zone", -6, "invalid_type"),
    ("language missing", "language", None, "required"),
    ("language french", "language", "fr", "unknown_language"),
    ("speaks missing", "speaks", None, "required"),
    ("speaks empty", "speaks", [], "required"),
    ("speaks text", "speaks", "en", "invalid_type"),
    ("speaks french", "speaks", ["fr"], "unknown_language"),
    ("speaks twice", "speaks", ["en", "en"], "unknown_language"),
    ("placement missing", "placement", None, "required"),
    ("placement zero", "placement", 0, "invalid_placement"),
    ("placement eight", "placement", 8, "invalid_placement"),
    ("placement text", "placement", "3", "invalid_type"),
    ("placement bool", "placement", True, "invalid_type"),
    ("placement float", "placement", 3.5, "invalid_type"),
    ("party too long", "party", "p" * 61, "too_long"),
    ("bio missing", "bio", None, "required"),
    ("bio too long", "bio", "b" * 501, "too_long"),
    ("bio has last name", "bio", "I am Rosa Delgado from El Paso.", "last_name_in_bio"),
    ("bio has last name any case", "bio", "the DELGADO family", "last_name_in_bio"),
    ("shaped views too long", "shaped_views", LONG, "too_long"),
    ("availability missing", "availability", None, "required"),
    ("availability empty", "availability", [], "required"),
    ("availability text", "availability", "evenings", "invalid_type"),
    ("window not object", "availability", ["tuesday"], "invalid_type"),
    ("window extra key", "availability", [{**window(), "tz": "UTC"}], "invalid_type"),
    ("window day 7", "availability", [window(day=7)], "invalid_day"),
    ("window day text", "availability", [window(day="tue")], "invalid_day"),
    ("window day null", "availability", [window(day=None)], "invalid_day"),
    ("window off the quarter", "availability", [window(start="18:10")], "invalid_time"),
    ("window bad clock", "availability", [window(start="25:00")], "invalid_time"),
    ("window start 24:00", "availability", [window(start="24:00")], "invalid_time"),
    ("window clock number", "availability", [window(start=1800)], "invalid_time"),
    ("window backwards", "availability", [window(start="21:00", end="18:00")], "window_order"),
    ("window too short", "availability", [window(start="18:00", end="19:00")], "window_too_short"),
    ("too many windows", "availability", [window(day=d % 7) for d in range(15)], "too_many"),
    ("accessibility too long", "accessibility", "a" * 501, "too_long"),
    ("contact consent missing", "consent_contact", None, "consent_required"),
    ("contact consent false", "consent_contact", False, "consent_required"),
    ("contact consent text", "consent_contact", "yes", "consent_required"),
    ("privacy consent false", "consent_privacy", False, "consent_required"),
    ("unknown field", "age", 41, "unknown_field"),
]


@pytest.fixture
async def roomy(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server whose rate limit does not get in the way of many requests."""
    async with serving(tmp_path / "data", apply_rate_limit=10_000) as running:
        yield running


async def test_a_valid_application_is_stored_for_staff_only(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        body = await call(
            http, "POST", f"{server.url}/api/applications", application(), staff=False, expect=201
        )
        assert body == {"received": True, "first_name": "Rosa"}
        listed = await call(http, "GET", f"{server.url}/api/applications")
        [row] = listed["applications"]
        assert row["first_name"] == "Rosa" and row["status"] == "new"
        detail = await call(http, "GET", f"{server.url}/api/applications/{row['id']}")
        assert detail["email"] == "rosa@example.org"
        assert detail["last_name"] == "Delgado"
        assert detail["availability"] == [{"day": 1, "start": "18:00", "end": "21:00"}]
        assert detail["speaks"] == ["en", "es"]
        # staff only: without the token nothing is listed
        for path in ("/api/applications", f"/api/applications/{row['id']}"):
            async with http.get(server.url + path) as resp:
                assert resp.status == 401


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
async def test_bad_fields_are_named_and_nothing_is_stored(
    roomy: RunningServer, field: str, value: Any, code: str
) -> None:
    async with aiohttp.ClientSession() as http:
        body = await call(
            http,
            "POST",
            f"{roomy.url}/api/applications",
            application(**{field: value}) if value is not None else application(**{field: None}),
            staff=False,
            expect=400,
        )
        assert body["error"]["code"] == "invalid_fields"
        assert body["error"]["fields"] == {field: code}
        listed = await call(http, "GET", f"{roomy.url}/api/applications")
        assert listed["applications"] == []


async def test_every_bad_field_is_reported_at_once(roomy: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        bad = application(first_name="", email="nope", placement=9, consent_privacy=False)
        body = await call(
            http, "POST", f"{roomy.url}/api/applications", bad, staff=False, expect=400
        )
        assert body["error"]["fields"] == {
            "first_name": "required",
            "email": "invalid_email",
            "placement": "invalid_placement",
            "consent_privacy": "consent_required",
        }


BAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("not json", b"{nope", "application/json", 400, "invalid_json"),
    (
        "form encoded",
        b"first_name=Rosa",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    ("a list", b"[1, 2]", "application/json", 400, "invalid_type"),
    ("a string", b'"Rosa"', "application/json", 400, "invalid_type"),
    ("too large", b'{"bio": "' + b"x" * 70_000 + b'"}', "application/json", 413, "too_large"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_bodies(
    roomy: RunningServer, body: bytes, content_type: str, status: int, code: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{roomy.url}/api/applications", data=body, headers={"Content-Type": content_type}
        ) as resp:
            assert resp.status == status
            assert (await resp.json())["error"]["code"] == code


async def test_the_honeypot_looks_like_success_but_keeps_nothing(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        body = await call(
            http,
            "POST",
            f"{server.url}/api/applications",
            application(website="http://spam.example"),
            staff=False,
            expect=201,
        )
        assert body == {"received": True}
        assert (await call(http, "GET", f"{server.url}/api/applications"))["applications"] == []


async def test_rate_limit_per_client_address(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "data", apply_rate_limit=3) as running,
        aiohttp.ClientSession() as http,
    ):
        url = f"{running.url}/api/applications"
        await call(http, "POST", url, application(), staff=False, expect=201)
        await call(http, "POST", url, application(email="bad"), staff=False, expect=400)
        await call(http, "POST", url, application(first_name="Ana"), staff=False, expect=201)
        async with http.post(url, json=application(first_name="Eve")) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) > 0
            assert (await resp.json())["error"]["code"] == "rate_limited"
        names = [a["first_name"] for a in (await call(http, "GET", url))["applications"]]
        assert sorted(names) == ["Ana", "Rosa"]


async def test_staff_filters(roomy: RunningServer) -> None:
    people = [
        application(first_name="Rosa", region="TX", speaks=["es"], placement=2),
        application(first_name="Dale", region="OH", speaks=["en"], placement=6),
        application(first_name="Mei", region="TX", speaks=["en", "es"], placement=6),
    ]
    async with aiohttp.ClientSession() as http:
        for person in people:
            await call(
                http, "POST", f"{roomy.url}/api/applications", person, staff=False, expect=201
            )

        async def names(query: str) -> list[str]:
            found = await call(http, "GET", f"{roomy.url}/api/applications?{query}")
            return sorted(a["first_name"] for a in found["applications"])

        assert await names("") == ["Dale", "Mei", "Rosa"]
        assert await names("region=TX") == ["Mei", "Rosa"]
        assert await names("language=es") == ["Mei", "Rosa"]
        assert await names("placement=6") == ["Dale", "Mei"]
        assert await names("region=TX&placement=6&language=en") == ["Mei"]
        assert await names("status=new") == ["Dale", "Mei", "Rosa"]
        assert await names("status=withdrawn") == []
        for query, field in [
            ("region=ZZ", "region"),
            ("language=fr", "language"),
            ("placement=9", "placement"),
            ("placement=x", "placement"),
            ("status=gone", "status"),
            ("sort=name", "sort"),
        ]:
            body = await call(http, "GET", f"{roomy.url}/api/applications?{query}", expect=400)
            assert field in body["error"]["fields"], query


async def test_withdraw_and_delete(roomy: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        for person in (application(), application(first_name="Dale", placement=6)):
            await call(
                http, "POST", f"{roomy.url}/api/applications", person, staff=False, expect=201
            )
        rows = (await call(http, "GET", f"{roomy.url}/api/applications"))["applications"]
        ids = {a["first_name"]: a["id"] for a in rows}
        withdrawn = await call(http, "POST", f"{roomy.url}/api/applications/{ids['Rosa']}/withdraw")
        assert withdrawn["status"] == "withdrawn"
        async with http.delete(f"{roomy.url}/api/applications/{ids['Dale']}", headers=AUTH) as resp:
            assert resp.status == 204
        await call(http, "GET", f"{roomy.url}/api/applications/{ids['Dale']}", expect=404)
        await call(http, "GET", f"{roomy.url}/api/applications/..%2Fetc", expect=404)
        await call(http, "POST", f"{roomy.url}/api/applications/app_missing/withdraw", expect=404)
        # the row is gone from the database itself, contact details included
        async with roomy.services.store.db.execute(
            "SELECT COUNT(*) FROM applications WHERE email = 'rosa@example.org'"
        ) as cur:
            row = await cur.fetchone()
        assert row is not None and row[0] == 1  # only the withdrawn one


STAFF_ROUTES = [
    ("GET", "/api/applications"),
    ("GET", "/api/applications/app_x"),
    ("POST", "/api/applications/app_x/withdraw"),
    ("DELETE", "/api/applications/app_x"),
    ("POST", "/api/matching/run"),
    ("GET", "/api/proposals"),
    ("POST", "/api/proposals/prp_x/accept"),
    ("POST", "/api/proposals/prp_x/reject"),
    ("POST", "/api/proposals/prp_x/schedule"),
    ("GET", "/api/schedules"),
    ("POST", "/api/schedules/sch_x/confirm"),
    ("GET", "/api/facilitators"),
    ("POST", "/api/facilitators"),
    ("POST", "/api/facilitators/fac_x/deactivate"),
    ("GET", "/api/outbox"),
    ("GET", "/api/outbox/x.eml"),
    ("GET", "/api/outbox/x.eml/raw"),
]


@pytest.mark.parametrize(
    ("method", "path"), STAFF_ROUTES, ids=[f"{m} {p}" for m, p in STAFF_ROUTES]
)
async def test_staff_routes_need_the_staff_token(
    server: RunningServer, method: str, path: str
) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
            async with http.request(method, server.url + path, headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_region_list_is_public(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        body = await call(http, "GET", f"{server.url}/api/regions", staff=False)
        codes = {r["code"] for r in body["regions"]}
        assert {"TX", "NY", "PR", "DC"} <= codes and len(codes) == 52
        texas = next(r for r in body["regions"] if r["code"] == "NY")
        assert texas["name"] == {"en": "New York", "es": "Nueva York"}
