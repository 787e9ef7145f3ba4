"""Staff routes of the rooms' sessions: create one (with its seats' join links), list
them with who is connected and how the recording stands, describe one."""

from __future__ import annotations

import logging

from aiohttp import web

from storyroom import fields
from storyroom.errors import NotFound
from storyroom.room import protocol
from storyroom.room.sessions import create_session, describe_session, new_seat_links, parse_seat
from storyroom.room.staff_feed import recording_fields
from storyroom.staff.accounts import StaffIdentity
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes

log = logging.getLogger(__name__)


class SessionRoutes(RouteGroup):
    async def create_session(self, request: web.Request, who: StaffIdentity) -> web.Response:
        spec = protocol.parse_session_create(await read_json(request))
        created = await create_session(
            self.services.store, self.services.settings, spec, who.org_id
        )
        log.info("session %s created", created.id)
        return web.json_response(created.to_json(), status=201)

    async def get_session(self, request: web.Request, who: StaffIdentity) -> web.Response:
        session_id = request.match_info["session_id"]
        if not fields.ID_RE.match(session_id):
            raise NotFound("no such session")
        return web.json_response(
            await describe_session(self.services.store, self.services.rooms, who.scope, session_id)
        )

    async def reissue_seat(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """A new join link for one seat: the old one stops opening it at once, and a
        connection made with it is closed."""
        session_id = request.match_info["session_id"]
        if not fields.ID_RE.match(session_id):
            raise NotFound("no such session")
        seat = parse_seat(request.match_info["seat"])
        if request.can_read_body:
            fields.obj(await read_json(request), set(), set(), "reissue")
        links = await new_seat_links(
            self.services.store, self.services.settings, who.scope, session_id, (seat.value,)
        )
        link = links[seat.value]
        closed = await self.services.signaling.close_seat(session_id, seat.value)
        await self.audit(
            request, who, "seat_link_reissued", session_id, {"seat": seat.value, "closed": closed}
        )
        log.info("session %s: seat %s has a new link", session_id, seat.value)
        return web.json_response(link.to_json(), status=201)

    async def list_sessions(self, request: web.Request, who: StaffIdentity) -> web.Response:
        store, rooms = self.services.store, self.services.rooms
        out = []
        for s in await store.list_sessions(who.scope):
            room = rooms.live(s.id)
            recordings = await store.recordings_for(s.id)
            latest = room.recording if room and room.recording else None
            if latest is None and recordings:
                latest = recordings[-1]
            out.append(
                {
                    "id": s.id,
                    "kind": s.kind.value,
                    "title": s.title,
                    "language": s.language,
                    "target_minutes": s.target_minutes,
                    "created_at": s.created_at,
                    "connected": [seat for seat in s.kind.seats if room and room.connected(seat)],
                    # the latest take as the recordings list words it (one status for
                    # both), as the staff feed sends it live
                    **recording_fields(latest),
                }
            )
        return web.json_response({"sessions": out})

    def routes(self) -> Routes:
        routes = Routes()
        routes.staff("POST", "/api/sessions", self.create_session)
        routes.staff("GET", "/api/sessions", self.list_sessions)
        routes.staff("GET", "/api/sessions/{session_id}", self.get_session)
        routes.staff("POST", "/api/sessions/{session_id}/seats/{seat}/reissue", self.reissue_seat)
        return routes
