"""HTTP routes of the browsers' own captures: open a run, upload its chunks in order,
close it, and ask how far it got.

These are not staff routes: each request carries the seat's token as
`Authorization: Bearer <token>` (the join link's key), checked by `_seat` before
anything is read; wrong tokens count against the client address like wrong staff
tokens. A seat reaches only its own runs (they live in its own folder) of its own
session's takes. Paths carry the server's ids and numbers only, never file names.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from storyroom.capture.layout import CaptureRun
from storyroom.capture.protocol import CHUNK_MAX_BYTES, parse_close, parse_open
from storyroom.errors import AuthError, InvalidInput, NotFound, PayloadTooLarge
from storyroom.fields import ID_RE
from storyroom.ids import hash_token
from storyroom.store import SeatRow
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, address

RUNS = "/api/capture/{recording_id}/runs"
RUN = RUNS + r"/{run:\d{1,4}}"


class CaptureRoutes(RouteGroup):
    async def _seat(self, request: web.Request) -> tuple[SeatRow, str]:
        """The seat the request's bearer token opens and the URL's recording id; else
        `AuthError` (or `NotFound` for an id the server could not have made)."""
        where = address(request)
        tokens = self.services.accounts.tokens
        tokens.check(where)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("uploads need the seat's key", code="token_missing")
        seat = await self.services.store.seat_by_token_hash(hash_token(token))
        if seat is None:
            tokens.fail(where)
            raise AuthError("this link is not valid", code="token_invalid")
        if seat.token_expires_at < time.time():
            raise AuthError("this link has expired", code="token_expired")
        recording_id = request.match_info["recording_id"]
        if not ID_RE.match(recording_id):
            raise NotFound("no such recording")
        return seat, recording_id

    async def open_run(self, request: web.Request) -> web.Response:
        seat, recording_id = await self._seat(request)
        opened = parse_open(await read_json(request))
        run, created = await self.services.captures.open_run(seat, recording_id, opened)
        return web.json_response(_run_json(run), status=201 if created else 200)

    async def run_state(self, request: web.Request) -> web.Response:
        seat, recording_id = await self._seat(request)
        number = int(request.match_info["run"])
        run = await self.services.captures.run_state(seat, recording_id, number)
        return web.json_response(_run_json(run), headers={"Cache-Control": "no-store"})

    async def put_chunk(self, request: web.Request) -> web.Response:
        seat, recording_id = await self._seat(request)
        body = await _read_capped(request, CHUNK_MAX_BYTES)
        stored = await self.services.captures.put_chunk(
            seat,
            recording_id,
            int(request.match_info["run"]),
            int(request.match_info["seq"]),
            body,
            request.headers.get("X-Chunk-Sha256"),
            request.headers.get("X-Capture-Recorded"),
            request.content_type,
        )
        return web.json_response(_run_json(stored.run), status=201 if stored.created else 200)

    async def close_run(self, request: web.Request) -> web.Response:
        seat, recording_id = await self._seat(request)
        chunks = parse_close(await read_json(request))
        number = int(request.match_info["run"])
        run = await self.services.captures.close_run(seat, recording_id, number, chunks)
        return web.json_response(_run_json(run))

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("POST", RUNS, self.open_run)
        routes.public("GET", RUN, self.run_state)
        routes.public("PUT", RUN + r"/chunks/{seq:\d{1,7}}", self.put_chunk)
        routes.public("POST", RUN + "/close", self.close_run)
        return routes


def _run_json(run: CaptureRun) -> dict[str, Any]:
    return {"run": run.run, "chunks": run.chunks, "bytes": run.bytes, "closed": run.closed}


async def _read_capped(request: web.Request, cap: int) -> bytes:
    """The raw body, refused past `cap` bytes without reading further (the app-wide JSON
    cap does not apply: a chunk may be larger than a JSON body)."""
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"a chunk may have at most {cap} bytes")
    data = bytearray()
    try:
        while piece := await request.content.read(64 * 1024):
            data += piece
            if len(data) > cap:
                raise PayloadTooLarge(f"a chunk may have at most {cap} bytes")
    except ConnectionResetError:
        # the browser gave up on this upload (its timeout) or went away; it sends the
        # chunk again, and nothing of this one was stored
        raise InvalidInput("the upload was cut off", code="incomplete_body") from None
    return bytes(data)
