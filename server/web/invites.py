"""The published invitation page's routes: public by design (a person with no account
invites someone they know), so each is guarded by the `self_guided_invites` switch, a
rate limit per client address and, for the confirmation, the wrong-token limit."""

from __future__ import annotations

import logging

from aiohttp import web

from storyroom.config import Settings
from storyroom.errors import AuthError, NotFound
from storyroom.limits import RateLimit
from storyroom.matching.outbox import deliver
from storyroom.matching.partner_invites import (
    PartnerInvites,
    parse_confirmation,
    parse_partner_invite,
)
from storyroom.orgs import DEFAULT_ORG_ID
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, address

log = logging.getLogger(__name__)


class PartnerInviteRoutes(RouteGroup):
    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(app)
        self.limit = RateLimit(settings.invite_rate_limit)  # an hour

    @property
    def invites(self) -> PartnerInvites:
        return PartnerInvites(self.services.store, self.services.settings)

    def _open(self) -> None:
        if not self.services.settings.self_guided_invites:
            raise NotFound("invitations are not open here", code="invites_closed")

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"open": self.services.settings.self_guided_invites})

    async def request_invite(self, request: web.Request) -> web.Response:
        """Keep the request and mail its sender the confirmation link (the email check)."""
        self._open()
        self.limit.hit(address(request))
        spec = parse_partner_invite(await read_json(request))
        invite_id, message = await self.invites.request(spec)
        sent = await deliver(self.services.mailer, self.services.settings, message, DEFAULT_ORG_ID)
        log.info("invitation %s requested; confirmation sent via %s", invite_id, sent["via"])
        return web.json_response({"received": True}, status=202)

    async def confirm(self, request: web.Request) -> web.Response:
        """The sender opened the confirmation link: the self-guided session and both links."""
        self._open()
        where = address(request)
        tokens = self.services.accounts.tokens
        tokens.check(where)
        token = parse_confirmation(await read_json(request))
        invite = await self.invites.find(token)
        if invite is None:
            tokens.fail(where)
            raise AuthError("this link is not valid", code="link_invalid")
        created, messages = await self.invites.confirm(invite)
        for message in messages:
            await deliver(self.services.mailer, self.services.settings, message, DEFAULT_ORG_ID)
        log.info("invitation %s confirmed: session %s", invite.id, created.id)
        return web.json_response({"session_id": created.id, "url": created.urls["a"]}, status=201)

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("GET", "/api/invites", self.status)
        routes.public("POST", "/api/invites", self.request_invite)
        routes.public("POST", "/api/invites/confirm", self.confirm)
        return routes
