"""HTTP routes of organisations and their staff: platform admins create organisations
and see every one; an organisation's admins add and remove its staff accounts; anyone
may read an organisation's public face (name, logo, contact line) for the pages that
show it to participants and applicants.

Rows of another organisation are never read (`OrgScope` in every query), so its staff
get `NotFound`, the same answer as for something that does not exist.
"""

from __future__ import annotations

from aiohttp import web

from storyroom.errors import InvalidInput, InvalidState, NotFound
from storyroom.orgs import Organisation, OrgScope
from storyroom.staff.accounts import StaffIdentity
from storyroom.staff.protocol import parse_organisation, parse_staff_account, slug
from storyroom.store import Store
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, address, require_admin, require_platform

ACCOUNT_ID_MAX = 2**53


class OrganisationRoutes(RouteGroup):
    # -- organisations ---------------------------------------------------------------------

    async def list_organisations(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Every organisation for a platform admin; one's own for everyone else."""
        found = await self.services.store.organisations(who.scope)
        return web.json_response({"organisations": [o.to_json() for o in found]})

    async def create_organisation(self, request: web.Request, who: StaffIdentity) -> web.Response:
        require_platform(who)
        spec = parse_organisation(await read_json(request))
        org = await self.services.store.add_organisation(
            spec.slug, spec.name, spec.logo_url, spec.contact, spec.settings
        )
        await self.services.audit.record(
            who.actor, "organisation_created", org.slug, {"id": org.id}, None, org.id
        )
        return web.json_response(org.to_json(), status=201)

    async def public_organisation(self, request: web.Request) -> web.Response:
        """What the application form and participants' pages show of an organisation."""
        org = await named_organisation(request, self.services.store)
        return web.json_response(
            org.public_json(), headers={"Cache-Control": "public, max-age=300"}
        )

    # -- staff accounts ------------------------------------------------------------------------

    async def list_accounts(self, request: web.Request, who: StaffIdentity) -> web.Response:
        require_admin(who, who.org_id)
        users = await self.services.accounts.users(who.scope)
        return web.json_response({"accounts": [u.to_json() for u in users]})

    async def add_account(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """A new staff member or admin of the caller's organisation (a platform admin may
        name any organisation by its slug)."""
        require_admin(who, who.org_id)
        spec = parse_staff_account(await read_json(request))
        org_id = who.org_id
        if spec.organisation is not None:
            org = await self.services.store.organisation_by_slug(spec.organisation)
            if org is None or not who.scope.sees(org.id):
                raise NotFound("no such organisation")
            org_id = org.id
        user = await self.services.accounts.add_user(spec.email, spec.password, org_id, spec.role)
        await self.services.audit.record(
            who.actor,
            "staff_added",
            str(user.id),
            {"email": user.email, "role": user.role.value},
            address(request),
            org_id,
        )
        return web.json_response(user.to_json(), status=201)

    async def remove_account(self, request: web.Request, who: StaffIdentity) -> web.Response:
        require_admin(who, who.org_id)
        raw = request.match_info["account_id"]
        if not raw.isdigit() or int(raw) > ACCOUNT_ID_MAX:
            raise NotFound("no such staff account")
        accounts = self.services.accounts
        user = await accounts.user_by_id(int(raw), who.scope)
        if user is None:
            raise NotFound("no such staff account")
        if who.session is not None and user.id == who.session.user_id:
            raise InvalidState("you cannot remove your own account", code="own_account")
        await accounts.remove_user(user.id, OrgScope(user.org_id))
        await self.services.audit.record(
            who.actor,
            "staff_removed",
            str(user.id),
            {"email": user.email},
            address(request),
            user.org_id,
        )
        return web.json_response({"removed": user.id})

    def routes(self) -> Routes:
        routes = Routes()
        routes.staff("GET", "/api/organisations", self.list_organisations)
        routes.staff("POST", "/api/organisations", self.create_organisation)
        routes.public("GET", "/api/public/organisations/{organisation}", self.public_organisation)
        routes.staff("GET", "/api/staff/accounts", self.list_accounts)
        routes.staff("POST", "/api/staff/accounts", self.add_account)
        routes.staff("DELETE", "/api/staff/accounts/{account_id}", self.remove_account)
        return routes


async def named_organisation(request: web.Request, store: Store) -> Organisation:
    """The organisation whose slug is the URL's `{organisation}`; `NotFound` otherwise."""
    try:
        found = await store.organisation_by_slug(slug(request.match_info["organisation"]))
    except InvalidInput:
        found = None
    if found is None:
        raise NotFound("no such organisation")
    return found
