"""The staff guard over the app's real route table (`web.routes`): every route outside an
explicit public list refuses a request without staff credentials, so a new staff route
cannot ship unguarded. Each route is tried with each credential: none, a wrong bearer
token, a seat token as bearer, a cookie that is no session, and a real session cookie
without its CSRF token on a state-changing request. The right credentials get through,
so no row passes because a route refuses everyone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from support.routes import PARAMETER, UNSAFE, Route, guarded_routes
from support.server import STAFF_TOKEN, RunningServer, create_session, serving
from support.staff import add_staff, signed_in


def concrete(path: str) -> str:
    """A path to call: every parameter filled with a well-formed id of nothing."""
    return PARAMETER.sub("x_0000000000000000", path)


API = ("/api/", "/metrics")  # answered in JSON (401), not redirected to sign in


def is_page(path: str) -> bool:
    return not path.startswith(API)


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    # every wrong token below counts against 127.0.0.1: keep the limit out of the way
    # /metrics is open to its networks only: with none that holds 127.0.0.1, it is
    # guarded here like any staff route
    async with serving(
        tmp_path / "data", bad_token_limit=100_000, metrics_networks="10.0.0.0/8"
    ) as running:
        await add_staff(running)
        yield running


async def refusals(
    http: aiohttp.ClientSession, server: RunningServer, routes: list[Route], headers: dict[str, str]
) -> list[str]:
    """Every route that did not refuse: staff API calls must get 401 `unauthorized`,
    staff pages a 303 to the sign-in page."""
    wrong = []
    for method, path in routes:
        url = server.url + concrete(path)
        async with http.request(
            method, url, json={}, headers=headers, allow_redirects=False
        ) as resp:
            if is_page(path):
                location = urlsplit(resp.headers.get("Location", ""))
                ok = resp.status == 303 and location.path == "/staff/signin"
                ok = ok and parse_qs(location.query) == {"next": [concrete(path)]}
            else:
                ok = resp.status == 401
                if ok and method != "HEAD":
                    ok = (await resp.json())["error"]["code"] == "unauthorized"
            if not ok:
                wrong.append(f"{method} {path}: {resp.status}")
    return wrong


async def test_there_are_staff_routes_and_pages(app_server: RunningServer) -> None:
    routes = guarded_routes(app_server)
    assert ("POST", "/api/proposals/{proposal_id}/accept") in routes
    assert ("GET", "/staff/applications") in routes
    assert ("GET", "/staff/people") in routes
    assert ("HEAD", "/api/recordings/{recording_id}/files/{name}") in routes


@pytest.mark.parametrize(
    "credential", ["none", "wrong bearer", "seat token as bearer", "cookie of no session"]
)
async def test_every_staff_route_refuses_without_staff_credentials(
    app_server: RunningServer, credential: str
) -> None:
    created = await create_session(app_server.url)
    headers = {
        "none": {},
        "wrong bearer": {"Authorization": "Bearer not-the-staff-token-at-all"},
        "seat token as bearer": {
            "Authorization": f"Bearer {created['seats']['facilitator']['token']}"
        },
        "cookie of no session": {"Cookie": "storyroom_staff=made-up"},
    }[credential]
    async with aiohttp.ClientSession() as http:
        wrong = await refusals(http, app_server, guarded_routes(app_server), headers)
    assert not wrong, "not refused:\n" + "\n".join(wrong)


async def test_a_session_cookie_without_csrf_changes_nothing(app_server: RunningServer) -> None:
    changing = [(m, p) for m, p in guarded_routes(app_server) if m in UNSAFE]
    assert ("POST", "/api/proposals/{proposal_id}/accept") in changing
    async with signed_in(app_server) as staff:
        wrong = []
        for method, path in changing:
            async with staff.http.request(method, app_server.url + concrete(path), json={}) as resp:
                body = await resp.json()
                if resp.status != 403 or body["error"]["code"] != "csrf_failed":
                    wrong.append(f"{method} {path}: {resp.status}")
        assert not wrong, "not refused for want of CSRF:\n" + "\n".join(wrong)
        # the session is still there: the refusals were the CSRF check, not a lost cookie
        assert (await staff.call("GET", "/api/staff/me"))["via"] == "session"


async def test_staff_credentials_get_through(app_server: RunningServer) -> None:
    routes = guarded_routes(app_server)
    async with signed_in(app_server) as staff:
        wrong = []
        for method, path in routes:
            headers = {} if is_page(path) else {"Authorization": f"Bearer {STAFF_TOKEN}"}
            async with staff.http.request(
                method,
                app_server.url + concrete(path),
                json={},
                headers=headers,
                allow_redirects=False,
            ) as resp:
                if resp.status in (303, 401, 403):
                    wrong.append(f"{method} {path}: {resp.status}")
    assert not wrong, "staff refused:\n" + "\n".join(wrong)
