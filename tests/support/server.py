"""Shared test helpers: a real server on loopback, real Socket.IO seat clients, polling waits."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiohttp import web

from storyroom.app import create_app
from storyroom.config import Settings
from storyroom.services import SERVICES, Services

STAFF_TOKEN = "test-staff-token-0123456789abcdef"


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until it returns a truthy value (aiortc's sleepWhile, inverted)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    settings: Settings
    runner: web.AppRunner
    url: str

    @property
    def services(self) -> Services:
        return self.runner.app[SERVICES]

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(data_dir: Path, **overrides: Any) -> RunningServer:
    port = overrides.pop("port", None) or free_port()
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


def session_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "title": "Test conversation",
        "language": "en",
        "target_minutes": 40,
        "participants": [
            {"name": "Rosa", "bio": "Nurse from El Paso."},
            {"name": "Dale", "bio": "Retired machinist from Ohio."},
        ],
        "facilitator": {"name": "Sam"},
    }
    payload.update(changes)
    return payload


async def create_session(url: str, **changes: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{url}/api/sessions",
            json=session_payload(**changes),
            headers={"Authorization": f"Bearer {STAFF_TOKEN}"},
        )
        body: dict[str, Any] = await resp.json()
        assert resp.status == 201, body
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
        self, predicate: Callable[[dict[str, Any]], Any], what: str = "", timeout: float = 10
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


async def seat_clients(url: str, created: dict[str, Any]) -> dict[str, SeatClient]:
    clients = {
        seat: SeatClient(url, created["seats"][seat]["token"]) for seat in ("a", "b", "facilitator")
    }
    for client in clients.values():
        await client.connect()
    return clients
