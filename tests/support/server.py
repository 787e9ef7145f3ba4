"""Shared test helpers: a real server on loopback, staff calls, real Socket.IO seat clients."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from storyroom.__main__ import demo_session
from storyroom.app import create_app
from storyroom.config import Settings
from storyroom.services import SERVICES, Services
from support.polling import wait_for

STAFF_TOKEN = "test-staff-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {STAFF_TOKEN}"}
CONSENT = {"record": True, "archive": False, "public": False}
"""A participant's consent to the recording only (not the archive, not public)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Databases:
    """Which engine the servers of this run use: SQLite in their data folder (the
    default), or, in the PostgreSQL pass (`pytest --database=postgresql`), a database of
    the run's cluster per data folder (a restart on the same folder finds its data)."""

    new_database: Callable[[str | None], str] | None = None
    """Makes an empty database, or a copy of the one at the URL given; its URL."""
    urls: dict[Path, str] = field(default_factory=dict)

    def copy(self, source_dir: Path, target_dir: Path) -> None:
        """`target_dir` (a copy of `source_dir`'s files) gets a copy of its database too."""
        source = self.urls.get(source_dir.resolve())
        if self.new_database is not None and source is not None:
            self.urls[target_dir.resolve()] = self.new_database(source)

    def url_for(self, data_dir: Path) -> str | None:
        if self.new_database is None:
            return None
        key = data_dir.resolve()
        if key not in self.urls:
            self.urls[key] = self.new_database(None)
        return self.urls[key]


DATABASES = Databases()


@dataclass
class RunningServer:
    settings: Settings
    runner: web.AppRunner
    url: str

    @property
    def services(self) -> Services:
        return self.runner.app[SERVICES]

    async def close(self) -> None:
        """Idempotent: a test may stop the server before its context ends (a restart)."""
        if self.runner.server is not None:
            await self.runner.cleanup()


async def start_server(data_dir: Path, **overrides: Any) -> RunningServer:
    port = overrides.pop("port", None) or free_port()
    if "database_url" not in overrides:
        overrides["database_url"] = DATABASES.url_for(data_dir)
    settings = Settings.load(
        environ={},
        data_dir=data_dir,
        port=port,
        staff_token=STAFF_TOKEN,
        ice_host_addresses="127.0.0.1",
        **overrides,
    )
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return RunningServer(settings, runner, f"http://127.0.0.1:{port}")


@asynccontextmanager
async def serving(data_dir: Path, **overrides: Any) -> AsyncIterator[RunningServer]:
    """:func:`start_server` for the life of the context."""
    running = await start_server(data_dir, **overrides)
    try:
        yield running
    finally:
        await running.close()


def bio(seat: str) -> str:
    """The bio of participant `seat` ("a" or "b") in the demo session every test uses."""
    return str(demo_session()["participants"]["ab".index(seat)]["bio"])


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    staff: bool = True,
    expect: int | None = 200,
) -> Any:
    """A JSON call (with the staff token unless `staff` is false); asserts the status
    when `expect` is given and returns the body."""
    kwargs: dict[str, Any] = {"headers": AUTH if staff else {}}
    if body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as resp:
        data = await resp.json() if resp.status != 204 else None
        if expect is not None:
            assert resp.status == expect, (resp.status, data)
        return data


async def finalized(url: str, recording_id: str, timeout: float = 120) -> dict[str, Any]:
    """The recording once its finalization has ended, as `GET /api/recordings/{id}`
    says; asserts that it ended ready."""

    async def ended() -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as http:
            rec: dict[str, Any] = await call(http, "GET", f"{url}/api/recordings/{recording_id}")
        return rec if rec["status"] in ("ready", "failed") else None

    rec = await wait_for(ended, timeout=timeout, interval=0.1, what=f"{recording_id} finalized")
    assert rec["status"] == "ready", rec
    return rec


async def create_session(url: str, **changes: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        body: dict[str, Any] = await call(
            http, "POST", f"{url}/api/sessions", demo_session(**changes), expect=201
        )
        return body


async def create_self_guided(url: str, **changes: Any) -> dict[str, Any]:
    """A self-guided session (seats `a` and `b`, no facilitator) of the demo's people."""
    payload = {**demo_session(**changes), "kind": "self_guided"}
    payload.pop("facilitator")
    async with aiohttp.ClientSession() as http:
        body: dict[str, Any] = await call(http, "POST", f"{url}/api/sessions", payload, expect=201)
        return body


@dataclass
class SeatClient:
    """A real socketio.AsyncClient seated with a token, recording every snapshot."""

    url: str
    token: str
    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)

    async def connect(self) -> None:
        self.sio.on("room", self.snapshots.append)
        self.sio.on("closed", self.closed.append)
        self.sio.on("*", lambda event, data: self.events.append((event, data)))
        await self.sio.connect(
            self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=10
        )
        await wait_for(lambda: self.snapshots, what="first room snapshot")

    @property
    def last(self) -> dict[str, Any]:
        return self.snapshots[-1]

    async def call(self, event: str, payload: Any = None, timeout: float = 10) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, payload, timeout=timeout)
        return ack

    async def wait(
        self, predicate: Callable[[dict[str, Any]], Any], what: str = "", timeout: float = 20
    ) -> dict[str, Any]:
        return await wait_for(
            lambda: next((s for s in reversed(self.snapshots) if predicate(s)), None),
            timeout=timeout,
            what=what,
        )

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()


async def seat_clients(
    url: str, created: dict[str, Any], seats: tuple[str, ...] = ("a", "b", "facilitator")
) -> dict[str, SeatClient]:
    """`seats` of the session `created`, each connected and holding its first snapshot."""
    clients = {seat: SeatClient(url, created["seats"][seat]["token"]) for seat in seats}
    for client in clients.values():
        await client.connect()
    return clients


async def close_clients(clients: dict[str, SeatClient]) -> None:
    for client in clients.values():
        await client.close()


@asynccontextmanager
async def seated(
    url: str, created: dict[str, Any], seats: tuple[str, ...] = ("a", "b", "facilitator")
) -> AsyncIterator[dict[str, SeatClient]]:
    """:func:`seat_clients` for the life of the context."""
    clients = await seat_clients(url, created, seats)
    try:
        yield clients
    finally:
        await close_clients(clients)


async def give_consent(clients: dict[str, SeatClient], consent: dict[str, bool] = CONSENT) -> None:
    """Each participant among `clients` sends `consent`, and it is accepted."""
    for seat in ("a", "b"):
        if seat in clients:
            ack = await clients[seat].call("consent", consent)
            assert ack["ok"], ack


async def refused_connect(
    url: str, auth: Any, namespace: str = "/", headers: dict[str, str] | None = None
) -> Any:
    """Connect to `namespace` with `auth` (and `headers`) expecting a refusal; the
    `connect_error` the server sent."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append, namespace=namespace)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                url,
                auth=auth,
                headers=headers or {},
                namespaces=[namespace],
                transports=["websocket"],
                wait_timeout=5,
            )
        return (await wait_for(lambda: errors, what="connect_error"))[0]
    finally:
        await close_refused(client)


async def close_refused(client: socketio.AsyncClient) -> None:
    """A refused connect leaves engine.io's HTTP session open: close it."""
    http = client.eio.http
    if http is not None and not http.closed:
        await http.close()
    await client.shutdown()
