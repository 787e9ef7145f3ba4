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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
    ),
)


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

    async def issue(self, rec: RecordingRow, actor: str) -> list[dict[str, Any]]:
        """New links for both participants (older active ones are revoked). The tokens are
        in the returned URLs only: they cannot be shown again."""
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
        issued = []
        await self.db.execute(
            "UPDATE copy_links SET revoked_at = ?, revoked_by = ? WHERE recording_id = ?"
            " AND revoked_at IS NULL",
            (now, f"{actor} (new links)", rec.id),
        )
        for seat in PARTICIPANT_SEATS:
            token = new_token()
            link_id = new_id("copy")
            await self.db.execute(
                f"INSERT INTO copy_links ({_LINK_COLUMNS}, token_hash) VALUES"
                " (?, ?, ?, ?, ?, ?, NULL, NULL, 0, NULL, ?)",
                (link_id, rec.id, seat, now, actor, expires, hash_token(token)),
            )
            issued.append(
                {
                    "id": link_id,
                    "seat": seat,
                    "name": names.get(seat, ""),
                    "url": f"{self.settings.base_url}/copy#token={token}",
                    "expires_at": expires,
                }
            )
        await self.db.commit()
        return issued

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
