"""HTTP routes of the staff archive and of the participants' copy links.

Staff: sign-in/sign-out (session cookie), who am I, catalogue edits, consent records,
copy links, BagIt exports, deletion, the audit log. Participants: their copy link's
page data, their archive/public consent, their copy. Everyone: the public list.

Every staff action that reads a recording's files or changes anything is written to the
audit log. Payloads are parsed in `staff_protocol`; errors leave through api.py's one
JSON error middleware.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import web

from storyroom.archive.bagit import BagMaker, tar_chunks, tar_members
from storyroom.archive.catalogue import ARCHIVE, Archive
from storyroom.archive.copies import COPIES, Copies, CopyLink, access_entry
from storyroom.archive.protocol import (
    parse_audit_query,
    parse_metadata,
    parse_participant_consent,
    parse_signin,
    parse_staff_consent,
)
from storyroom.errors import AuthError, Forbidden, InvalidInput, NotFound, PreconditionFailed
from storyroom.finalize.contracts import chapters_json
from storyroom.recording.layout import recording_dir
from storyroom.room import protocol
from storyroom.services import SERVICES, Services
from storyroom.staff.accounts import ACCOUNTS, Accounts, StaffIdentity, normalize_email
from storyroom.staff.audit import ACTIONS, AUDIT, Audit
from storyroom.staff.tokens import require_staff
from storyroom.store import RecordingRow
from storyroom.web.api import read_json
from storyroom.web.downloads import send_file

log = logging.getLogger(__name__)

BAGS = web.AppKey("bags", BagMaker)
FIRST_BYTES = re.compile(r"^\s*bytes=0-\s*$")


def whole_download(request: web.Request) -> bool:
    """A download worth an audit line: not the player's later range requests."""
    wanted = request.headers.get("Range")
    return request.method == "GET" and (wanted is None or bool(FIRST_BYTES.match(wanted)))


def address(request: web.Request) -> str:
    return request.remote or "unknown"


