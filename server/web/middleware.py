"""What every HTTP request and response passes through: errors translated in one place,
the security headers, and reading a JSON body."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from storyroom.errors import AuthError, InvalidInput, PayloadTooLarge, StoryroomError

log = logging.getLogger(__name__)

FORWARDED_SECURE = web.RequestKey("forwarded_secure", bool)
"""Set on a request that came through a trusted proxy over HTTPS (owner: web.proxies)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def content_security_policy(media_origins: tuple[str, ...] = ()) -> str:
    """The one policy of every response; `media_origins` may also serve audio (the
    shared storage's presigned downloads, which the players follow)."""
    media = " ".join(("'self'", "blob:", *media_origins))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"media-src {media}; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    )


CSP = content_security_policy()


def error_response(exc: StoryroomError) -> web.Response:
    """`{"error": {"code", "message"}}` with the error's status (and its retry delay)."""
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


def security_headers(
    csp: str = CSP,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """on_response_prepare: every response gets these, errors, files and streams included."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        _security_headers(request, response, csp)

    return add


def _security_headers(request: web.Request, response: web.StreamResponse, csp: str) -> None:
    response.headers.setdefault("Content-Security-Policy", csp)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if request.secure or request.get(FORWARDED_SECURE):
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 415 without the JSON content type, 413 over the size limit,
    400 `invalid_json` when it does not parse. The payload's shape is the caller's to check."""
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
