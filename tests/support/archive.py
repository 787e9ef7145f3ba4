"""Finished recordings for the staff-archive tests, and a signed-in staff HTTP client.

One real recording is made per test run (three aiortc peers sending tones, two cued
questions, a few seconds of audio, finalized by the server's worker) in a thread with
its own event loop; each test gets a copy of that data directory and its own server, so
tests may delete, withdraw and export without disturbing one another.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from support.media import SeatPeer, ToneTrack
from support.server import (
    STAFF_TOKEN,
    RunningServer,
    create_session,
    seat_clients,
    start_server,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {STAFF_TOKEN}"}
TONES = {"a": 440.0, "b": 660.0, "facilitator": 880.0}
ALL_CONSENT = {"record": True, "archive": True, "public": True}
STAFF_EMAIL = "archivist@example.org"
STAFF_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Finished:
    """A data directory holding one finalized recording."""

    data_dir: Path
    recording_id: str
    session_id: str
    seat_tokens: dict[str, str]
    question_ids: list[str]


async def record_and_finalize(data_dir: Path, seconds: float = 3.0) -> Finished:
    server = await start_server(data_dir)
    try:
        created = await create_session(
            server.url,
            title="Porch light conversation",
            participants=[
                {"name": "Rosa", "bio": "Nurse from El Paso."},
                {"name": "Dale", "bio": "Retired machinist from Ohio."},
            ],
        )
        clients = await seat_clients(server.url, created)
        peers = {seat: SeatPeer(clients[seat], ToneTrack(TONES[seat])) for seat in clients}
        try:
            for peer in peers.values():
                await peer.connect()
            for seat in ("a", "b"):
                assert (await clients[seat].call("consent", ALL_CONSENT))["ok"]
            questions = [q["id"] for q in clients["facilitator"].last["questions"][:2]]
            start = await clients["facilitator"].call("recording:start")
            assert start["ok"], start
            recording_id = start["recording"]["id"]
            begun = time.monotonic()
            assert (await clients["facilitator"].call("question:cue", {"id": questions[0]}))["ok"]
            await wait_for(lambda: time.monotonic() > begun + seconds / 2, timeout=seconds + 5)
            assert (await clients["facilitator"].call("question:cue", {"id": questions[1]}))["ok"]
            await wait_for(lambda: time.monotonic() > begun + seconds, timeout=seconds + 5)
            assert (await clients["facilitator"].call("recording:stop"))["ok"]
        finally:
            for peer in peers.values():
                await peer.close()
            for client in clients.values():
                await client.close()
        async with aiohttp.ClientSession() as http:

            async def status() -> str:
                resp = await http.get(f"{server.url}/api/recordings/{recording_id}", headers=AUTH)
                return str((await resp.json())["status"])

            deadline = time.monotonic() + 120
            while (now := await status()) != "ready":
                assert now in ("stopped", "finalizing"), now
                assert time.monotonic() < deadline, "finalization took too long"
                await asyncio.sleep(0.2)
        return Finished(
            data_dir,
            recording_id,
            created["id"],
            {seat: created["seats"][seat]["token"] for seat in created["seats"]},
            questions,
        )
    finally:
        await server.close()


_made: dict[str, Finished] = {}
_lock = threading.Lock()


def finished_recording(root: Path) -> Finished:
    """The one finalized recording of this test run (made on first use, in a thread with
    its own event loop so it never touches the tests' loops)."""
    with _lock:
        if "one" not in _made:
            box: list[Finished | BaseException] = []

            def run() -> None:
                try:
                    box.append(asyncio.run(record_and_finalize(root / "data")))
                except BaseException as exc:
                    box.append(exc)

            thread = threading.Thread(target=run, name="make-recording")
            thread.start()
            thread.join(300)
            if not box:
                raise AssertionError("making the shared recording did not finish")
            if isinstance(box[0], BaseException):
                raise box[0]
            _made["one"] = box[0]
        return _made["one"]


def copy_of(finished: Finished, target: Path) -> Path:
    """A private copy of the finished data directory for one test."""
    shutil.copytree(finished.data_dir, target)
    return target


async def archive_server(finished: Finished, tmp_path: Path, **overrides: Any) -> RunningServer:
    return await start_server(copy_of(finished, tmp_path / "data"), **overrides)


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
