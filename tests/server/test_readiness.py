"""`/readyz`: 200 with every check's answer when the server can do its work, 503 naming
each check that fails (a read-only or too full data folder, a stopped finalizer, no MP3
encoder); `/healthz` stays a liveness check throughout."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import PRIVATE_MOUNTS

from storyroom.finalize import mp3_encoder
from support.server import RunningServer, start_server

CHECKS = {"database", "data_folder", "free_space", "finalizer", "mp3_encoder"}


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def assert_ready(server: RunningServer) -> None:
    status, body = await get(f"{server.url}/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert {c["name"] for c in body["checks"]} == CHECKS
    assert all(c["ok"] for c in body["checks"]), body


async def assert_failing(server: RunningServer, *names: str) -> dict[str, Any]:
    status, body = await get(f"{server.url}/readyz")
    assert status == 503, body
    assert body["status"] == "not_ready"
    assert body["failing"] == [c["name"] for c in body["checks"] if not c["ok"]]
    assert set(body["failing"]) == set(names), body
    assert body["error"]["code"] == "not_ready"
    assert all(name in body["error"]["message"] for name in names)
    alive, _ = await get(f"{server.url}/healthz")
    assert alive == 200  # not ready, but alive
    return body


async def test_a_working_server_is_ready_without_credentials(server: RunningServer) -> None:
    await assert_ready(server)
    _, body = await get(f"{server.url}/readyz")
    details = {c["name"]: c["detail"] for c in body["checks"]}
    assert "takes writes" in details["database"]
    assert "MiB free" in details["free_space"]
    assert "LAME" in details["mp3_encoder"]


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` seen through a read-only bind mount of itself (in the test process's private
    mount namespace) for the life of the context: new opens and new files under it fail
    with EROFS, as on a file system gone read-only. (Remounting the file system itself
    read-only is refused while the server holds its database open for writing.)"""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.skipif(not PRIVATE_MOUNTS, reason="needs a private mount namespace (root)")
@pytest.mark.embedded_database
async def test_a_read_only_data_folder_is_named(server: RunningServer) -> None:
    """Root writes whatever the file modes say, so the folder is made read-only by a
    mount, under the running server."""
    await assert_ready(server)
    with read_only(server.settings.data_dir):
        body = await assert_failing(server, "data_folder", "database")
    details = {c["name"]: c["detail"] for c in body["checks"]}
    assert "Read-only file system" in details["data_folder"]
    assert "readonly" in details["database"]
    await assert_ready(server)  # and ready again once it can write


async def _no_finalizer(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    await server.services.finalize_jobs.close()


async def _no_mp3_encoder(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp3_encoder, "lame_library_path", lambda: None)
    monkeypatch.setattr(mp3_encoder, "pyav_has_libmp3lame", lambda: False)


async def _nothing(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    return None


Breakage = Callable[[RunningServer, pytest.MonkeyPatch], Awaitable[None]]


@pytest.mark.parametrize(
    ("settings", "breakage", "failing"),
    [
        ({"min_free_mb": "10000000"}, _nothing, "free_space"),
        ({}, _no_finalizer, "finalizer"),
        ({}, _no_mp3_encoder, "mp3_encoder"),
    ],
    ids=["free-space-below-the-minimum", "finalizer-stopped", "no-mp3-encoder"],
)
async def test_each_failing_check_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, str],
    breakage: Breakage,
    failing: str,
) -> None:
    server = await start_server(tmp_path / "data", **settings)
    try:
        await breakage(server, monkeypatch)
        await assert_failing(server, failing)
    finally:
        await server.close()
