"""HTTP API: health, sessions (staff), JSON errors translated in one middleware."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from storyroom.archive.catalogue import ARCHIVE
from storyroom.archive.protocol import parse_search
from storyroom.errors import AuthError, InvalidInput, NotFound, PayloadTooLarge, StoryroomError
from storyroom.finalize.contracts import chapters_json
from storyroom.media.metrics import process_figures
from storyroom.recording.layout import recording_dir
from storyroom.room import protocol
from storyroom.room.sessions import create_session, describe_session
from storyroom.seats import SEATS
from storyroom.services import SERVICES, Services
from storyroom.staff.accounts import StaffIdentity
from storyroom.staff.audit import AUDIT
from storyroom.staff.tokens import require_staff
from storyroom.store import RecordingRow
from storyroom.web.downloads import send_file

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: StoryroomError) -> web.Response:
    headers = {}
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = 'Bearer realm="storyroom"'
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"error": exc.to_json()}, status=exc.status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{"error": {"code", "message"}}` with a fitting status."""
    try:
        return await handler(request)
    except StoryroomError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge("the request body is too large"))
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return web.json_response(
            {"error": {"code": code, "message": exc.reason}}, status=exc.status
        )
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response(
            {"error": {"code": "internal", "message": "Something went wrong on our side."}},
            status=500,
        )


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise InvalidInput(
            "send JSON with Content-Type: application/json",
            code="unsupported_media_type",
            status=415,
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("the request body is too large") from None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON", code="invalid_json") from None


class Api:
    """Route handlers; staff routes check the bearer token first."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def ctx(self) -> Services:
        return self.app[SERVICES]

    def staff(self, request: web.Request) -> StaffIdentity:
        return require_staff(request, self.ctx.staff_token)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        """Process health and the media plane's figures, for staff and the soak bench."""
        self.staff(request)
        return web.json_response(
            {"at": time.time(), "process": process_figures(), "media": self.ctx.media.metrics()}
        )

    async def create_session(self, request: web.Request) -> web.Response:
        self.staff(request)
        spec = protocol.parse_session_create(await read_json(request))
        created = await create_session(self.ctx.store, self.ctx.settings, spec)
        log.info("session %s created", created.id)
        return web.json_response(created.to_json(), status=201)

    async def get_session(self, request: web.Request) -> web.Response:
        self.staff(request)
        session_id = request.match_info["session_id"]
        if not protocol.ID_RE.match(session_id):
            raise NotFound("no such session")
        return web.json_response(await describe_session(self.ctx.store, self.ctx.rooms, session_id))

    async def list_sessions(self, request: web.Request) -> web.Response:
        self.staff(request)
        out = []
        for s in await self.ctx.store.list_sessions():
            room = self.ctx.rooms.live(s.id)
            recordings = await self.ctx.store.recordings_for(s.id)
            out.append(
                {
                    "id": s.id,
                    "title": s.title,
                    "language": s.language,
                    "target_minutes": s.target_minutes,
                    "created_at": s.created_at,
                    "connected": [
                        seat for seat in SEATS if room and room.connected(seat)
                    ],
                    "recording": (
                        room.state.value
                        if room
                        else (recordings[-1].status if recordings else "idle")
                    ),
                }
            )
        return web.json_response({"sessions": out})

    # -- recordings -----------------------------------------------------------------

    def _recording_json(self, rec: RecordingRow, title: str | None = None) -> dict[str, Any]:
        result = rec.finalized
        base = f"/api/recordings/{rec.id}/files/"
        files = [
            {**f.to_json(), "url": base + f.name} for f in (result.files if result else ())
        ]
        return {
            "id": rec.id,
            "session_id": rec.session_id,
            "title": title,
            "take": rec.take,
            "status": rec.public_status,
            "status_reason": rec.finalize_reason or rec.status_reason,
            "percent": rec.finalize_percent if rec.finalize_status else None,
            "started_at": rec.started_at,
            "stopped_at": rec.stopped_at,
            "duration_s": result.duration_s if result else rec.elapsed_before,
            "files": files if rec.finalize_status == "ready" else [],
            "chapters": chapters_json(result),
            "damaged": [d.to_json() for d in result.damaged] if result else [],
        }

    async def list_recordings(self, request: web.Request) -> web.Response:
        """Every recording, or those matching the query's filters (`staff_protocol`),
        with the archive's catalogue fields, first names and consent."""
        self.staff(request)
        found = await self.app[ARCHIVE].search(parse_search(request.query))
        return web.json_response(
            {
                "recordings": [
                    {**self._recording_json(rec, extra["title"]), **extra} for rec, extra in found
                ]
            }
        )

    async def _recording(self, request: web.Request) -> RecordingRow:
        recording_id = request.match_info["recording_id"]
        rec = (
            await self.ctx.store.get_recording(recording_id)
            if protocol.ID_RE.match(recording_id)
            else None
        )
        if rec is None:
            raise NotFound("no such recording")
        return rec

    async def get_recording(self, request: web.Request) -> web.Response:
        self.staff(request)
        rec = await self._recording(request)
        detail = await self.app[ARCHIVE].describe(rec)
        return web.json_response({**self._recording_json(rec, detail["title"]), **detail})

    async def download(self, request: web.Request) -> web.StreamResponse:
        """A finalized file; the name must be one the finalizer listed (never a path from input).
        Range and a strong ETag (the listed sha256); whole downloads go to the audit log."""
        who = self.staff(request)
        rec = await self._recording(request)
        wanted = request.match_info["name"]
        entry = (
            rec.finalized.file(wanted)
            if rec.finalized is not None and rec.finalize_status == "ready"
            else None
        )
        if entry is None:
            raise NotFound("no such file")
        root = recording_dir(self.ctx.settings.recordings_dir, rec.id).resolve()
        path = (root / entry.name).resolve()
        if root not in path.parents or not path.is_file():
            raise NotFound("no such file")
        filename = f"{rec.id}-{entry.name.replace('/', '-')}"
        byte_range = request.headers.get("Range")
        if request.method == "GET" and (byte_range is None or byte_range.strip() == "bytes=0-"):
            await self.app[AUDIT].record(
                who.actor, "download", rec.id, {"file": entry.name}, request.remote
            )
        return await send_file(request, path, sha256=entry.sha256, filename=filename)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/api/metrics", self.metrics),
            web.post("/api/sessions", self.create_session),
            web.get("/api/sessions", self.list_sessions),
            web.get("/api/sessions/{session_id}", self.get_session),
            web.get("/api/recordings", self.list_recordings),
            web.get("/api/recordings/{recording_id}", self.get_recording),
            web.get("/api/recordings/{recording_id}/files/{name:.+}", self.download),
        ]
