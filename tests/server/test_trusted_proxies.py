"""Behind a reverse proxy: forwarded client addresses are believed from trusted proxies
only, so one client's wrong tokens lock out that client and not everyone behind the
proxy, audit entries name the real client, and HTTPS at the proxy makes cookies Secure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from storyroom.orgs import EVERY_ORGANISATION
from support.polling import wait_for
from support.server import STAFF_TOKEN, RunningServer, create_session, start_server
from support.staff import STAFF_EMAIL, STAFF_PASSWORD, add_staff

ONE, TWO = "198.51.100.7", "198.51.100.8"  # clients behind the proxy (header values only)
TRIES = 25  # over bad_token_limit (20)


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The test connects from 127.0.0.1, which is the trusted proxy."""
    server = await start_server(tmp_path / "data", trusted_proxies="127.0.0.1")
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def untrusted(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """Only 127.0.0.2 is a trusted proxy; the test's own requests are a client's."""
    server = await start_server(tmp_path / "data", trusted_proxies="127.0.0.2")
    try:
        yield server
    finally:
        await server.close()


async def wrong_tokens(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> list[int]:
    statuses = []
    for _ in range(TRIES):
        resp = await http.get(
            f"{url}/api/sessions", headers={"Authorization": "Bearer wrong", **headers}
        )
        statuses.append(resp.status)
    return statuses


async def test_wrong_tokens_lock_out_one_client_not_the_proxy(proxied: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        statuses = await wrong_tokens(http, proxied.url, {"X-Forwarded-For": ONE})
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}, statuses
        # the same client with the right token now: still refused for a while
        resp = await http.get(
            f"{proxied.url}/api/sessions",
            headers={"Authorization": f"Bearer {STAFF_TOKEN}", "X-Forwarded-For": ONE},
        )
        assert resp.status == 429
        # a second client behind the same proxy is not held up
        resp = await http.get(
            f"{proxied.url}/api/sessions",
            headers={"Authorization": f"Bearer {STAFF_TOKEN}", "X-Forwarded-For": TWO},
        )
        assert resp.status == 200
        resp = await http.get(
            f"{proxied.url}/api/sessions",
            headers={"Authorization": "Bearer wrong", "Forwarded": f"for={TWO}"},
        )
        assert resp.status == 401


async def test_a_client_cannot_pick_its_own_address(untrusted: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(TRIES):  # a new forwarded address each time: all count for 127.0.0.1
            resp = await http.get(
                f"{untrusted.url}/api/sessions",
                headers={"Authorization": "Bearer wrong", "X-Forwarded-For": f"198.51.100.{i}"},
            )
            statuses.append(resp.status)
        assert set(statuses[20:]) == {429}, statuses
        resp = await http.get(
            f"{untrusted.url}/api/sessions",
            headers={"Authorization": f"Bearer {STAFF_TOKEN}", "X-Forwarded-For": TWO},
        )
        assert resp.status == 429


async def seat_connect(url: str, token: str, client: str) -> str:
    """Connect a seat as `client` behind the proxy: "ok" or the refusal's code."""
    errors: list[Any] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect_error", errors.append)
    try:
        await sio.connect(
            url,
            auth={"token": token},
            headers={"X-Forwarded-For": client},
            transports=["websocket"],
            wait_timeout=10,
        )
        return "ok"
    except socketio.exceptions.ConnectionError:
        await wait_for(lambda: errors, what="connect_error")
        return str(errors[0]["data"]["code"])
    finally:
        await sio.disconnect()
        await sio.shutdown()


async def test_wrong_seat_tokens_lock_out_one_client(proxied: RunningServer) -> None:
    created = await create_session(proxied.url)
    token = created["seats"]["a"]["token"]
    codes = [await seat_connect(proxied.url, "x" * 32, ONE) for _ in range(TRIES)]
    assert codes == ["token_invalid"] * 20 + ["rate_limited"] * 5, codes
    assert await seat_connect(proxied.url, token, ONE) == "rate_limited"
    assert await seat_connect(proxied.url, token, TWO) == "ok"


async def test_audit_names_the_client_and_https_at_the_proxy_makes_cookies_secure(
    proxied: RunningServer,
) -> None:
    await add_staff(proxied)
    forwarded = {"Forwarded": f'for="{ONE}:51000";proto=https', "Origin": proxied.url}
    # The cookies are Secure: a client keeps them for HTTPS only, so carry them by hand.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        resp = await http.get(f"{proxied.url}/api/staff/csrf", headers=forwarded)
        assert resp.status == 200
        pre = (await resp.json())["csrf"]
        cookies = resp.headers.getall("Set-Cookie")
        assert cookies and all("Secure" in c for c in cookies), cookies
        jar = "; ".join(c.split(";", 1)[0] for c in cookies)
        resp = await http.post(
            f"{proxied.url}/api/staff/signin",
            json={"email": STAFF_EMAIL, "password": STAFF_PASSWORD},
            headers={**forwarded, "X-CSRF-Token": pre, "Cookie": jar},
        )
        assert resp.status == 200, await resp.text()
        cookies = resp.headers.getall("Set-Cookie")
        assert cookies and all("Secure" in c for c in cookies), cookies
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    # without the proxy's word for HTTPS, no Secure cookie and no HSTS
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        resp = await http.get(f"{proxied.url}/api/staff/csrf", headers={"X-Forwarded-For": TWO})
        assert not any("Secure" in c for c in resp.headers.getall("Set-Cookie"))
        assert "Strict-Transport-Security" not in resp.headers
    entries = await proxied.services.audit.entries(EVERY_ORGANISATION)
    sign_in = [e for e in entries if e.action == "sign_in"]
    assert [e.address for e in sign_in] == [ONE]
