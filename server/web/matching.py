"""HTTP routes of the matching wing: the public application form and region list, and
for staff the applications, matching runs and proposals, facilitators, scheduling and
the outbox.

Every staff action that changes something or reads a message is written to the audit
log under the person who did it, like the archive's actions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from storyroom import fields
from storyroom.config import Settings
from storyroom.errors import InvalidInput, InvalidState
from storyroom.limits import RateLimit
from storyroom.matching.applications import (
    parse_application,
    parse_facilitator,
    parse_filter,
    parse_reschedule,
    parse_schedule,
)
from storyroom.matching.availability import in_zone, week_start
from storyroom.matching.engine import Policy, match
from storyroom.matching.outbox import describe
from storyroom.matching.regions import regions
from storyroom.matching.scheduling import Desk, cancel, confirm, plan_proposal, reschedule
from storyroom.matching.store import ApplicationRow, ApplicationStore, ProposalRow, ScheduleRow
from storyroom.orgs import DEFAULT_ORG_ID, OrgScope
from storyroom.staff.accounts import StaffIdentity
from storyroom.web.middleware import read_json
from storyroom.web.organisations import named_organisation
from storyroom.web.routes import RouteGroup, Routes, address, lookup, require_admin

log = logging.getLogger(__name__)

PROPOSAL_STATUSES = ("proposed", "accepted", "rejected", "scheduled", "cancelled")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _local(moment: datetime, time_zone: str, minutes: int) -> dict[str, Any]:
    """A moment as a person sees it: weekday (0 = Monday) and clock times in their zone."""
    start = in_zone(moment, time_zone)
    end = in_zone(moment + timedelta(minutes=minutes), time_zone)
    return {
        "day": start.weekday(),
        "start": f"{start.hour:02d}:{start.minute:02d}",
        "end": f"{end.hour:02d}:{end.minute:02d}",
        "time_zone": time_zone,
    }


class MatchingRoutes(RouteGroup):
    """Everything but the form and the region list is a staff route."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(app)
        self.limit = RateLimit(settings.apply_rate_limit)
        self._lock = asyncio.Lock()  # one matching run or schedule change at a time

    @property
    def store(self) -> ApplicationStore:
        return self.services.applications

    @property
    def desk(self) -> Desk:
        """What a schedule change touches."""
        s = self.services
        return Desk(s.store, s.applications, s.settings, s.mailer, s.copies)

    # -- public ---------------------------------------------------------------------

    async def region_list(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"regions": regions().to_json()}, headers={"Cache-Control": "public, max-age=3600"}
        )

    async def apply(self, request: web.Request) -> web.Response:
        """The default organisation's form (`/apply`)."""
        return await self._apply(request, DEFAULT_ORG_ID)

    async def apply_to(self, request: web.Request) -> web.Response:
        """An organisation's own form (`/apply/{organisation}`)."""
        org = await named_organisation(request, self.services.store)
        return await self._apply(request, org.id)

    async def _apply(self, request: web.Request, org_id: int) -> web.Response:
        self.limit.hit(address(request))
        spec = parse_application(await read_json(request))
        if spec is None:
            # The hidden field was filled in: a bot. Answer like a success, keep nothing.
            log.info("application form: honeypot filled in by %s; ignored", request.remote)
            return web.json_response({"received": True}, status=201)
        app_id = await self.store.add_application(spec, org_id)
        log.info("application %s received", app_id)
        return web.json_response({"received": True, "first_name": spec.first_name}, status=201)

    # -- applications ---------------------------------------------------------------------

    async def _application(self, request: web.Request, who: StaffIdentity) -> ApplicationRow:
        return await lookup(request, who, "application", self.store.get_application)

    async def list_applications(self, request: web.Request, who: StaffIdentity) -> web.Response:
        where = parse_filter(request.query)
        rows = await self.store.list_applications(where, who.scope)
        return web.json_response({"applications": [r.summary_json() for r in rows]})

    async def get_application(self, request: web.Request, who: StaffIdentity) -> web.Response:
        row = await self._application(request, who)
        proposals = await self.store.proposals_with(row.id)
        partners = await self.store.applications(
            p.b_id if p.a_id == row.id else p.a_id for p in proposals
        )
        history = []
        for p in proposals:
            partner = partners.get(p.b_id if p.a_id == row.id else p.a_id)
            history.append(
                {
                    "id": p.id,
                    "status": p.status,
                    "created_at": p.created_at,
                    "partner": partner.first_name if partner else None,
                }
            )
        return web.json_response({**row.staff_json(), "proposals": history})

    async def _take_out(
        self,
        request: web.Request,
        who: StaffIdentity,
        change: Callable[[str], Awaitable[None]],
        done: str,
    ) -> str:
        """Take the application out of matching by `change` (it is then `done`), logged
        and audited as `application_<done>`; its id."""
        async with self._lock:
            row = await self._application(request, who)
            await change(row.id)
        log.info("application %s %s", row.id, done)
        await self.audit(request, who, f"application_{done}", row.id)
        return row.id

    async def withdraw(self, request: web.Request, who: StaffIdentity) -> web.Response:
        app_id = await self._take_out(request, who, self.store.withdraw, "withdrawn")
        found = await self.store.get_application(app_id, who.scope)
        assert found is not None
        return web.json_response(found.staff_json())

    async def delete(self, request: web.Request, who: StaffIdentity) -> web.Response:
        await self._take_out(request, who, self.store.delete_application, "deleted")
        return web.Response(status=204)

    # -- matching -----------------------------------------------------------------------

    async def run_matching(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Pair everyone waiting; the new proposals wait for staff to accept or reject."""
        async with self._lock:
            waiting = await self.store.waiting(who.org_id)
            excluded = await self.store.proposed_pairs()
            policy = Policy(min_distance=self.services.settings.matching_min_distance)
            reference = week_start(datetime.now(UTC))
            result = await asyncio.to_thread(
                match,
                [a.for_matching() for a in waiting],
                regions(),
                reference,
                policy,
                excluded,
            )
            ids = await self.store.add_proposals(result.pairs, who.org_id)
        log.info("matching: %d waiting, %d pairs proposed", len(waiting), len(ids))
        await self.audit(
            request, who, "matching_run", None, {"waiting": len(waiting), "proposals": ids}
        )
        proposals = [
            p for p in await self.store.list_proposals(who.scope, "proposed") if p.id in set(ids)
        ]
        return web.json_response(
            {
                "waiting": len(waiting),
                "unmatched": len(result.unmatched),
                "proposals": await self._proposals_json(proposals),
            }
        )

    async def _proposals_json(self, proposals: list[ProposalRow]) -> list[dict[str, Any]]:
        people = await self.store.applications(i for p in proposals for i in (p.a_id, p.b_id))
        out = []
        for p in proposals:
            slot = p.explanation.get("slot", {})
            start = datetime.fromisoformat(slot["start"]) if slot.get("start") else None
            persons = []
            for app_id in (p.a_id, p.b_id):
                person = people.get(app_id)
                if person is None:
                    continue
                persons.append(
                    {
                        "id": person.id,
                        "first_name": person.first_name,
                        "city": person.city,
                        "region": person.region,
                        "placement": person.placement,
                        "speaks": list(person.speaks),
                        "status": person.status.value,
                        "slot": _local(start, person.time_zone, slot.get("minutes", 0))
                        if start
                        else None,
                    }
                )
            schedule = await self.store.schedule_for(p.id)
            out.append(
                {
                    "id": p.id,
                    "status": p.status,
                    "weight": p.weight,
                    "created_at": p.created_at,
                    "decided_at": p.decided_at,
                    "explanation": p.explanation,
                    "people": persons,
                    "schedule": await self._schedule_json(schedule) if schedule else None,
                }
            )
        return out

    async def list_proposals(self, request: web.Request, who: StaffIdentity) -> web.Response:
        status = request.query.get("status", "")
        if status and status not in PROPOSAL_STATUSES:
            raise InvalidInput(
                f"status must be one of {', '.join(PROPOSAL_STATUSES)}", code="invalid_value"
            )
        unknown = sorted(set(request.query) - {"status"})
        if unknown:
            raise InvalidInput(f"unknown parameter {unknown[0]!r}", code="unknown_field")
        proposals = await self.store.list_proposals(who.scope, status or None)
        return web.json_response({"proposals": await self._proposals_json(proposals)})

    async def _proposal(self, request: web.Request, who: StaffIdentity) -> ProposalRow:
        return await lookup(request, who, "proposal", self.store.get_proposal)

    async def _decide(self, request: web.Request, who: StaffIdentity, accept: bool) -> web.Response:
        async with self._lock:
            proposal = await self._proposal(request, who)
            if proposal.status != "proposed":
                raise InvalidState(f"this proposal is already {proposal.status}")
            await self.store.decide(proposal, accept)
            updated = await self.store.get_proposal(proposal.id, who.scope)
        assert updated is not None
        action = "proposal_accepted" if accept else "proposal_rejected"
        await self.audit(request, who, action, proposal.id)
        return web.json_response((await self._proposals_json([updated]))[0])

    async def accept(self, request: web.Request, who: StaffIdentity) -> web.Response:
        return await self._decide(request, who, True)

    async def reject(self, request: web.Request, who: StaffIdentity) -> web.Response:
        return await self._decide(request, who, False)

    # -- scheduling -----------------------------------------------------------------------

    async def _schedule_json(self, schedule: ScheduleRow) -> dict[str, Any]:
        facilitator = await self.store.get_facilitator(
            schedule.facilitator_id, OrgScope(schedule.org_id)
        )
        return {
            "id": schedule.id,
            "proposal_id": schedule.proposal_id,
            "status": schedule.status,
            "language": schedule.language,
            "starts_at": _iso(schedule.starts_at),
            "minutes": schedule.minutes,
            "facilitator": (
                {
                    "id": facilitator.id,
                    "first_name": facilitator.first_name,
                    "time_zone": facilitator.time_zone,
                }
                if facilitator
                else None
            ),
            "session_id": schedule.session_id,
            "sequence": schedule.sequence,
            "invitations": schedule.invitations,
        }

    async def schedule(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Propose (or re-propose, with staff's choice) a time and a facilitator."""
        choice = parse_schedule(await read_json(request) if request.can_read_body else None)
        async with self._lock:
            proposal = await self._proposal(request, who)
            planned = await plan_proposal(self.store, proposal, choice, datetime.now(UTC))
        await self.audit(
            request,
            who,
            "proposal_scheduled",
            proposal.id,
            {
                "schedule": planned.id,
                "starts_at": _iso(planned.starts_at),
                "facilitator": planned.facilitator_id,
            },
        )
        return web.json_response(await self._schedule_json(planned))

    async def list_schedules(self, request: web.Request, who: StaffIdentity) -> web.Response:
        return web.json_response(
            {
                "schedules": [
                    await self._schedule_json(s) for s in await self.store.schedules(who.scope)
                ]
            }
        )

    async def confirm(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Create the session and send the three invitations."""
        async with self._lock:
            schedule = await lookup(request, who, "schedule", self.store.get_schedule)
            done = await confirm(self.desk, schedule, datetime.now(UTC))
            confirmed = await self.store.get_schedule(schedule.id, who.scope)
        assert confirmed is not None
        await self.audit(
            request,
            who,
            "schedule_confirmed",
            schedule.id,
            {"proposal": schedule.proposal_id, "session_id": done.session_id},
        )
        return web.json_response(
            {**await self._schedule_json(confirmed), "session_id": done.session_id}
        )

    async def reschedule(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Move a confirmed session: new links, and updated invitations that replace the
        calendar entries sent before."""
        starts_at = parse_reschedule(await read_json(request))
        async with self._lock:
            schedule = await lookup(request, who, "schedule", self.store.get_schedule)
            moved = await reschedule(self.desk, schedule, starts_at, datetime.now(UTC))
        await self.audit(
            request,
            who,
            "schedule_moved",
            schedule.id,
            {
                "from": _iso(schedule.starts_at),
                "starts_at": _iso(moved.starts_at),
                "sequence": moved.sequence,
            },
        )
        return web.json_response(await self._schedule_json(moved))

    async def cancel(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Cancel a confirmed session: its links stop working, and cancellations remove
        the calendar entries sent before."""
        if request.can_read_body:
            fields.obj(await read_json(request), set(), set(), "cancel")
        async with self._lock:
            schedule = await lookup(request, who, "schedule", self.store.get_schedule)
            cancelled = await cancel(self.desk, schedule, datetime.now(UTC))
        await self.audit(
            request, who, "schedule_cancelled", schedule.id, {"sequence": cancelled.sequence}
        )
        return web.json_response(await self._schedule_json(cancelled))

    # -- facilitators ---------------------------------------------------------------------

    async def list_facilitators(self, request: web.Request, who: StaffIdentity) -> web.Response:
        return web.json_response(
            {"facilitators": [f.staff_json() for f in await self.store.facilitators(who.scope)]}
        )

    async def add_facilitator(self, request: web.Request, who: StaffIdentity) -> web.Response:
        require_admin(who, who.org_id)
        spec = parse_facilitator(await read_json(request))
        facilitator_id = await self.store.add_facilitator(spec, who.org_id)
        found = await self.store.get_facilitator(facilitator_id, who.scope)
        assert found is not None
        await self.audit(request, who, "facilitator_added", found.id)
        return web.json_response(found.staff_json(), status=201)

    async def _set_active(
        self, request: web.Request, who: StaffIdentity, active: bool
    ) -> web.Response:
        facilitator = await lookup(request, who, "facilitator", self.store.get_facilitator)
        require_admin(who, facilitator.org_id)
        await self.store.set_facilitator_active(facilitator.id, active)
        found = await self.store.get_facilitator(facilitator.id, who.scope)
        assert found is not None
        action = "facilitator_activated" if active else "facilitator_deactivated"
        await self.audit(request, who, action, found.id)
        return web.json_response(found.staff_json())

    async def deactivate(self, request: web.Request, who: StaffIdentity) -> web.Response:
        return await self._set_active(request, who, False)

    async def activate(self, request: web.Request, who: StaffIdentity) -> web.Response:
        return await self._set_active(request, who, True)

    # -- outbox -------------------------------------------------------------------------

    async def list_outbox(self, request: web.Request, who: StaffIdentity) -> web.Response:
        entries = await self.services.outbox.entries(who.scope)
        return web.json_response(
            {"via": self.services.mailer.via, "messages": [e.to_json() for e in entries]}
        )

    async def read_message(self, request: web.Request, who: StaffIdentity) -> web.Response:
        name = request.match_info["name"]
        message, _ = await self.services.outbox.read(name, who.scope)
        await self.audit(request, who, "outbox_read", name)
        return web.json_response({"name": name, **describe(message)})

    async def raw_message(self, request: web.Request, who: StaffIdentity) -> web.Response:
        name = request.match_info["name"]
        _, data = await self.services.outbox.read(name, who.scope)
        await self.audit(request, who, "outbox_read", name, {"raw": True})
        return web.Response(
            body=data,
            content_type="message/rfc822",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "private, no-store",
            },
        )

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("GET", "/api/regions", self.region_list)
        routes.public("POST", "/api/applications", self.apply)
        routes.public("POST", "/api/apply/{organisation}", self.apply_to)
        routes.staff("GET", "/api/applications", self.list_applications)
        routes.staff("GET", "/api/applications/{application_id}", self.get_application)
        routes.staff("POST", "/api/applications/{application_id}/withdraw", self.withdraw)
        routes.staff("DELETE", "/api/applications/{application_id}", self.delete)
        routes.staff("POST", "/api/matching/run", self.run_matching)
        routes.staff("GET", "/api/proposals", self.list_proposals)
        routes.staff("POST", "/api/proposals/{proposal_id}/accept", self.accept)
        routes.staff("POST", "/api/proposals/{proposal_id}/reject", self.reject)
        routes.staff("POST", "/api/proposals/{proposal_id}/schedule", self.schedule)
        routes.staff("GET", "/api/schedules", self.list_schedules)
        routes.staff("POST", "/api/schedules/{schedule_id}/confirm", self.confirm)
        routes.staff("POST", "/api/schedules/{schedule_id}/reschedule", self.reschedule)
        routes.staff("POST", "/api/schedules/{schedule_id}/cancel", self.cancel)
        routes.staff("GET", "/api/facilitators", self.list_facilitators)
        routes.staff("POST", "/api/facilitators", self.add_facilitator)
        routes.staff("POST", "/api/facilitators/{facilitator_id}/deactivate", self.deactivate)
        routes.staff("POST", "/api/facilitators/{facilitator_id}/activate", self.activate)
        routes.staff("GET", "/api/outbox", self.list_outbox)
        routes.staff("GET", "/api/outbox/{name}", self.read_message)
        routes.staff("GET", "/api/outbox/{name}/raw", self.raw_message)
        return routes
