"""HTTP routes of the recordings: for staff the archive's list and detail, file downloads,
catalogue edits, consent records, copy links, BagIt exports and deletion; for everyone
the public list.

Every staff action that reads a recording's files or changes anything is written to the
audit log under the person who did it. Payloads are parsed in `archive.protocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from storyroom import fields
from storyroom.archive.bagit import tar_chunks, tar_members
from storyroom.archive.protocol import parse_metadata, parse_search, parse_staff_consent
from storyroom.errors import NotFound, PreconditionFailed
from storyroom.finalize.contracts import chapters_json
from storyroom.staff.accounts import StaffIdentity
from storyroom.status import FinalizeStatus
from storyroom.store import RecordingRow
from storyroom.web.downloads import recording_file, send_file, whole_download
from storyroom.web.middleware import read_json
from storyroom.web.routes import RouteGroup, Routes, lookup

RECORDING = "/api/recordings/{recording_id}"


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
    async def _recording(self, request: web.Request) -> RecordingRow:
        return await lookup(request, "recording", self.services.store.get_recording)

    # -- reading ---------------------------------------------------------------------------

    async def list_recordings(self, request: web.Request, who: StaffIdentity) -> web.Response:
        """Every recording, or those matching the query's filters (`archive.protocol`),
        with the archive's catalogue fields, first names and consent."""
        found = await self.services.archive.search(parse_search(request.query))
        return web.json_response(
            {
                "recordings": [
                    {**recording_json(rec, extra["title"]), **extra} for rec, extra in found
                ]
            }
        )

    async def get_recording(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request)
        detail = await self.services.archive.describe(rec)
        return web.json_response({**recording_json(rec, detail["title"]), **detail})

    async def download(self, request: web.Request, who: StaffIdentity) -> web.StreamResponse:
        """A finalized file; the name must be one the finalizer listed (never a path from input).
        Range and a strong ETag (the listed sha256); whole downloads go to the audit log."""
        rec = await self._recording(request)
        wanted = request.match_info["name"]
        entry = (
            rec.finalized.file(wanted)
            if rec.finalized is not None and rec.finalize_status is FinalizeStatus.READY
            else None
        )
        if entry is None:
            raise NotFound("no such file")
        path = recording_file(
            self.services.settings.recordings_dir, rec.id, entry.name, "no such file"
        )
        if whole_download(request):
            await self.audit(request, who, "download", rec.id, {"file": entry.name})
        filename = f"{rec.id}-{entry.name.replace('/', '-')}"
        return await send_file(request, path, sha256=entry.sha256, filename=filename)

    async def public_recordings(self, request: web.Request) -> web.Response:
        return web.json_response({"recordings": await self.services.archive.public_recordings()})

    # -- the catalogue, consent, deletion --------------------------------------------------

    async def edit_metadata(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request)
        changes = parse_metadata(await read_json(request))
        metadata = await self.services.archive.edit(rec, changes, who.actor)
        await self.audit(request, who, "edit", rec.id, {"fields": sorted(changes.changed())})
        return web.json_response({"metadata": metadata})

    async def record_consent(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request)
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
        return web.json_response({"consent": flags, **await archive.describe(rec)})

    async def delete_recording(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request)
        await self.services.archive.delete(rec)
        await self.audit(
            request, who, "delete", rec.id, {"session_id": rec.session_id, "take": rec.take}
        )
        return web.json_response({"deleted": rec.id})

    # -- copy links ------------------------------------------------------------------------

    async def issue_copies(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request)
        links = await self.services.copies.issue(rec, who.actor)
        await self.audit(
            request, who, "copies_issued", rec.id, {"links": [link["id"] for link in links]}
        )
        return web.json_response({"links": links}, status=201)

    async def revoke_copy(self, request: web.Request, who: StaffIdentity) -> web.Response:
        link_id = request.match_info["link_id"]
        if not fields.ID_RE.match(link_id):
            raise NotFound("no such link")
        link = await self.services.copies.revoke(link_id, who.actor)
        await self.audit(request, who, "copy_revoked", link.recording_id, {"link": link.id})
        return web.json_response({"link": link.to_json()})

    # -- exports ---------------------------------------------------------------------------

    async def export_bag(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request)
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
        export = await lookup(request, "export", archive.export)
        if export.removed_at is not None:
            raise NotFound("no such export")
        rec = await self.services.store.get_recording(export.recording_id)
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
        routes.staff("POST", "/api/copies/{link_id}/revoke", self.revoke_copy)
        routes.staff("POST", f"{RECORDING}/exports", self.export_bag)
        routes.staff("GET", "/api/exports/{export_id}/bag.tar", self.download_bag)
        routes.public("GET", "/api/public/recordings", self.public_recordings)
        return routes
