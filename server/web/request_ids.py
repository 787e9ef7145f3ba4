"""Request ids: every HTTP request gets one, its log lines carry it (`logs.REQUEST_ID`)
and its response says it in `X-Request-Id`, so an operator can go from a response (or
a person's report of one) to the lines the server logged for it.

The id is always the server's own (`req_` and 16 hex digits); one sent by the client
is not taken.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import BaseRequest
from aiohttp.web_log import AccessLogger

from storyroom.ids import new_id
from storyroom.logs import REQUEST_ID
from storyroom.web.middleware import Handler

HEADER = "X-Request-Id"
REQUEST_ID_KEY = web.RequestKey("request_id", str)


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: whatever is logged below it carries the request's id."""
    request_id = new_id("req")
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)


async def request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: errors, files and streams say their id too."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[HEADER] = request_id


class RequestIdAccessLogger(AccessLogger):
    """aiohttp's access log line, logged with the request's id (it is written after
    the handler, outside the middleware)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        token = REQUEST_ID.set(response.headers.get(HEADER))
        try:
            super().log(request, response, time)
        finally:
            REQUEST_ID.reset(token)
