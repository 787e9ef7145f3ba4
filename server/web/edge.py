"""The HTTP edge put together: the middleware, the security headers, every wing's routes
and the pages, in one call from the app factory."""

from __future__ import annotations

from aiohttp import web

from storyroom.config import Settings
from storyroom.web.captures import CaptureRoutes
from storyroom.web.copies import CopyLinkRoutes
from storyroom.web.health import HealthRoutes
from storyroom.web.invites import PartnerInviteRoutes
from storyroom.web.matching import MatchingRoutes
from storyroom.web.middleware import (
    content_security_policy,
    errors_middleware,
    security_headers,
)
from storyroom.web.organisations import OrganisationRoutes
from storyroom.web.pages import add_page_routes
from storyroom.web.proxies import proxy_middleware
from storyroom.web.recordings import RecordingRoutes
from storyroom.web.request_ids import request_id_header, request_ids
from storyroom.web.sessions import SessionRoutes
from storyroom.web.staff import StaffRoutes
from storyroom.web.transcripts import TranscriptRoutes


def add_http_edge(app: web.Application, settings: Settings) -> None:
    """Install the edge on a new app (before it starts; the services come later)."""
    app.middlewares.append(request_ids)
    if settings.trusted_proxies:
        app.middlewares.append(proxy_middleware(settings.trusted_proxies))
    app.middlewares.append(errors_middleware)
    app.on_response_prepare.append(
        security_headers(content_security_policy(settings.download_origins))
    )
    app.on_response_prepare.append(request_id_header)
    for group in (
        HealthRoutes(app, settings),
        SessionRoutes(app),
        RecordingRoutes(app),
        TranscriptRoutes(app),
        CopyLinkRoutes(app),
        CaptureRoutes(app),
        StaffRoutes(app),
        MatchingRoutes(app, settings),
        PartnerInviteRoutes(app, settings),
        OrganisationRoutes(app),
    ):
        app.add_routes(group.routes().defs)
    add_page_routes(app, settings)
