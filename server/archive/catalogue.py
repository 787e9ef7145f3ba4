"""The staff archive: finding recordings, their catalogue metadata, consent as it stands
and as it changed, bag exports, the public list, withdrawal and deletion.

Consent is per session and per participant (`consent_events` for record/archive/public,
`copies.copy_consent_events` for copies); a recording counts as archivable, public or
shareable only while **both** participants' latest answer says yes. Withdrawing archive
consent removes the bags already prepared on the server and stops new ones; withdrawing
public consent takes the recording off the public list at once.

Deleting a recording removes its directory (stems, finalized files), its prepared bags
and every row that belongs to it (the recording, its events, cues, markers, notes,
metadata, copy links, export records). The session, its people and its consent history
stay: they belong to the session, which may have other takes. The audit log keeps its
entries about the recording.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyroom.archive.bagit import BagMaker, BagRequest, bag_info, catalogue
from storyroom.archive.copies import Copies, access_entry
from storyroom.archive.protocol import MetadataIn, SearchIn
from storyroom.config import Settings
from storyroom.errors import Busy, PreconditionFailed
from storyroom.finalize.contracts import chapters_json
from storyroom.ids import new_id
from storyroom.orgs import EVERY_ORGANISATION, Organisation, OrgScope
from storyroom.recording.layout import WAVEFORM, recording_dir
from storyroom.seats import PARTICIPANT_SEATS, SessionKind
from storyroom.status import LIVE_STATES, FinalizeStatus
from storyroom.store import Consent, ModuleMigrations, RecordingRow, Store, fetch_all, fetch_one
from storyroom.transcribe.jobs import TranscribeJobs, captions_entry

log = logging.getLogger(__name__)

TABLES = ModuleMigrations(
    "archive",
    (
        """
        CREATE TABLE recording_metadata (
            recording_id TEXT PRIMARY KEY REFERENCES recordings(id) ON DELETE CASCADE,
            title TEXT,                          -- NULL: the session's title
            description TEXT NOT NULL DEFAULT '',
            keywords TEXT NOT NULL DEFAULT '[]', -- JSON list
            location TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL
        );
        CREATE TABLE bag_exports (
            id TEXT PRIMARY KEY,
            recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            files INTEGER NOT NULL,
            payload_oxum TEXT NOT NULL,
            removed_at REAL,                     -- the prepared bag was removed from the server
            removed_reason TEXT
        );
        CREATE INDEX bag_exports_by_recording ON bag_exports(recording_id);
        """,
    ),
)

BUSY_FINALIZE = (FinalizeStatus.QUEUED, FinalizeStatus.FINALIZING)


@dataclass(frozen=True, slots=True)
class BagExport:
    id: str
    recording_id: str
    created_at: float
    created_by: str
    bytes: int
    files: int
    payload_oxum: str
    removed_at: float | None
    removed_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "bytes": self.bytes,
            "files": self.files,
            "payload_oxum": self.payload_oxum,
            "removed_at": self.removed_at,
            "removed_reason": self.removed_reason,
            "url": None if self.removed_at else f"/api/exports/{self.id}/bag.tar",
        }


def consent_flags(
    consent: dict[str, Consent], copies: dict[str, dict[str, Any]]
) -> dict[str, bool]:
    """What both participants currently agree to."""

    def both(kind: str) -> bool:
        return all(
            seat in consent and bool(getattr(consent[seat], kind)) for seat in PARTICIPANT_SEATS
        )

    return {
        "archive": both("archive"),
        "public": both("public"),
        "copies": all(copies.get(seat, {}).get("copies") for seat in PARTICIPANT_SEATS),
    }


@dataclass(frozen=True, slots=True)
class BagSource:
    """Who a bag says it comes from (bag-info's Source-Organization, Organization-Address
    and Contact-*)."""

    organization: str
    address: str
    contact_name: str
    contact_email: str
    contact_phone: str


def bag_source(settings: Settings, organisation: Organisation) -> BagSource:
    """The recording's organisation; the default one, until it is given a name, says
    what the settings say (as before organisations)."""
    if not organisation.name:
        return BagSource(
            settings.bag_source_organization,
            settings.bag_organization_address,
            settings.bag_contact_name,
            settings.bag_contact_email,
            settings.bag_contact_phone,
        )
    given = organisation.settings
    return BagSource(
        organisation.name,
        given.get("address", ""),
        given.get("contact_name") or organisation.contact or "",
        given.get("contact_email", ""),
        given.get("contact_phone", ""),
    )


class Archive:
    """Owner: app.py (`Services.archive`); the CLI makes its own for `export-bag`."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        copies: Copies,
        transcripts: TranscribeJobs | None = None,
    ) -> None:
        self.store = store
        self.transcripts = transcripts
        self.settings = settings
        self.copies = copies
        self.busy: set[str] = set()
        """Recordings with an export or deletion under way (refuse a second one)."""

    @property
    def db(self) -> Any:
        return self.store.db

    @property
    def exports_dir(self) -> Path:
        return self.settings.data_dir / "exports"

    def export_dir(self, export_id: str) -> Path:
        return self.exports_dir / export_id

    # -- metadata -------------------------------------------------------------------------

    async def metadata(self, rec: RecordingRow, session_title: str | None) -> dict[str, Any]:
        row = await fetch_one(
            self.db,
            "SELECT title, description, keywords, location, updated_at, updated_by"
            " FROM recording_metadata WHERE recording_id = ?",
            (rec.id,),
        )
        return _metadata(row, session_title)

    async def edit(self, rec: RecordingRow, changes: MetadataIn, actor: str) -> dict[str, Any]:
        session = await self.store.get_session(rec.session_id, EVERY_ORGANISATION)
        current = await self.metadata(rec, session.title if session else None)
        merged = {**current, **changes.changed()}
        await self.db.execute(
            "INSERT INTO recording_metadata (recording_id, title, description, keywords,"
            " location, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (recording_id) DO UPDATE SET title = excluded.title,"
            " description = excluded.description, keywords = excluded.keywords,"
            " location = excluded.location, updated_at = excluded.updated_at,"
            " updated_by = excluded.updated_by",
            (
                rec.id,
                merged["title"],
                merged["description"],
                json.dumps(merged["keywords"]),
                merged["location"],
                time.time(),
                actor,
            ),
        )
        await self.db.commit()
        return await self.metadata(rec, session.title if session else None)

    # -- listing and search -----------------------------------------------------------------

    async def search(
        self, filters: SearchIn, scope: OrgScope
    ) -> list[tuple[RecordingRow, dict[str, Any]]]:
        """Recordings of the organisations `scope` sees matching every filter, newest
        first, each with its summary fields."""
        recordings = await self.store.list_recordings(scope, limit=100_000)
        sessions = {s.id: s for s in await self.store.list_sessions(scope, limit=100_000)}
        names = await self._names()
        consent = await self._consent()
        copies = await self._copies_consent()
        metadata = await self._all_metadata()
        said: dict[str, list[int]] | None = None
        if filters.said:
            said = (
                await self.transcripts.transcripts.search(filters.said)
                if self.transcripts is not None
                else {}
            )
        out = []
        for rec in recordings:
            session = sessions.get(rec.session_id)
            if session is None or (said is not None and rec.id not in said):
                continue
            meta = _metadata(metadata.get(rec.id), session.title)
            people = names.get(rec.session_id, {})
            flags = consent_flags(consent.get(rec.session_id, {}), copies.get(rec.session_id, {}))
            if not _matches(filters, rec, session.language, meta, people, flags, session.title):
                continue
            out.append(
                (
                    rec,
                    {
                        "title": meta["title"],
                        "session_title": session.title,
                        "language": session.language,
                        "people": people,
                        "metadata": meta,
                        "consent": flags,
                        **({"said_in_turns": said[rec.id]} if said is not None else {}),
                    },
                )
            )
        return out

    async def describe(self, rec: RecordingRow) -> dict[str, Any]:
        """The detail page's extra fields: metadata, people, consent and its history,
        copy links, exports."""
        session = await self.store.get_session(rec.session_id, EVERY_ORGANISATION)
        consent = await self.store.current_consent(rec.session_id)
        copies = await self.copies.consent(rec.session_id)
        seats = await self.store.seats(rec.session_id)
        history = [
            {**event, "kind": "consent"}
            for event in await self.store.consent_history(rec.session_id)
        ] + [{**event, "kind": "copies"} for event in await self.copies.history(rec.session_id)]
        history.sort(key=lambda e: e["at"])
        return {
            "title": (await self.metadata(rec, session.title if session else None))["title"],
            "session_title": session.title if session else None,
            "kind": (session.kind if session else SessionKind.FACILITATED).value,
            "language": session.language if session else None,
            "metadata": await self.metadata(rec, session.title if session else None),
            "people": {s.seat: s.name for s in seats},
            "consent": consent_flags(consent, copies),
            "consent_by_seat": {
                seat: {
                    **(consent[seat].to_json() if seat in consent else {}),
                    "copies": bool(copies.get(seat, {}).get("copies")),
                }
                for seat in PARTICIPANT_SEATS
            },
            "consent_history": history,
            "copy_links": [link.to_json() for link in await self.copies.links(rec.id)],
            "contacts": {
                seat: contact.to_json()
                for seat, contact in (await self.copies.contacts(rec.session_id)).items()
            },
            "copy_mailings": [m.to_json() for m in await self.copies.mailings(rec.id)],
            "exports": [e.to_json() for e in await self.exports(rec.id)],
            "waveform_url": (
                f"/api/recordings/{rec.id}/files/{WAVEFORM}"
                if rec.finalized is not None
                and rec.finalized.file(WAVEFORM) is not None
                and rec.finalize_status is FinalizeStatus.READY
                else None
            ),
            # the levels the players draw: listed, or made from the access copy on request
            "levels_url": (
                f"/api/recordings/{rec.id}/waveform" if access_entry(rec) is not None else None
            ),
        }

    async def flags(self, session_id: str) -> dict[str, bool]:
        return consent_flags(
            await self.store.current_consent(session_id), await self.copies.consent(session_id)
        )

    async def public_recording(self, recording_id: str) -> RecordingRow | None:
        """The recording if it is ready and both participants agree, as of now, that the
        public may listen to it; else None (the public cannot tell which it was)."""
        rec = await self.store.get_recording(recording_id, EVERY_ORGANISATION)
        if rec is None or rec.finalize_status is not FinalizeStatus.READY:
            return None
        return rec if (await self.flags(rec.session_id))["public"] else None

    async def public_recordings(self) -> list[dict[str, Any]]:
        """Ready recordings both participants agreed to make public, as of now: the
        catalogue's description, the participants' first names and bios (nothing else
        about them), the questions as chapters, and where to hear it."""
        out = []
        for rec, extra in await self.search(
            SearchIn(status=FinalizeStatus.READY, consent="public"), EVERY_ORGANISATION
        ):
            meta = extra["metadata"]
            seats = {s.seat: s for s in await self.store.seats(rec.session_id)}
            base = f"/api/public/recordings/{rec.id}"
            out.append(
                {
                    "id": rec.id,
                    "title": meta["title"],
                    "description": meta["description"],
                    "keywords": meta["keywords"],
                    "location": meta["location"],
                    "language": extra["language"],
                    "duration_s": rec.finalized.duration_s if rec.finalized else None,
                    "recorded_at": rec.started_at,
                    "chapters": chapters_json(rec.finalized),
                    "people": [
                        {"name": seats[seat].name, "bio": seats[seat].bio}
                        for seat in PARTICIPANT_SEATS
                        if seat in seats
                    ],
                    "audio_url": f"{base}/audio",
                    "waveform_url": f"{base}/waveform",  # listed or made on request
                    "captions_url": f"{base}/captions" if captions_entry(rec) else None,
                }
            )
        return out

    # -- consent --------------------------------------------------------------------------

    async def change_consent(
        self,
        rec: RecordingRow,
        seat: str,
        *,
        archive: bool | None,
        public: bool | None,
        copies: bool | None,
        source: str,
        note: str = "",
    ) -> dict[str, bool]:
        """Write down a participant's changed consent; withdrawing archive consent removes
        the session's prepared bags. Returns what both now agree to."""
        if archive is not None or public is not None:
            current = (await self.store.current_consent(rec.session_id)).get(seat)
            await self.store.add_consent(
                rec.session_id,
                seat,
                Consent(
                    record=current.record if current else False,
                    archive=archive if archive is not None else bool(current and current.archive),
                    public=public if public is not None else bool(current and current.public),
                    at=time.time(),
                ),
                source=source,
            )
        if copies is not None:
            await self.copies.set_consent(rec.session_id, seat, copies, source, note)
        flags = await self.flags(rec.session_id)
        if not flags["archive"]:
            ids = [r.id for r in await self.store.recordings_for(rec.session_id)]
            await self.remove_exports(ids, "archive consent withdrawn")
        if archive is False and self.transcripts is not None:
            # a participant withdrew: the transcripts go, as the bags do, and are not made again
            await self.transcripts.withdraw(
                r.id for r in await self.store.recordings_for(rec.session_id)
            )
        return flags

    # -- exports ----------------------------------------------------------------------------

    async def exports(self, recording_id: str) -> list[BagExport]:
        rows = await fetch_all(
            self.db,
            "SELECT id, recording_id, created_at, created_by, bytes, files, payload_oxum,"
            " removed_at, removed_reason FROM bag_exports WHERE recording_id = ?"
            " ORDER BY created_at DESC",
            (recording_id,),
        )
        return [BagExport(*r) for r in rows]

    async def export(self, export_id: str, scope: OrgScope) -> BagExport | None:
        """An export of a recording of an organisation `scope` sees."""
        owned, args = scope.where("s.org_id")
        row = await fetch_one(
            self.db,
            "SELECT e.id, e.recording_id, e.created_at, e.created_by, e.bytes, e.files,"
            " e.payload_oxum, e.removed_at, e.removed_reason FROM bag_exports e"
            " JOIN recordings r ON r.id = e.recording_id JOIN sessions s ON s.id = r.session_id"
            f" WHERE e.id = ? AND {owned}",
            (export_id, *args),
        )
        return BagExport(*row) if row else None

    async def add_export(self, export: BagExport) -> None:
        await self.db.execute(
            "INSERT INTO bag_exports (id, recording_id, created_at, created_by, bytes, files,"
            " payload_oxum) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                export.id,
                export.recording_id,
                export.created_at,
                export.created_by,
                export.bytes,
                export.files,
                export.payload_oxum,
            ),
        )
        await self.db.commit()

    async def remove_exports(self, recording_ids: list[str], reason: str) -> None:
        """Remove prepared bags from the server (their records stay, marked removed)."""
        for recording_id in recording_ids:
            for export in await self.exports(recording_id):
                if export.removed_at is not None:
                    continue
                await asyncio.to_thread(
                    shutil.rmtree, self.export_dir(export.id), ignore_errors=True
                )
                await self.db.execute(
                    "UPDATE bag_exports SET removed_at = ?, removed_reason = ? WHERE id = ?",
                    (time.time(), reason, export.id),
                )
        await self.db.commit()

    async def bag_request(self, rec: RecordingRow, bag_dir: Path) -> BagRequest:
        """What goes into a recording's bag; refused unless the recording is ready and
        both participants agree to archiving as of now."""
        if rec.finalize_status is not FinalizeStatus.READY or rec.finalized is None:
            raise PreconditionFailed("the recording is not finalized yet", code="not_ready")
        detail = await self.describe(rec)
        if not detail["consent"]["archive"]:
            raise PreconditionFailed(
                "both participants must agree to archiving before a bag is made",
                code="no_archive_consent",
            )
        meta = detail["metadata"]
        duration = rec.finalized.duration_s
        recorded = time.strftime("%Y-%m-%d", time.gmtime(rec.started_at))
        language = {"en": "English", "es": "Spanish"}.get(detail["language"] or "", "")
        kind = SessionKind(detail["kind"])
        guided = " self-guided" if kind is SessionKind.SELF_GUIDED else ""
        description = " ".join(
            part
            for part in (
                f"{meta['title']}.",
                meta["description"],
                f"A recorded{guided} One Small Step conversation in {language}, {recorded},"
                f" {int(duration // 60)} min {int(duration % 60)} s.",
                f"Location: {meta['location']}." if meta["location"] else "",
                f"Keywords: {', '.join(meta['keywords'])}." if meta["keywords"] else "",
            )
            if part
        )
        s = self.settings
        source = bag_source(s, await self.store.session_organisation(rec.session_id))
        return BagRequest(
            source_dir=str(recording_dir(s.recordings_dir, rec.id)),
            files=tuple(f.name for f in rec.finalized.files),
            bag_dir=str(bag_dir),
            bag_info=bag_info(
                organization=source.organization,
                address=source.address,
                contact_name=source.contact_name,
                contact_email=source.contact_email,
                contact_phone=source.contact_phone,
                recording_id=rec.id,
                session_id=rec.session_id,
                description=description,
                kind=kind,
            ),
            catalogue=catalogue(
                recording={
                    "id": rec.id,
                    "session_id": rec.session_id,
                    "take": rec.take,
                    "language": detail["language"],
                    "started_at": rec.started_at,
                    "duration_s": duration,
                    "chapters": chapters_json(rec.finalized),
                },
                metadata=meta,
                people={seat: name for seat, name in detail["people"].items()},
                consent=detail["consent_by_seat"],
                consent_history=detail["consent_history"],
            ),
        )

    async def export_bag(self, rec: RecordingRow, actor: str, maker: BagMaker) -> BagExport:
        """Make, validate and keep a bag of the recording under `exports/`."""
        self.check_not_busy(rec)
        self.busy.add(rec.id)
        try:
            export_id = new_id("bag")
            request = await self.bag_request(rec, self.export_dir(export_id) / rec.id)
            try:
                result = await maker.make(request)
            except BaseException:
                await asyncio.to_thread(
                    shutil.rmtree, self.export_dir(export_id), ignore_errors=True
                )
                raise
            export = BagExport(
                id=export_id,
                recording_id=rec.id,
                created_at=time.time(),
                created_by=actor,
                bytes=result.bytes,
                files=result.files,
                payload_oxum=result.payload_oxum,
                removed_at=None,
                removed_reason=None,
            )
            await self.add_export(export)
            if not (await self.flags(rec.session_id))["archive"]:
                # consent was withdrawn while the bag was being made
                await self.remove_exports([rec.id], "archive consent withdrawn")
                raise PreconditionFailed(
                    "archive consent was withdrawn while the bag was made",
                    code="no_archive_consent",
                )
            return export
        finally:
            self.busy.discard(rec.id)

    # -- deletion -----------------------------------------------------------------------------

    def check_not_busy(self, rec: RecordingRow) -> None:
        if rec.status in LIVE_STATES:
            raise Busy("the recording is still running; stop it first")
        if rec.finalize_status in BUSY_FINALIZE:
            raise Busy("the recording is being finalized; try again when it is ready")
        if rec.id in self.busy:
            raise Busy("an export or deletion of this recording is under way")

    async def delete(self, rec: RecordingRow) -> None:
        """Remove every file and row of a recording (files first, so a failure can be
        retried from the app)."""
        self.check_not_busy(rec)
        self.busy.add(rec.id)
        try:
            exports = await self.exports(rec.id)
            for export in exports:
                await asyncio.to_thread(
                    shutil.rmtree, self.export_dir(export.id), ignore_errors=True
                )
            directory = recording_dir(self.settings.recordings_dir, rec.id)
            if directory.exists():
                await asyncio.to_thread(shutil.rmtree, directory)
            await self.db.execute("BEGIN")
            try:
                # notes keep a session after their recording (ON DELETE SET NULL): remove
                # this recording's own
                await self.db.execute("DELETE FROM notes WHERE recording_id = ?", (rec.id,))
                await self.db.execute("DELETE FROM recordings WHERE id = ?", (rec.id,))
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise
            log.info("recording %s deleted", rec.id)
        finally:
            self.busy.discard(rec.id)

    # -- batch reads for the list ------------------------------------------------------------

    async def _names(self) -> dict[str, dict[str, str]]:
        rows = await fetch_all(self.db, "SELECT session_id, seat, name FROM seats")
        out: dict[str, dict[str, str]] = {}
        for session_id, seat, name in rows:
            out.setdefault(session_id, {})[seat] = name
        return out

    async def _consent(self) -> dict[str, dict[str, Consent]]:
        rows = await fetch_all(
            self.db,
            "SELECT session_id, seat, record, archive, public, at FROM consent_events"
            " WHERE id IN (SELECT MAX(id) FROM consent_events GROUP BY session_id, seat)",
        )
        out: dict[str, dict[str, Consent]] = {}
        for r in rows:
            out.setdefault(r[0], {})[r[1]] = Consent(bool(r[2]), bool(r[3]), bool(r[4]), r[5])
        return out

    async def _copies_consent(self) -> dict[str, dict[str, dict[str, Any]]]:
        rows = await fetch_all(
            self.db,
            "SELECT session_id, seat, copies FROM copy_consent_events"
            " WHERE id IN (SELECT MAX(id) FROM copy_consent_events GROUP BY session_id, seat)",
        )
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for session_id, seat, copies in rows:
            out.setdefault(session_id, {})[seat] = {"copies": bool(copies)}
        return out

    async def _all_metadata(self) -> dict[str, Any]:
        rows = await fetch_all(
            self.db,
            "SELECT recording_id, title, description, keywords, location, updated_at,"
            " updated_by FROM recording_metadata",
        )
        return {r[0]: r[1:] for r in rows}


