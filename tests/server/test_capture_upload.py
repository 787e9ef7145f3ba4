"""The capture upload endpoints on a real server over HTTP: runs opened, chunks stored in
order and crash-safely, the index the merge reads, progress to the facilitator, and a
table of bad uploads that are refused and disturb nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from storyroom.capture import layout
from storyroom.capture.protocol import CHUNK_MAX_BYTES
from support.server import (
    RunningServer,
    SeatClient,
    close_clients,
    create_session,
    give_consent,
    seat_clients,
    wait_for,
)

WEBM = "audio/webm;codecs=opus"
MAGIC = b"\x1a\x45\xdf\xa3"


def chunk(seq: int, size: int = 4000) -> bytes:
    body = os.urandom(size)
    return MAGIC + body[4:] if seq == 0 else body


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Take:
    server: RunningServer
    http: aiohttp.ClientSession
    created: dict[str, Any]
    clients: dict[str, SeatClient]
    recording_id: str

    def token(self, seat: str) -> str:
        return str(self.created["seats"][seat]["token"])

    def url(self, path: str = "") -> str:
        return f"{self.server.url}/api/capture/{self.recording_id}/runs{path}"

    async def request(
        self,
        method: str,
        path: str,
        seat: str = "a",
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        url: str | None = None,
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {token if token is not None else self.token(seat)}"}
        sent.update(headers or {})
        async with self.http.request(
            method, url or self.url(path), json=json, data=data, headers=sent
        ) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, body

    async def open(self, seat: str = "a", key: str = "k1", mime: str = WEBM) -> int:
        status, body = await self.request(
            "POST", "", seat, json={"mime": mime, "rec_start": 0.5, "server_start": 1e9, "key": key}
        )
        assert status == 201, body
        return int(body["run"])

    async def put(
        self, run: int, seq: int, data: bytes, seat: str = "a", **headers: str
    ) -> tuple[int, Any]:
        sent = {
            "Content-Type": "application/octet-stream",
            "X-Chunk-Sha256": digest(data),
            "X-Capture-Recorded": str(seq + 1),
        }
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        return await self.request("PUT", f"/{run}/chunks/{seq}", seat, data=data, headers=sent)


@pytest.fixture
async def take(server: RunningServer) -> AsyncIterator[Take]:
    created = await create_session(server.url)
    clients = await seat_clients(server.url, created)
    try:
        await give_consent(clients)
        ack = await clients["facilitator"].call("recording:start")
        assert ack["ok"], ack
        async with aiohttp.ClientSession() as http:
            yield Take(server, http, created, clients, ack["recording"]["id"])
    finally:
        await close_clients(clients)


def rec_dir(take: Take) -> Any:
    return take.server.settings.recordings_dir / take.recording_id


async def test_chunks_are_stored_in_order_with_an_index_the_merge_reads(take: Take) -> None:
    run = await take.open()
    sent = [chunk(seq) for seq in range(3)]
    for seq, data in enumerate(sent):
        status, body = await take.put(run, seq, data)
        assert status == 201, body
        assert body["chunks"] == seq + 1
    # a retry whose answer was lost: the same bytes again are accepted, nothing doubles
    status, body = await take.put(run, 1, sent[1])
    assert (status, body["chunks"]) == (200, 3)
    status, body = await take.request("POST", f"/{run}/close", json={"chunks": 3})
    assert (status, body["closed"]) == (200, True), body

    stored = layout.read_run(rec_dir(take), "a", run)
    assert stored is not None
    assert (stored.chunks, stored.bytes, stored.closed) == (3, sum(map(len, sent)), True)
    assert stored.media.read_bytes() == b"".join(sent)
    assert stored.chunk_sha256 == tuple(map(digest, sent))
    assert stored.mime == WEBM and stored.key == "k1" and stored.rec_start == 0.5
    assert layout.captured_seats(rec_dir(take)) == ["a"]

    # the facilitator heard how much arrived
    f = take.clients["facilitator"]
    progress = await wait_for(
        lambda: next(
            (
                d
                for e, d in reversed(f.events)
                if e == "capture:progress" and d["seats"]["a"]["closed"]
            ),
            None,
        ),
        what="capture progress",
    )
    assert progress["recording_id"] == take.recording_id
    assert progress["seats"]["a"] == {
        "runs": 1,
        "chunks": 3,
        "recorded": 3,
        "bytes": stored.bytes,
        "closed": True,
        "percent": 100,
    }


async def test_a_closed_run_is_told_to_its_followers_and_a_returning_console_hears_progress(
    take: Take,
) -> None:
    closed: list[str] = []

    async def follower(recording_id: str) -> None:
        closed.append(recording_id)

    take.server.services.captures.on_run_closed(follower)
    run = await take.open(seat="b")
    assert (await take.put(run, 0, chunk(0), seat="b"))[0] == 201
    assert closed == []
    status, _ = await take.request("POST", f"/{run}/close", "b", json={"chunks": 1})
    assert (status, closed) == (200, [take.recording_id])

    # the facilitator's console reloads: it hears the figures without a new chunk
    await take.clients["facilitator"].close()
    console = SeatClient(take.server.url, take.token("facilitator"))
    take.clients["facilitator"] = console
    await console.connect()
    progress = await wait_for(
        lambda: next((d for e, d in console.events if e == "capture:progress"), None),
        what="capture progress on joining",
    )
    assert progress["seats"]["b"]["closed"] is True
    assert "a" not in progress["seats"]


async def test_a_retried_open_finds_its_run_and_a_reload_starts_the_next(take: Take) -> None:
    first = await take.open(key="page1")
    status, body = await take.request("POST", "", json={"mime": WEBM, "key": "page1"})
    assert (status, body["run"]) == (200, first)
    second = await take.open(key="page2")
    assert second == first + 1
    # another seat's runs are numbered in its own folder
    assert await take.open(seat="b", key="page1") == 1
    status, body = await take.request("GET", f"/{second}")
    assert (status, body) == (200, {"run": second, "chunks": 0, "bytes": 0, "closed": False})


async def test_uploads_go_on_after_stop_until_the_window_closes(take: Take) -> None:
    run = await take.open()
    assert (await take.put(run, 0, chunk(0)))[0] == 201
    assert (await take.clients["facilitator"].call("recording:stop"))["ok"]
    assert (await take.put(run, 1, chunk(1)))[0] == 201
    take.server.services.captures.window_s = 0.0
    status, body = await take.put(run, 2, chunk(2))
    assert (status, body["error"]["code"]) == (409, "upload_window_closed")
    # what arrived is still readable
    status, body = await take.request("GET", f"/{run}")
    assert (status, body["chunks"]) == (200, 2)


async def test_a_torn_tail_from_a_crash_is_cut_off_before_the_next_chunk(take: Take) -> None:
    run = await take.open()
    first = chunk(0)
    assert (await take.put(run, 0, first))[0] == 201
    folder = rec_dir(take)
    media = layout.run_media(folder, "a", run, WEBM)
    index = layout.run_index(folder, "a", run)
    # a crash mid-write: bytes beyond the index, and half an index line
    media.write_bytes(media.read_bytes() + b"torn bytes")
    index.write_bytes(index.read_bytes() + b'{"type": "chunk", "se')
    captures = take.server.services.captures
    captures._progress.clear()  # a restarted server reads the run from disk
    second = chunk(1)
    status, body = await take.put(run, 1, second)
    assert status == 201, body
    stored = layout.read_run(folder, "a", run)
    assert stored is not None and stored.chunks == 2
    assert media.read_bytes() == first + second


@dataclass(frozen=True)
class Bad:
    name: str
    status: int
    code: str


async def test_bad_uploads_are_refused_and_disturb_nothing(
    take: Take, server: RunningServer
) -> None:
    run = await take.open()
    good = [chunk(0), chunk(1)]
    for seq, data in enumerate(good):
        assert (await take.put(run, seq, data))[0] == 201
    other = await create_session(server.url)
    other_token = other["seats"]["a"]["token"]
    octet = {"Content-Type": "application/octet-stream"}

    async def put(seq: int, data: bytes, **kw: Any) -> tuple[int, Any]:
        headers = {**octet, "X-Chunk-Sha256": digest(data), **kw.pop("headers", {})}
        return await take.request("PUT", f"/{run}/chunks/{seq}", data=data, headers=headers, **kw)

    big = os.urandom(CHUNK_MAX_BYTES + 1)
    cases: list[tuple[Bad, Any]] = [
        (Bad("no token", 401, "token_missing"), put(2, chunk(2), token="")),
        (Bad("wrong token", 401, "token_invalid"), put(2, chunk(2), token="x" * 32)),
        (Bad("another session's token", 404, "not_found"), put(2, chunk(2), token=other_token)),
        (Bad("a seat without this run", 404, "unknown_run"), put(2, chunk(2), seat="b")),
        (
            Bad("the facilitator without this run", 404, "unknown_run"),
            put(2, chunk(2), seat="facilitator"),
        ),
        (
            Bad("a take that does not exist", 404, "not_found"),
            put(
                2,
                chunk(2),
                url=f"{server.url}/api/capture/rec_0000000000000000/runs/{run}/chunks/2",
            ),
        ),
        (
            Bad("an id the server could not have made", 404, "not_found"),
            put(2, chunk(2), url=f"{server.url}/api/capture/..%2F..%2Fetc/runs/{run}/chunks/2"),
        ),
        (Bad("an unknown run", 404, "unknown_run"), take.put(run + 5, 0, chunk(0))),
        (Bad("oversize", 413, "too_large"), put(2, big)),
        (Bad("empty", 400, "empty_chunk"), put(2, b"")),
        (Bad("no digest", 400, "missing_digest"), put(2, chunk(2), headers={"X-Chunk-Sha256": ""})),
        (
            Bad("garbage body (digest of other bytes)", 400, "digest_mismatch"),
            put(2, chunk(2), headers={"X-Chunk-Sha256": digest(b"other")}),
        ),
        (
            Bad("bad content type", 415, "unsupported_media_type"),
            put(2, chunk(2), headers={"Content-Type": "text/html"}),
        ),
        (Bad("replayed seq, other bytes", 409, "seq_conflict"), put(1, chunk(1))),
        (Bad("out of order", 409, "out_of_order"), put(3, chunk(3))),
        (
            Bad("bad recorded count", 400, "invalid_value"),
            put(2, chunk(2), headers={"X-Capture-Recorded": "-1"}),
        ),
        (
            Bad("open: garbage MIME", 400, "invalid_mime"),
            take.request("POST", "", json={"mime": "audio/<script>", "key": "k9"}),
        ),
        (
            Bad("open: not an audio container", 400, "unsupported_mime"),
            take.request("POST", "", json={"mime": "video/x-flv", "key": "k9"}),
        ),
        (
            Bad("open: unknown field", 400, "unknown_field"),
            take.request("POST", "", json={"mime": WEBM, "key": "k9", "path": "/etc"}),
        ),
        (
            Bad("open: bad key", 400, "invalid_value"),
            take.request("POST", "", json={"mime": WEBM, "key": "../x"}),
        ),
        (
            Bad("open: rec_start not a number", 400, "invalid_type"),
            take.request("POST", "", json={"mime": WEBM, "key": "k9", "rec_start": "soon"}),
        ),
        (
            Bad("open: a key used for another type", 409, "key_conflict"),
            take.request("POST", "", json={"mime": "audio/ogg", "key": "k1"}),
        ),
        (
            Bad("open: not JSON", 400, "invalid_json"),
            take.request("POST", "", data=b"{", headers={"Content-Type": "application/json"}),
        ),
        (
            Bad("close: missing chunks", 409, "chunks_missing"),
            take.request("POST", f"/{run}/close", json={"chunks": 5}),
        ),
        (
            Bad("close: not a number", 400, "invalid_type"),
            take.request("POST", f"/{run}/close", json={"chunks": "2"}),
        ),
    ]
    for bad, call in cases:
        status, body = await call
        assert (status, body["error"]["code"]) == (bad.status, bad.code), (bad.name, body)

    # a run that does not start its container; a recorder's first chunk may be one byte
    fresh = await take.open(key="fresh")
    status, body = await take.put(fresh, 0, b"<html>" + os.urandom(100))
    assert (status, body["error"]["code"]) == (400, "not_audio")
    assert (await take.put(fresh, 0, MAGIC[:1]))[0] == 201
    status, body = await take.put(fresh, 1, b"\x45\x00" + os.urandom(100))
    assert (status, body["error"]["code"]) == (400, "not_audio")
    assert (await take.put(fresh, 1, MAGIC[1:] + os.urandom(100)))[0] == 201

    # after close: nothing more, but the same close again is fine
    assert (await take.request("POST", f"/{run}/close", json={"chunks": 2}))[0] == 200
    assert (await take.request("POST", f"/{run}/close", json={"chunks": 2}))[0] == 200
    status, body = await put(2, chunk(2))
    assert (status, body["error"]["code"]) == (409, "run_closed")

    # nothing was disturbed: the run holds exactly the good chunks
    stored = layout.read_run(rec_dir(take), "a", run)
    assert stored is not None
    assert (stored.chunks, stored.closed) == (2, True)
    assert stored.media.read_bytes() == b"".join(good)
    assert layout.read_runs(rec_dir(take), "b") == []


async def test_a_take_of_the_session_long_stopped_refuses_uploads_at_open(take: Take) -> None:
    assert (await take.clients["facilitator"].call("recording:stop"))["ok"]
    take.server.services.captures.window_s = 0.0
    status, body = await take.request("POST", "", json={"mime": WEBM, "key": "late"})
    assert (status, body["error"]["code"]) == (409, "upload_window_closed")
