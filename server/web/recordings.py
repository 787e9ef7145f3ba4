"""HTTP routes of the recordings: for staff the archive's list and detail, file downloads,
catalogue edits, consent records, copy links, BagIt exports and deletion; for everyone
the public list, each public recording's audio and waveform, and clips.

Every staff action that reads a recording's files or changes anything is written to the
audit log under the person who did it. Payloads are parsed in `archive.protocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from storyroom import fields
from storyroom.archive.bagit import tar_chunks, tar_members
from storyroom.archive.copies import ContactSource, access_entry
from storyroom.archive.protocol import (
    parse_contact,
    parse_metadata,
    parse_search,
    parse_staff_consent,
)
from storyroom.errors import NotFound, PreconditionFailed
from storyroom.finalize.contracts import chapters_json
from storyroom.seats import PARTICIPANT_SEATS
from storyroom.staff.accounts import StaffIdentity
from storyroom.status import FinalizeStatus
from storyroom.store import RecordingRow
from storyroom.web.downloads import (
    listed_file,
    send_clip,
    send_levels,
    send_listed,
    whole_download,
)
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, lookup, public_lookup

RECORDING = "/api/recordings/{recording_id}"
PUBLIC = "/api/public/recordings/{recording_id}"
SESSION = "/api/sessions/{session_id}"


def _participant(request: web.Request) -> str:
    seat = request.match_info["seat"]
    if seat not in PARTICIPANT_SEATS:
        raise NotFound("no such participant seat")
    return seat


def recording_json(rec: RecordingRow, title: str | None = None) -> dict[str, Any]:
    """A recording as the API shows it: status, timing, files (once ready) and chapters."""
    result = rec.finalized
    base = f"/api/recordings/{rec.id}/files/"
    files = [{**f.to_json(), "url": base + f.name} for f in (result.files if result else ())]
    return {
        "id": rec.id,
        "session_id": rec.session_id,
        "title": title,
        "take": rec.take,
        "status": rec.public_status,
        "status_reason": rec.finalize_reason or rec.status_reason,
        "percent": rec.finalize_percent if rec.finalize_status else None,
        "stage": rec.finalize_stage if rec.finalize_status else None,
        "started_at": rec.started_at,
        "stopped_at": rec.stopped_at,
        "duration_s": result.duration_s if result else rec.elapsed_before,
        "files": files if rec.finalize_status is FinalizeStatus.READY else [],
        "chapters": chapters_json(result),
        "damaged": [d.to_json() for d in result.damaged] if result else [],
    }


class RecordingRoutes(RouteGroup):
    async def _recording(self, request: web.Request, who: StaffIdentity) -> RecordingRow:
        return await lookup(request, who, "recording", self.services.store.get_recording)

    # -- reading ---------------------------------------------------------------------------

    async def list_recordings(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Every recording, or those matching the query's filters (`archive.protocol`),
        with the archive's catalogue fields, first names and consent."""
        found = await self.services.archive.search(parse_search(request.query), who.scope)
        return web.json_response(
            {
                "recordings": [
                    {**recording_json(rec, extra["title"]), **extra} for rec, extra in found
                ]
            }
        )

    async def get_recording(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        detail = await self.services.archive.describe(rec)
        return web.json_response({**recording_json(rec, detail["title"]), **detail})

    async def download(self, request: web.Request, who: StaffIdentity) -> web.StreamResponse:
        """A finalized file; the name must be one the finalizer listed (never a path from input).
        Range and a strong ETag (the listed sha256); whole downloads go to the audit log."""
        rec = await self._recording(request, who)
        wanted = request.match_info["name"]
        recordings_dir = self.services.settings.recordings_dir
        entry = listed_file(recordings_dir, rec, wanted, "no such file")
        if whole_download(request):
            await self.audit(request, who, "download", rec.id, {"file": entry.name})
        filename = f"{rec.id}-{entry.name.replace('/', '-')}"
        return await send_listed(
            request, recordings_dir, rec, entry, filename, self.services.shared
        )

    async def waveform_levels(self, request: web.Request, who: StaffIdentity) -> web.StreamResponse:
        """The levels the staff player draws (made from the access copy for a recording
        finalized before they were listed)."""
        rec = await self._recording(request, who)
        return await send_levels(request, self.services.waveforms, rec)

    # -- listening in public ----------------------------------------------------------------

    async def public_recordings(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"recordings": await self.services.archive.public_recordings()},
            headers={"Cache-Control": "no-store"},
        )

    async def _public(self, request: web.Request) -> RecordingRow:
        """A recording both participants agree, as of this request, to let the public hear."""
        return await public_lookup(request, "recording", self.services.archive.public_recording)

    async def public_audio(self, request: web.Request) -> web.StreamResponse:
        rec = await self._public(request)
        entry = access_entry(rec)
        if entry is None:
            raise NotFound("no such recording")
        recordings_dir = self.services.settings.recordings_dir
        return await send_listed(request, recordings_dir, rec, entry, f"conversation-{rec.id}.mp3")

    async def public_waveform(self, request: web.Request) -> web.StreamResponse:
        rec = await self._public(request)
        return await send_levels(request, self.services.waveforms, rec)

    async def public_captions(self, request: web.Request) -> web.StreamResponse:
        """The captions (`transcript.vtt`) of a recording both made public, as of now."""
        rec = await self._public(request)
        entry = await self.services.transcribe_jobs.captions(rec)
        recordings_dir = self.services.settings.recordings_dir
        return await send_listed(request, recordings_dir, rec, entry, f"conversation-{rec.id}.vtt")

    # -- the catalogue, consent, deletion --------------------------------------------------

    async def edit_metadata(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        changes = parse_metadata(await read_json(request))
        metadata = await self.services.archive.edit(rec, changes, who.actor)
        await self.audit(request, who, "edit", rec.id, {"fields": sorted(changes.changed())})
        return web.json_response({"metadata": metadata})

    async def record_consent(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        change = parse_staff_consent(await read_json(request))
        archive = self.services.archive
        flags = await archive.change_consent(
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
        await self.services.delivery.notify_session(rec.session_id)
        return web.json_response({"consent": flags, **await archive.describe(rec)})

    async def delete_recording(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        await self.services.archive.delete(rec)
        await self.audit(
            request, who, "delete", rec.id, {"session_id": rec.session_id, "take": rec.take}
        )
        return web.json_response({"deleted": rec.id})

    # -- copy links ------------------------------------------------------------------------

    async def issue_copies(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        links = await self.services.copies.issue(rec, who.actor)
        await self.audit(
            request, who, "copies_issued", rec.id, {"links": [link.id for link in links]}
        )
        return web.json_response({"links": [link.to_json() for link in links]}, status=201)

    async def resend_copy(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """A new link for one participant, emailed now to the address on their seat."""
        rec = await self._recording(request, who)
        seat = _participant(request)
        sent = await self.services.delivery.resend(rec, seat, who.actor)
        await self.audit(request, who, "copy_resent", rec.id, sent)
        return web.json_response({"sent": sent}, status=201)

    async def clip(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        s = self.services
        payload = await read_json(request)
        response = await send_clip(request, s.clipper, s.settings.recordings_dir, rec, payload)
        await self.audit(request, who, "clip", rec.id, payload)
        return response

    # -- where copies go ---------------------------------------------------------------------

    async def _session_id(self, request: web.Request, who: StaffIdentity) -> str:
        session = await lookup(request, who, "session", self.services.store.get_session)
        return session.id

    async def contacts(self, request: web.Request, who: StaffIdentity) -> web.Response:
        found = await self.services.copies.contacts(await self._session_id(request, who))
        return web.json_response({"contacts": {s: c.to_json() for s, c in found.items()}})

    async def set_contact(self, request: web.Request, who: StaffIdentity) -> web.Response:
        session_id = await self._session_id(request, who)
        seat = _participant(request)
        given = parse_contact(await read_json(request))
        contact = await self.services.copies.set_contact(
            session_id, seat, given.email, given.language, ContactSource.STAFF
        )
        # the address itself stays out of the audit log: who changed which seat is enough
        await self.audit(request, who, "contact_changed", session_id, {"seat": seat})
        await self.services.delivery.notify_session(session_id)
        return web.json_response({"contact": contact.to_json()})

    async def remove_contact(self, request: web.Request, who: StaffIdentity) -> web.Response:
        session_id = await self._session_id(request, who)
        seat = _participant(request)
        await self.services.copies.remove_contact(session_id, seat)
        await self.audit(
            request, who, "contact_changed", session_id, {"seat": seat, "removed": True}
        )
        return web.json_response({"removed": seat})

    async def revoke_copy(self, request: web.Request, who: StaffIdentity) -> web.Response:
        link_id = request.match_info["link_id"]
        if not fields.ID_RE.match(link_id):
            raise NotFound("no such link")
        link = await self.services.copies.revoke(link_id, who.scope, who.actor)
        await self.audit(request, who, "copy_revoked", link.recording_id, {"link": link.id})
        return web.json_response({"link": link.to_json()})

    # -- exports ---------------------------------------------------------------------------

    async def export_bag(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        export = await self.services.archive.export_bag(rec, who.actor, self.services.bags)
        await self.audit(
            request,
            who,
            "export",
            rec.id,
            {"export": export.id, "files": export.files, "payload_oxum": export.payload_oxum},
        )
        return web.json_response({"export": export.to_json()}, status=201)

    async def download_bag(self, request: web.Request, who: StaffIdentity) -> web.StreamResponse:
        archive = self.services.archive
        export = await lookup(request, who, "export", archive.export)
        if export.removed_at is not None:
            raise NotFound("no such export")
        rec = await self.services.store.get_recording(export.recording_id, who.scope)
        if rec is None or not (await archive.flags(rec.session_id))["archive"]:
            raise PreconditionFailed(
                "both participants must agree to archiving", code="no_archive_consent"
            )
        bag_dir = archive.export_dir(export.id) / rec.id
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

    def routes(self) -> Routes:
        routes = Routes()
        routes.staff("GET", "/api/recordings", self.list_recordings)
        routes.staff("GET", RECORDING, self.get_recording)
        routes.staff("DELETE", RECORDING, self.delete_recording)
        routes.staff("GET", f"{RECORDING}/files/{{name:.+}}", self.download)
        routes.staff("PATCH", f"{RECORDING}/metadata", self.edit_metadata)
        routes.staff("PUT", f"{RECORDING}/consent", self.record_consent)
        routes.staff("POST", f"{RECORDING}/copies", self.issue_copies)
        routes.staff("POST", f"{RECORDING}/copies/{{seat}}/send", self.resend_copy)
        routes.staff("POST", "/api/copies/{link_id}/revoke", self.revoke_copy)
        routes.staff("POST", f"{RECORDING}/clip", self.clip)
        routes.staff("GET", f"{RECORDING}/waveform", self.waveform_levels)
        routes.staff("GET", f"{SESSION}/contacts", self.contacts)
        routes.staff("PUT", f"{SESSION}/contacts/{{seat}}", self.set_contact)
        routes.staff("DELETE", f"{SESSION}/contacts/{{seat}}", self.remove_contact)
        routes.staff("POST", f"{RECORDING}/exports", self.export_bag)
        routes.staff("GET", "/api/exports/{export_id}/bag.tar", self.download_bag)
        routes.public("GET", "/api/public/recordings", self.public_recordings)
        routes.public("GET", f"{PUBLIC}/audio", self.public_audio)
        routes.public("GET", f"{PUBLIC}/waveform", self.public_waveform)
        routes.public("GET", f"{PUBLIC}/captions", self.public_captions)
        return routes
