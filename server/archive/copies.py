"""Copies for participants: each of the two people gets a personal link to download the
recording's access copy, and to see and change their own archive/public consent.

A copy holds both voices, so it is shared only when **both** participants agreed to
share copies. That consent ("copies") is not asked in the room: the room's consent is
about recording, archiving and publishing, and a copy only exists after the recording
is finished. Staff write it down here when each person agrees (by phone, email or on
paper), with a note of how; every change is a row, like the room's consent history.
Links are issued only while both agree, and a link downloads only while both still
agree, so one person withdrawing stops both copies from then on.

A link's token is 192 random bits, shown once (in the link's fragment, so it is never
sent in a URL or written to a log), stored as its SHA-256, expiring after
`copy_link_days`, revocable by staff. Issuing new links for a recording revokes that
person's older ones.

Where each participant's copy goes is kept here too (`seat_contacts`: an email and a
language per seat, from their application when a match is scheduled, or typed in by
staff); it is staff-only and never shown to the other person. `copy_mailings` records,
per recording and seat, that the automatic copy email was claimed and then sent: its
primary key is what makes that email go at most once, even across restarts
(`archive.delivery`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storyroom.config import Settings
from storyroom.errors import NotFound, PreconditionFailed
from storyroom.finalize.contracts import FileKind, FinalizedFile
from storyroom.ids import hash_token, new_id, new_token
from storyroom.seats import PARTICIPANT_SEATS
from storyroom.status import FinalizeStatus
from storyroom.store import ModuleMigrations, RecordingRow, Store, fetch_all, fetch_one

TABLES = ModuleMigrations(
    "copies",
    (
        """
        -- every change of a participant's consent to receive (and so share) copies
        CREATE TABLE copy_consent_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seat TEXT NOT NULL,
            copies INTEGER NOT NULL,
            at REAL NOT NULL,
            source TEXT NOT NULL,      -- "staff" (with who in the audit log)
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX copy_consent_by_session ON copy_consent_events(session_id, seat, id);
        CREATE TABLE copy_links (
            id TEXT PRIMARY KEY,
            recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
            seat TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL,
            revoked_by TEXT,
            downloads INTEGER NOT NULL DEFAULT 0,
            last_used_at REAL
        );
        CREATE INDEX copy_links_by_recording ON copy_links(recording_id, seat);
        """,
        """
        -- where a participant's copy is sent: their email and language (staff-only)
        CREATE TABLE seat_contacts (
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seat TEXT NOT NULL,
            email TEXT NOT NULL,
            language TEXT NOT NULL,
            source TEXT NOT NULL,      -- "application" | "staff"
            updated_at REAL NOT NULL,
            PRIMARY KEY (session_id, seat)
        );
        -- the automatic copy email, at most one per recording and seat: the row is
        -- claimed (inserted) before the email goes and marked sent after it went
        CREATE TABLE copy_mailings (
            recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
            seat TEXT NOT NULL,
            link_id TEXT,              -- set once the link is made, after the claim
            claimed_at REAL NOT NULL,
            sent_at REAL,
            via TEXT,
            ref TEXT,
            error TEXT,
            PRIMARY KEY (recording_id, seat)
        );
        """,
    ),
)


class ContactSource(StrEnum):
    APPLICATION = "application"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class SeatContact:
    """Where one participant's copy goes (staff-only)."""

    session_id: str
    seat: str
    email: str
    language: str
    source: ContactSource
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "seat": self.seat,
            "email": self.email,
            "language": self.language,
            "source": self.source.value,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class CopyMailing:
    """The automatic copy email of one recording to one seat."""

    recording_id: str
    seat: str
    link_id: str | None
    claimed_at: float
    sent_at: float | None
    via: str | None
    ref: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seat": self.seat,
            "link_id": self.link_id,
            "state": "sent" if self.sent_at is not None else "unconfirmed",
            "claimed_at": self.claimed_at,
            "sent_at": self.sent_at,
            "via": self.via,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A new link; its token is in `url` only and cannot be shown again."""

    id: str
    seat: str
    name: str
    url: str
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seat": self.seat,
            "name": self.name,
            "url": self.url,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class CopyLink:
    id: str
    recording_id: str
    seat: str
    created_at: float
    created_by: str
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None
    downloads: int
    last_used_at: float | None

    def state(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (time.time() if now is None else now):
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seat": self.seat,
            "state": self.state(),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "downloads": self.downloads,
            "last_used_at": self.last_used_at,
        }


_LINK_COLUMNS = (
    "id, recording_id, seat, created_at, created_by, expires_at, revoked_at, revoked_by,"
    " downloads, last_used_at"
)


def access_entry(rec: RecordingRow) -> FinalizedFile | None:
    """The finalizer's listing of the access copy, if the recording is ready."""
    if rec.finalize_status is not FinalizeStatus.READY or rec.finalized is None:
        return None
    return rec.finalized.first_of(FileKind.ACCESS)


