"""How a wing declares its HTTP routes, and the staff guard.

A route is public or staff-only because of *where it is declared*: `Routes.staff` wraps
the handler in `staff_only`, which checks the staff credentials (the bearer token, or a
signed-in person's session cookie with its CSRF token on state-changing requests)
before the handler runs and hands it the `StaffIdentity`. A staff handler cannot be
declared without the guard, and cannot forget to call it.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from storyroom.config import Network
from storyroom.errors import Forbidden, NotFound
from storyroom.fields import ID_RE
from storyroom.orgs import OrgScope
from storyroom.services import SERVICES, Services
from storyroom.staff.accounts import Role, StaffIdentity
from storyroom.staff.tokens import require_staff
from storyroom.web.middleware import Handler
from storyroom.web.proxies import trusted

StaffHandler = Callable[[web.Request, StaffIdentity], Awaitable[web.StreamResponse]]
Row = TypeVar("Row")


def staff_only(handler: StaffHandler) -> Handler:
    """`handler` behind the staff guard: 401 without staff credentials, 403 for a cookie
    session's state-changing request without its CSRF token."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        who = await require_staff(request, services.staff_token, services.accounts)
        return await handler(request, who)

    return guarded


def from_networks_or_staff(networks: Sequence[Network], handler: Handler) -> Handler:
    """`handler` for clients in `networks` (the address the proxies middleware settled
    on), else behind the staff guard (401 without staff credentials) for platform admins
    (403 for anyone else: what it shows spans every organisation)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not trusted(request.remote, networks):
            services = request.app[SERVICES]
            who = await require_staff(request, services.staff_token, services.accounts)
            require_platform(who)
        return await handler(request)

    return guarded


class Routes:
    """One wing's route table; `app.add_routes(routes.defs)` registers it."""

    def __init__(self) -> None:
        self.defs: list[web.RouteDef] = []

    def public(self, method: str, path: str, handler: Handler) -> None:
        """A route anyone may call (it may check other credentials itself)."""
        self.defs.append(web.route(method, path, handler))

    def staff(self, method: str, path: str, handler: StaffHandler) -> None:
        """A staff route: the guard runs first and the handler gets the identity."""
        self.defs.append(web.route(method, path, staff_only(handler)))

    def staff_unless_from(
        self, networks: Sequence[Network], method: str, path: str, handler: Handler
    ) -> None:
        """A route open to clients in `networks` (a monitoring system on the same host or
        network) and behind the staff guard for everyone else."""
        self.defs.append(web.route(method, path, from_networks_or_staff(networks, handler)))


class RouteGroup(ABC):
    """A wing's handlers over the app's services (looked up per request: the services
    start in the app's cleanup context, after the routes are declared)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    async def audit(
        self,
        request: web.Request,
        who: StaffIdentity,
        action: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """A line in the audit log: this person did `action` to `target`, from here."""
        await self.services.audit.record(
            who.actor, action, target, detail, address(request), who.org_id
        )

    @abstractmethod
    def routes(self) -> Routes:
        """The group's route table."""


def require_admin(who: StaffIdentity, org_id: int) -> None:
    """Only `org_id`'s admins (and platform admins) go on; `Forbidden` for its other staff.
    Call it after the row was found in `who`'s scope: staff of another organisation have
    already had `NotFound`, so a 403 here tells them nothing they may not know."""
    if not who.admin_of(org_id):
        raise Forbidden("only the organisation's admins can do this", code="admin_only")


def require_platform(who: StaffIdentity) -> None:
    """Only platform admins (and the operator's staff token) go on: what they do or see
    spans every organisation (creating one, the server's own figures)."""
    if who.role is not Role.PLATFORM:
        raise Forbidden("only platform admins can do this", code="platform_only")


def address(request: web.Request) -> str:
    """The client's address as the audit log and the limits see it."""
    return request.remote or "unknown"


async def lookup(
    request: web.Request,
    who: StaffIdentity,
    kind: str,
    get: Callable[[str, OrgScope], Awaitable[Row | None]],
) -> Row:
    """What the URL's `{<kind>_id}` names, found with `get` among the rows of the
    organisations `who` sees; `NotFound` ("no such <kind>") for an unknown id, for one of
    another organisation (the same answer: a 403 would say it exists), and for one the
    server could not have made (never looked up)."""
    return await public_lookup(request, kind, functools.partial(_in_scope, get, who.scope))


async def _in_scope(
    get: Callable[[str, OrgScope], Awaitable[Row | None]], scope: OrgScope, value: str
) -> Row | None:
    return await get(value, scope)


async def public_lookup(
    request: web.Request, kind: str, get: Callable[[str], Awaitable[Row | None]]
) -> Row:
    """What a public route's `{<kind>_id}` names (`get` decides what the public may see);
    `NotFound` as for `lookup`."""
    value = request.match_info[f"{kind}_id"]
    found = await get(value) if ID_RE.match(value) else None
    if found is None:
        raise NotFound(f"no such {kind}")
    return found
