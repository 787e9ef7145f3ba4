"""HTTP API: health, sessions (staff), JSON errors translated in one middleware."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import protocol
from .errors import AuthError, InvalidInput, NotFound, PayloadTooLarge, StoryroomError
from .services import SERVICES, Services
from .sessions import create_session, describe_session
from .staff import require_staff

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: StoryroomError) -> web.Response:
    headers = (
        {"WWW-Authenticate": 'Bearer realm="storyroom"'} if isinstance(exc, AuthError) else None
    )
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

    def staff(self, request: web.Request) -> None:
        require_staff(request, self.ctx.staff_token)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

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
                        seat for seat in ("a", "b", "facilitator") if room and room.connected(seat)
                    ],
                    "recording": (
                        room.state.value
                        if room
                        else (recordings[-1].status if recordings else "idle")
                    ),
                }
            )
        return web.json_response({"sessions": out})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.post("/api/sessions", self.create_session),
            web.get("/api/sessions", self.list_sessions),
            web.get("/api/sessions/{session_id}", self.get_session),
        ]