def _metadata(row: Any, session_title: str | None) -> dict[str, Any]:
    if row is None:
        return {
            "title": session_title or "",
            "description": "",
            "keywords": [],
            "location": "",
            "updated_at": None,
            "updated_by": None,
        }
    title, description, keywords, location, updated_at, updated_by = tuple(row)
    return {
        "title": title or session_title or "",
        "description": description,
        "keywords": json.loads(keywords),
        "location": location,
        "updated_at": updated_at,
        "updated_by": updated_by,
    }


def _matches(
    filters: SearchIn,
    rec: RecordingRow,
    language: str,
    meta: dict[str, Any],
    people: dict[str, str],
    flags: dict[str, bool],
    session_title: str,
) -> bool:
    if filters.status and rec.public_status != filters.status:
        return False
    if filters.language and language != filters.language:
        return False
    if filters.consent and not flags[filters.consent]:
        return False
    if filters.date_from is not None and rec.started_at < filters.date_from:
        return False
    if filters.date_to is not None and rec.started_at >= filters.date_to:
        return False
    if filters.name and not any(
        filters.name.casefold() in name.casefold() for name in people.values()
    ):
        return False
    if filters.keyword and not any(
        filters.keyword.casefold() == k.casefold() for k in meta["keywords"]
    ):
        return False
    if filters.text:
        haystack = " ".join(
            [
                rec.id,
                session_title,
                meta["title"],
                meta["description"],
                meta["location"],
                *meta["keywords"],
                *people.values(),
            ]
        ).casefold()
        if not all(word in haystack for word in filters.text.casefold().split()):
            return False
    return True
