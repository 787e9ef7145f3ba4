"""HTTP routes of the participants' copy links: the copy page's data, the participant's own
archive/public consent, and their copy of the conversation.

These are not staff routes: each request carries the copy link's token as
`Authorization: Bearer <token>`, checked by `_copy` before anything is read. Wrong
tokens count against the client address like wrong staff tokens.
"""

from __future__ import annotations

import logging

from aiohttp import web

from storyroom.archive.copies import CopyLink, access_entry
from storyroom.archive.protocol import parse_participant_consent
from storyroom.errors import AuthError, Forbidden, NotFound
from storyroom.finalize.contracts import chapters_json
from storyroom.store import RecordingRow
from storyroom.web.downloads import recording_file, send_file, whole_download
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, address

log = logging.getLogger(__name__)


class CopyLinkRoutes(RouteGroup):
    async def _copy(self, request: web.Request) -> tuple[CopyLink, RecordingRow]:
        """The link the request's bearer token opens, and its recording; else `AuthError`."""
        where = address(request)
        tokens = self.services.accounts.tokens
        tokens.check(where)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("this page needs the full link you were sent", code="link_missing")
        link = await self.services.copies.find(token)
        if link is None:
            tokens.fail(where)
            raise AuthError("this link is not valid", code="link_invalid")
        state = link.state()
        if state != "active":
            raise AuthError(
                "this link has expired" if state == "expired" else "this link was withdrawn",
                code=f"link_{state}",
            )
        rec = await self.services.store.get_recording(link.recording_id)
        if rec is None:
            raise AuthError("this link is not valid", code="link_invalid")
        return link, rec

    async def copy_page(self, request: web.Request) -> web.Response:
        link, rec = await self._copy(request)
        detail = await self.services.archive.describe(rec)
        own = detail["consent_by_seat"][link.seat]
        entry = access_entry(rec)
        return web.json_response(
            {
                "seat": link.seat,
                "name": detail["people"].get(link.seat, ""),
                "title": detail["metadata"]["title"],
                "language": detail["language"],
                "recorded_at": rec.started_at,
                "duration_s": rec.finalized.duration_s if rec.finalized else None,
                "chapters": chapters_json(rec.finalized),
                "expires_at": link.expires_at,
                "consent": {"archive": bool(own.get("archive")), "public": bool(own.get("public"))},
                "copies_allowed": detail["consent"]["copies"],
                "file": (
                    {"name": entry.name, "bytes": entry.bytes, "url": "/api/copy/file"}
                    if entry is not None
                    else None
                ),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def copy_consent(self, request: web.Request) -> web.Response:
        link, rec = await self._copy(request)
        change = parse_participant_consent(await read_json(request))
        await self.services.archive.change_consent(
            rec,
            link.seat,
            archive=change.archive,
            public=change.public,
            copies=None,
            source="copy link",
        )
        log.info("copy link %s: consent changed by the participant", link.id)
        return web.json_response({"consent": {"archive": change.archive, "public": change.public}})

    async def copy_file(self, request: web.Request) -> web.StreamResponse:
        link, rec = await self._copy(request)
        copies = self.services.copies
        if not await copies.both_agree(rec.session_id):
            raise Forbidden(
                "copies are shared only while both participants agree", code="no_copies_consent"
            )
        entry = access_entry(rec)
        if entry is None:
            raise NotFound("the copy is not ready")
        path = recording_file(
            self.services.settings.recordings_dir, rec.id, entry.name, "the copy is not ready"
        )
        if whole_download(request):
            await copies.downloaded(link)
        suffix = entry.name.rsplit(".", 1)[-1]
        return await send_file(
            request, path, sha256=entry.sha256, filename=f"conversation-{rec.id}.{suffix}"
        )

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("GET", "/api/copy", self.copy_page)
        routes.public("PUT", "/api/copy/consent", self.copy_consent)
        routes.public("GET", "/api/copy/file", self.copy_file)
        return routes
