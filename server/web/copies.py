"""HTTP routes of the participants' copy links: the copy page's data, the participant's own
archive/public consent, and their copy of the conversation.

These are not staff routes: each request carries the copy link's token as
`Authorization: Bearer <token>`, checked by `_copy` before anything is read. Wrong
tokens count against the client address like wrong staff tokens.

So that the page's `<audio>` can stream the copy (with `Range`) and a plain link can
save it, `GET /api/copy` also puts the token in an HttpOnly, SameSite=Strict cookie
scoped to `/api/copy/`; only the reading routes (`file`, `waveform`, `captions`) accept it, so
nothing that changes anything can be done by a cookie alone. The token still never
appears in a URL.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from storyroom.archive.clips import CLIP_MAX_S
from storyroom.archive.copies import CopyLink, access_entry
from storyroom.archive.protocol import parse_participant_consent
from storyroom.errors import AuthError, Forbidden, NotFound
from storyroom.finalize.contracts import chapters_json
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.seats import PARTICIPANT_SEATS
from storyroom.store import RecordingRow
from storyroom.transcribe.jobs import captions_entry
from storyroom.web.downloads import (
    recording_file,
    send_clip,
    send_file,
    send_levels,
    send_listed,
    whole_download,
)
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, address

log = logging.getLogger(__name__)

COPY_COOKIE = "storyroom_copy"


class CopyLinkRoutes(RouteGroup):
    async def _copy(
        self, request: web.Request, *, cookie: bool = False
    ) -> tuple[CopyLink, RecordingRow]:
        """The link the request's bearer token (or, for reading routes, the copy cookie)
        opens, and its recording; else `AuthError`."""
        where = address(request)
        tokens = self.services.accounts.tokens
        tokens.check(where)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if cookie and not token:
            scheme, token = "bearer", request.cookies.get(COPY_COOKIE, "")
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
        rec = await self.services.store.get_recording(link.recording_id, EVERY_ORGANISATION)
        if rec is None:
            raise AuthError("this link is not valid", code="link_invalid")
        return link, rec

    async def copy_page(self, request: web.Request) -> web.Response:
        link, rec = await self._copy(request)
        detail = await self.services.archive.describe(rec)
        own = detail["consent_by_seat"][link.seat]
        partner_seat = next(seat for seat in PARTICIPANT_SEATS if seat != link.seat)
        partner = detail["consent_by_seat"][partner_seat]
        entry = access_entry(rec)
        response = web.json_response(
            {
                "seat": link.seat,
                "organisation": (
                    await self.services.store.session_organisation(rec.session_id)
                ).public_json(),
                "name": detail["people"].get(link.seat, ""),
                "title": detail["metadata"]["title"],
                "language": detail["language"],
                "recorded_at": rec.started_at,
                "duration_s": rec.finalized.duration_s if rec.finalized else None,
                "chapters": chapters_json(rec.finalized),
                "expires_at": link.expires_at,
                "consent": {"archive": bool(own.get("archive")), "public": bool(own.get("public"))},
                # each choice takes effect only when both agree: the page says who it waits for
                "partner": {
                    "name": detail["people"].get(partner_seat, ""),
                    "archive": bool(partner.get("archive")),
                    "public": bool(partner.get("public")),
                },
                "in_effect": {
                    "archive": detail["consent"]["archive"],
                    "public": detail["consent"]["public"],
                },
                "copies_allowed": detail["consent"]["copies"],
                "file": (
                    {"name": entry.name, "bytes": entry.bytes, "url": "/api/copy/file"}
                    if entry is not None
                    else None
                ),
                # listed, or made from the access copy on first request
                "waveform_url": "/api/copy/waveform" if entry is not None else None,
                "captions_url": "/api/copy/captions" if captions_entry(rec) else None,
                "clip_max_s": CLIP_MAX_S,
            },
            headers={"Cache-Control": "no-store"},
        )
        response.set_cookie(
            COPY_COOKIE,
            request.headers["Authorization"].partition(" ")[2].strip(),
            max_age=max(0, int(link.expires_at - time.time())),
            path="/api/copy/",
            httponly=True,
            samesite="Strict",
            secure=self.services.accounts.secure_cookies(request),
        )
        return response

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

    async def _shared(self, request: web.Request) -> tuple[CopyLink, RecordingRow]:
        """As `_copy` (cookie allowed), for what is shared only while both participants
        agree to copies: the conversation and its words."""
        link, rec = await self._copy(request, cookie=True)
        if not await self.services.copies.both_agree(rec.session_id):
            raise Forbidden(
                "copies are shared only while both participants agree", code="no_copies_consent"
            )
        return link, rec

    async def copy_file(self, request: web.Request) -> web.StreamResponse:
        link, rec = await self._shared(request)
        copies = self.services.copies
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

    async def copy_waveform(self, request: web.Request) -> web.StreamResponse:
        _, rec = await self._copy(request, cookie=True)
        return await send_levels(request, self.services.waveforms, rec)

    async def copy_captions(self, request: web.Request) -> web.StreamResponse:
        """The copy's captions (`transcript.vtt`), while there is a transcript."""
        _, rec = await self._shared(request)
        entry = await self.services.transcribe_jobs.captions(rec)
        recordings_dir = self.services.settings.recordings_dir
        return await send_listed(request, recordings_dir, rec, entry, f"conversation-{rec.id}.vtt")

    async def copy_clip(self, request: web.Request) -> web.Response:
        """A participant's clip, only of a conversation both made public."""
        link, rec = await self._copy(request)
        if not (await self.services.archive.flags(rec.session_id))["public"]:
            raise Forbidden(
                "clips can be made only of a conversation you both made public",
                code="not_public",
            )
        s = self.services
        payload = await read_json(request)
        response = await send_clip(request, s.clipper, s.settings.recordings_dir, rec, payload)
        log.info("copy link %s: a clip was made", link.id)
        return response

    def routes(self) -> Routes:
        routes = Routes()
        routes.public("GET", "/api/copy", self.copy_page)
        routes.public("PUT", "/api/copy/consent", self.copy_consent)
        routes.public("GET", "/api/copy/file", self.copy_file)
        routes.public("GET", "/api/copy/waveform", self.copy_waveform)
        routes.public("GET", "/api/copy/captions", self.copy_captions)
        routes.public("POST", "/api/copy/clip", self.copy_clip)
        return routes
