"""HTTP routes of the staff themselves: sign-in (the form's CSRF token, then the session
cookie), sign-out, who am I, and reading the audit log.

Sign-in is public by nature and protected by its own double-submit CSRF token; every
attempt, good or bad, goes to the audit log.
"""

from __future__ import annotations

import json

from aiohttp import web

from storyroom.archive.protocol import parse_audit_query, parse_signin
from storyroom.errors import AuthError, InvalidInput
from storyroom.orgs import DEFAULT_ORG_ID
from storyroom.staff.accounts import StaffIdentity, normalize_email
from storyroom.staff.audit import ACTIONS
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, address


class StaffRoutes(RouteGroup):
    async def signin_csrf(self, request: web.Request) -> web.Response:
        response = web.Response(content_type="application/json")
        token = self.services.accounts.signin_csrf(request, response)
        response.text = json.dumps({"csrf": token})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def signin(self, request: web.Request) -> web.Response:
        accounts, audit = self.services.accounts, self.services.audit
        accounts.check_signin_csrf(request)
        body = parse_signin(await read_json(request))
        try:
            session, token = await accounts.sign_in(body.email, body.password, address(request))
        except AuthError:
            # only something shaped like an email: people type passwords into the wrong box
            try:
                who = normalize_email(body.email)
            except InvalidInput:
                who = "unknown"
            # in the log of the account's organisation; an email with no account here goes
            # to the default organisation's, where a single-team install always read it
            account = await accounts.user(who) if who != "unknown" else None
            org_id = account.org_id if account is not None else DEFAULT_ORG_ID
            await audit.record(who, "sign_in_failed", None, {}, address(request), org_id)
            raise
        await audit.record(session.email, "sign_in", None, {}, address(request), session.org_id)
        response = web.json_response({"email": session.email, "csrf": session.csrf})
        response.headers["Cache-Control"] = "no-store"
        accounts.set_session_cookie(request, response, token)
        return response

    async def signout(self, request: web.Request, who: StaffIdentity) -> web.Response:
        accounts = self.services.accounts
        if who.session is not None:
            await accounts.sign_out(who.session)
            await self.audit(request, who, "sign_out")
        response = web.json_response({"ok": True})
        accounts.clear_session_cookie(request, response)
        return response

    async def me(self, request: web.Request, who: StaffIdentity) -> web.Response:
        org = await self.services.store.organisation(who.org_id)
        response = web.json_response(
            {
                "email": who.session.email if who.session else None,
                "actor": who.actor,
                "via": who.via,
                "csrf": who.session.csrf if who.session else None,
                "expires_at": who.session.expires_at if who.session else None,
                "role": who.role.value,
                "organisation": org.public_json() if org else None,
            }
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def read_audit(self, request: web.Request, who: StaffIdentity) -> web.Response:
        query = parse_audit_query(request.query, ACTIONS)
        entries = await self.services.audit.entries(
            who.scope,
            limit=query.limit,
            before=query.before,
            action=query.action,
            target=query.target,
        )
        return web.json_response({"entries": [e.to_json() for e in entries]})

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("GET", "/api/staff/csrf", self.signin_csrf)
        routes.public("POST", "/api/staff/signin", self.signin)
        routes.staff("POST", "/api/staff/signout", self.signout)
        routes.staff("GET", "/api/staff/me", self.me)
        routes.staff("GET", "/api/audit", self.read_audit)
        return routes
