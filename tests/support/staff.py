"""A staff member: an account on a test server, and an HTTP client that signs in the way
the staff pages do (session cookie + CSRF header)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from support.polling import wait_for
from support.process import ServerProcess
from support.server import RunningServer

STAFF_NAMESPACE = "/staff"

STAFF_EMAIL = "archivist@example.org"
STAFF_PASSWORD = "correct horse battery staple"


async def add_staff(
    server: RunningServer, email: str = STAFF_EMAIL, password: str = STAFF_PASSWORD
) -> None:
    await server.services.accounts.add_user(email, password)


def cookie_session() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's jar ignores IP hosts by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@dataclass
class StaffBrowser:
    """An HTTP client that signs in like the staff pages do: cookie jar + CSRF header."""

    http: aiohttp.ClientSession
    url: str
    csrf: str = ""

    async def sign_in(self, email: str = STAFF_EMAIL, password: str = STAFF_PASSWORD) -> Any:
        resp = await self.http.get(f"{self.url}/api/staff/csrf")
        assert resp.status == 200
        pre = (await resp.json())["csrf"]
        resp = await self.http.post(
            f"{self.url}/api/staff/signin",
            json={"email": email, "password": password},
            headers={"X-CSRF-Token": pre, "Origin": self.url},
        )
        body = await resp.json()
        if resp.status == 200:
            self.csrf = body["csrf"]
        return resp.status, body

    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, "Origin": self.url}

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        kwargs: dict[str, Any] = {"headers": self.headers()}
        if body is not None:
            kwargs["json"] = body
        resp = await self.http.request(method, self.url + path, **kwargs)
        data = await resp.json() if resp.content_type == "application/json" else await resp.read()
        assert resp.status == expect, (resp.status, data)
        return data


@asynccontextmanager
async def signed_in(server: RunningServer | ServerProcess) -> AsyncIterator[StaffBrowser]:
    """The staff member of :func:`add_staff`, signed in to `server` (in this process, or
    a `storyroom serve` process) for the context."""
    async with cookie_session() as http:
        staff = StaffBrowser(http, server.url)
        status, body = await staff.sign_in()
        assert status == 200, body
        yield staff


@dataclass
class StaffSocket:
    """A staff page's Socket.IO connection to `/staff`, keeping what it was sent."""

    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    sessions: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)

    async def connect(self, url: str, *, cookie: str = "", auth: Any = None) -> None:
        self.sio.on("session", self.sessions.append, namespace=STAFF_NAMESPACE)
        self.sio.on("closed", self.closed.append, namespace=STAFF_NAMESPACE)
        headers = {"Cookie": f"storyroom_staff={cookie}"} if cookie else {}
        await self.sio.connect(
            url,
            namespaces=[STAFF_NAMESPACE],
            headers=headers,
            auth=auth,
            transports=["websocket"],
            wait_timeout=10,
        )

    async def seen(self, session_id: str, what: str, **expected: Any) -> dict[str, Any]:
        """Wait until the latest summary of `session_id` has the `expected` fields (a
        value, or a test of the value)."""

        def holds(value: Any, want: Any) -> bool:
            return bool(want(value)) if callable(want) else bool(value == want)

        def match() -> dict[str, Any] | None:
            for summary in reversed(self.sessions):
                if summary["id"] == session_id:
                    ok = all(holds(summary[k], v) for k, v in expected.items())
                    return summary if ok else None
            return None

        return await wait_for(match, what=what)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()


def session_cookie(http: aiohttp.ClientSession) -> str:
    cookie = next(c for c in http.cookie_jar if c.key == "storyroom_staff")
    return cookie.value