class Copies:
    """Copy consent and copy links (owner: app.py, `Services.copies`)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @property
    def db(self) -> Any:
        return self.store.db

    # -- consent to copies -----------------------------------------------------------------

    async def consent(self, session_id: str) -> dict[str, dict[str, Any]]:
        """Each participant's current answer: {"copies", "at", "source"}."""
        rows = await fetch_all(
            self.db,
            "SELECT seat, copies, at, source FROM copy_consent_events WHERE id IN"
            " (SELECT MAX(id) FROM copy_consent_events WHERE session_id = ? GROUP BY seat)",
            (session_id,),
        )
        return {r[0]: {"copies": bool(r[1]), "at": r[2], "source": r[3]} for r in rows}

    async def history(self, session_id: str) -> list[dict[str, Any]]:
        rows = await fetch_all(
            self.db,
            "SELECT seat, copies, at, source, note FROM copy_consent_events"
            " WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [
            {"seat": r[0], "copies": bool(r[1]), "at": r[2], "source": r[3], "note": r[4]}
            for r in rows
        ]

    async def set_consent(
        self, session_id: str, seat: str, copies: bool, source: str, note: str
    ) -> None:
        await self.db.execute(
            "INSERT INTO copy_consent_events (session_id, seat, copies, at, source, note)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, seat, copies, time.time(), source, note),
        )
        await self.db.commit()

    async def both_agree(self, session_id: str) -> bool:
        consent = await self.consent(session_id)
        return all(consent.get(seat, {}).get("copies") for seat in PARTICIPANT_SEATS)

    # -- links --------------------------------------------------------------------------------

    async def issue(self, rec: RecordingRow, actor: str) -> list[IssuedLink]:
        """New links for both participants (their older active ones are revoked)."""
        return [await self.issue_for(rec, seat, actor) for seat in PARTICIPANT_SEATS]

    async def issue_for(self, rec: RecordingRow, seat: str, actor: str) -> IssuedLink:
        """A new link for one participant; their older active links are revoked. Refused
        unless the access copy exists and both agree to copies."""
        if access_entry(rec) is None:
            raise PreconditionFailed("the recording has no access copy yet")
        if not await self.both_agree(rec.session_id):
            raise PreconditionFailed(
                "both participants must agree to share copies before links are issued",
                code="no_copies_consent",
            )
        names = {s.seat: s.name for s in await self.store.seats(rec.session_id)}
        now = time.time()
        expires = now + self.settings.copy_link_days * 86400
        token = new_token()
        link_id = new_id("copy")
        await self.db.execute(
            "UPDATE copy_links SET revoked_at = ?, revoked_by = ? WHERE recording_id = ?"
            " AND seat = ? AND revoked_at IS NULL",
            (now, f"{actor} (new link)", rec.id, seat),
        )
        await self.db.execute(
            f"INSERT INTO copy_links ({_LINK_COLUMNS}, token_hash) VALUES"
            " (?, ?, ?, ?, ?, ?, NULL, NULL, 0, NULL, ?)",
            (link_id, rec.id, seat, now, actor, expires, hash_token(token)),
        )
        await self.db.commit()
        return IssuedLink(
            link_id,
            seat,
            names.get(seat, ""),
            f"{self.settings.base_url}/copy#token={token}",
            expires,
        )

    async def links(self, recording_id: str) -> list[CopyLink]:
        rows = await fetch_all(
            self.db,
            f"SELECT {_LINK_COLUMNS} FROM copy_links WHERE recording_id = ?"
            " ORDER BY created_at DESC, seat",
            (recording_id,),
        )
        return [CopyLink(*r) for r in rows]

    async def link(self, link_id: str) -> CopyLink | None:
        row = await fetch_one(
            self.db, f"SELECT {_LINK_COLUMNS} FROM copy_links WHERE id = ?", (link_id,)
        )
        return CopyLink(*row) if row else None

    async def revoke(self, link_id: str, actor: str) -> CopyLink:
        link = await self.link(link_id)
        if link is None:
            raise NotFound("no such link")
        if link.revoked_at is None:
            await self.db.execute(
                "UPDATE copy_links SET revoked_at = ?, revoked_by = ? WHERE id = ?",
                (time.time(), actor, link_id),
            )
            await self.db.commit()
            link = await self.link(link_id)
            assert link is not None
        return link

    async def find(self, token: str) -> CopyLink | None:
        """The link a token belongs to (active or not), else None."""
        if not 16 <= len(token) <= 128:
            return None
        row = await fetch_one(
            self.db,
            f"SELECT {_LINK_COLUMNS} FROM copy_links WHERE token_hash = ?",
            (hash_token(token),),
        )
        return CopyLink(*row) if row else None

    async def downloaded(self, link: CopyLink) -> None:
        await self.db.execute(
            "UPDATE copy_links SET downloads = downloads + 1, last_used_at = ? WHERE id = ?",
            (time.time(), link.id),
        )
        await self.db.commit()

    # -- where copies go ---------------------------------------------------------------------

    async def contacts(self, session_id: str) -> dict[str, SeatContact]:
        rows = await fetch_all(
            self.db,
            "SELECT session_id, seat, email, language, source, updated_at FROM seat_contacts"
            " WHERE session_id = ?",
            (session_id,),
        )
        return {r[1]: SeatContact(r[0], r[1], r[2], r[3], ContactSource(r[4]), r[5]) for r in rows}

    async def set_contact(
        self, session_id: str, seat: str, email: str, language: str, source: ContactSource
    ) -> SeatContact:
        now = time.time()
        await self.db.execute(
            "INSERT INTO seat_contacts (session_id, seat, email, language, source, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, seat) DO UPDATE SET"
            " email = excluded.email, language = excluded.language, source = excluded.source,"
            " updated_at = excluded.updated_at",
            (session_id, seat, email, language, source.value, now),
        )
        await self.db.commit()
        return SeatContact(session_id, seat, email, language, source, now)

    async def remove_contact(self, session_id: str, seat: str) -> None:
        await self.db.execute(
            "DELETE FROM seat_contacts WHERE session_id = ? AND seat = ?", (session_id, seat)
        )
        await self.db.commit()

    # -- the automatic copy emails -------------------------------------------------------------

    async def mailings(self, recording_id: str) -> list[CopyMailing]:
        rows = await fetch_all(
            self.db,
            "SELECT recording_id, seat, link_id, claimed_at, sent_at, via, ref, error"
            " FROM copy_mailings WHERE recording_id = ? ORDER BY seat",
            (recording_id,),
        )
        return [CopyMailing(*r) for r in rows]

    async def claim_mailing(self, recording_id: str, seat: str) -> bool:
        """Take the one automatic email of this recording to this seat, before its link is
        made; False when it was already taken (sent, or claimed by a run that died before
        saying so: staff see it unconfirmed and can resend)."""
        # ON CONFLICT rather than catching the error and rolling back: the connection is
        # shared, and a rollback would also undo another task's write not yet committed.
        cursor = await self.db.execute(
            "INSERT INTO copy_mailings (recording_id, seat, claimed_at) VALUES (?, ?, ?)"
            " ON CONFLICT (recording_id, seat) DO NOTHING",
            (recording_id, seat, time.time()),
        )
        await self.db.commit()
        return cursor.rowcount == 1

    async def mailing_sent(
        self, recording_id: str, seat: str, link_id: str, via: str, ref: str, error: str | None
    ) -> None:
        """The email went (a staff resend records its new link here too)."""
        await self.db.execute(
            "INSERT INTO copy_mailings (recording_id, seat, link_id, claimed_at, sent_at, via,"
            " ref, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recording_id, seat)"
            " DO UPDATE SET link_id = excluded.link_id, sent_at = excluded.sent_at,"
            " via = excluded.via, ref = excluded.ref, error = excluded.error",
            (recording_id, seat, link_id, time.time(), time.time(), via, ref, error),
        )
        await self.db.commit()

    async def unmailed(self) -> list[str]:
        """Ready recordings with a participant who has an address and no copy email yet
        (the start-up sweep: copies that became due while the server was down)."""
        rows = await fetch_all(
            self.db,
            "SELECT DISTINCT r.id FROM recordings r JOIN seat_contacts c"
            " ON c.session_id = r.session_id WHERE r.finalize_status = 'ready'"
            " AND NOT EXISTS (SELECT 1 FROM copy_mailings m WHERE m.recording_id = r.id"
            " AND m.seat = c.seat) ORDER BY r.id",
        )
        return [r[0] for r in rows]