class StaffApi:
    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def ctx(self) -> Services:
        return self.app[SERVICES]

    @property
    def accounts(self) -> Accounts:
        return self.app[ACCOUNTS]

    @property
    def audit_log(self) -> Audit:
        return self.app[AUDIT]

    @property
    def archive(self) -> Archive:
        return self.app[ARCHIVE]

    @property
    def copies(self) -> Copies:
        return self.app[COPIES]

    def staff(self, request: web.Request) -> StaffIdentity:
        return require_staff(request, self.ctx.staff_token)

    async def audit(
        self,
        request: web.Request,
        who: StaffIdentity,
        action: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self.audit_log.record(who.actor, action, target, detail, address(request))

    async def _recording(self, request: web.Request) -> RecordingRow:
        recording_id = request.match_info["recording_id"]
        rec = (
            await self.ctx.store.get_recording(recording_id)
            if protocol.ID_RE.match(recording_id)
            else None
        )
        if rec is None:
            raise NotFound("no such recording")
        return rec

    # -- sign-in ------------------------------------------------------------------------

    async def signin_csrf(self, request: web.Request) -> web.Response:
        response = web.Response(content_type="application/json")
        token = self.accounts.signin_csrf(request, response)
        response.text = json.dumps({"csrf": token})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def signin(self, request: web.Request) -> web.Response:
        self.accounts.check_signin_csrf(request)
        body = parse_signin(await read_json(request))
        try:
            session, token = await self.accounts.sign_in(
                body.email, body.password, address(request)
            )
        except AuthError:
            # only something shaped like an email: people type passwords into the wrong box
            try:
                who = normalize_email(body.email)
            except InvalidInput:
                who = "unknown"
            await self.audit_log.record(who, "sign_in_failed", None, {}, address(request))
            raise
        await self.audit_log.record(session.email, "sign_in", None, {}, address(request))
        response = web.json_response({"email": session.email, "csrf": session.csrf})
        response.headers["Cache-Control"] = "no-store"
        self.accounts.set_session_cookie(request, response, token)
        return response

    async def signout(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        if who.session is not None:
            await self.accounts.sign_out(who.session)
            await self.audit(request, who, "sign_out")
        response = web.json_response({"ok": True})
        self.accounts.clear_session_cookie(request, response)
        return response

    async def me(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        response = web.json_response(
            {
                "email": who.session.email if who.session else None,
                "actor": who.actor,
                "via": who.via,
                "csrf": who.session.csrf if who.session else None,
                "expires_at": who.session.expires_at if who.session else None,
            }
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- recordings ------------------------------------------------------------------------

    async def edit_metadata(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        rec = await self._recording(request)
        changes = parse_metadata(await read_json(request))
        metadata = await self.archive.edit(rec, changes, who.actor)
        await self.audit(request, who, "edit", rec.id, {"fields": sorted(changes.changed())})
        return web.json_response({"metadata": metadata})

    async def record_consent(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        rec = await self._recording(request)
        change = parse_staff_consent(await read_json(request))
        flags = await self.archive.change_consent(
            rec,
            change.seat,
            archive=change.archive,
            public=change.public,
            copies=change.copies,
            source="staff",
            note=change.note,
        )
        detail = {
            k: v
            for k, v in (
                ("seat", change.seat),
                ("archive", change.archive),
                ("public", change.public),
                ("copies", change.copies),
                ("note", change.note),
            )
            if v is not None
        }
        await self.audit(request, who, "consent", rec.id, detail)
        return web.json_response({"consent": flags, **await self.archive.describe(rec)})

    async def delete_recording(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        rec = await self._recording(request)
        await self.archive.delete(rec)
        await self.audit(
            request, who, "delete", rec.id, {"session_id": rec.session_id, "take": rec.take}
        )
        return web.json_response({"deleted": rec.id})

    # -- copies ----------------------------------------------------------------------------

    async def issue_copies(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        rec = await self._recording(request)
        links = await self.copies.issue(rec, who.actor)
        await self.audit(
            request, who, "copies_issued", rec.id, {"links": [link["id"] for link in links]}
        )
        return web.json_response({"links": links}, status=201)

    async def revoke_copy(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        link_id = request.match_info["link_id"]
        if not protocol.ID_RE.match(link_id):
            raise NotFound("no such link")
        link = await self.copies.revoke(link_id, who.actor)
        await self.audit(request, who, "copy_revoked", link.recording_id, {"link": link.id})
        return web.json_response({"link": link.to_json()})

    # -- exports ---------------------------------------------------------------------------

    async def export_bag(self, request: web.Request) -> web.Response:
        who = self.staff(request)
        rec = await self._recording(request)
        export = await self.archive.export_bag(rec, who.actor, self.app[BAGS])
        await self.audit(
            request,
            who,
            "export",
            rec.id,
            {"export": export.id, "files": export.files, "payload_oxum": export.payload_oxum},
        )
        return web.json_response({"export": export.to_json()}, status=201)

    async def download_bag(self, request: web.Request) -> web.StreamResponse:
        who = self.staff(request)
        export_id = request.match_info["export_id"]
        export = await self.archive.export(export_id) if protocol.ID_RE.match(export_id) else None
        if export is None or export.removed_at is not None:
            raise NotFound("no such export")
        rec = await self.ctx.store.get_recording(export.recording_id)
        if rec is None or not (await self.archive.flags(rec.session_id))["archive"]:
            raise PreconditionFailed(
                "both participants must agree to archiving", code="no_archive_consent"
            )
        bag_dir = self.archive.export_dir(export.id) / rec.id
        if not bag_dir.is_dir():
            raise NotFound("no such export")
        members, total = await asyncio.to_thread(tar_members, bag_dir, f"{rec.id}-bag")
        await self.audit(request, who, "download", rec.id, {"export": export.id})
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-tar",
                "Content-Disposition": f'attachment; filename="{rec.id}-bag.tar"',
                "Cache-Control": "private, no-store",
            }
        )
        response.content_length = total
        await response.prepare(request)
        chunks = tar_chunks(members)
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            await response.write(chunk)
        await response.write_eof()
        return response

    # -- the audit log ---------------------------------------------------------------------

    async def read_audit(self, request: web.Request) -> web.Response:
        self.staff(request)
        query = parse_audit_query(request.query, ACTIONS)
        entries = await self.audit_log.entries(
            limit=query.limit, before=query.before, action=query.action, target=query.target
        )
        return web.json_response({"entries": [e.to_json() for e in entries]})

    # -- public ------------------------------------------------------------------------------

    async def public_recordings(self, request: web.Request) -> web.Response:
        return web.json_response({"recordings": await self.archive.public_recordings()})

    # -- the participants' copy links --------------------------------------------------------

    async def _copy(self, request: web.Request) -> tuple[CopyLink, RecordingRow]:
        where = address(request)
        self.accounts.tokens.check(where)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("this page needs the full link you were sent", code="link_missing")
        link = await self.copies.find(token)
        if link is None:
            self.accounts.tokens.fail(where)
            raise AuthError("this link is not valid", code="link_invalid")
        state = link.state()
        if state != "active":
            raise AuthError(
                "this link has expired" if state == "expired" else "this link was withdrawn",
                code=f"link_{state}",
            )
        rec = await self.ctx.store.get_recording(link.recording_id)
        if rec is None:
            raise AuthError("this link is not valid", code="link_invalid")
        return link, rec

    async def copy_page(self, request: web.Request) -> web.Response:
        link, rec = await self._copy(request)
        detail = await self.archive.describe(rec)
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
        await self.archive.change_consent(
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
        if not await self.copies.both_agree(rec.session_id):
            raise Forbidden(
                "copies are shared only while both participants agree", code="no_copies_consent"
            )
        entry = access_entry(rec)
        if entry is None:
            raise NotFound("the copy is not ready")
        root = recording_dir(self.ctx.settings.recordings_dir, rec.id).resolve()
        path = (root / entry.name).resolve()
        if root not in path.parents or not path.is_file():
            raise NotFound("the copy is not ready")
        if whole_download(request):
            await self.copies.downloaded(link)
        suffix = entry.name.rsplit(".", 1)[-1]
        return await send_file(
            request, path, sha256=entry.sha256, filename=f"conversation-{rec.id}.{suffix}"
        )

    def routes(self) -> list[web.RouteDef]:
        r = "/api/recordings/{recording_id}"
        return [
            web.get("/api/staff/csrf", self.signin_csrf),
            web.post("/api/staff/signin", self.signin),
            web.post("/api/staff/signout", self.signout),
            web.get("/api/staff/me", self.me),
            web.patch(f"{r}/metadata", self.edit_metadata),
            web.put(f"{r}/consent", self.record_consent),
            web.delete(r, self.delete_recording),
            web.post(f"{r}/copies", self.issue_copies),
            web.post("/api/copies/{link_id}/revoke", self.revoke_copy),
            web.post(f"{r}/exports", self.export_bag),
            web.get("/api/exports/{export_id}/bag.tar", self.download_bag),
            web.get("/api/audit", self.read_audit),
            web.get("/api/public/recordings", self.public_recordings),
            web.get("/api/copy", self.copy_page),
            web.put("/api/copy/consent", self.copy_consent),
            web.get("/api/copy/file", self.copy_file),
        ]
