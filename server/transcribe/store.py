"""The transcripts' tables (owner: this wing): each recording's transcript status (so a
job survives a restart), staff corrections with who and when, and the full-text index of
the words said (SQLite FTS5).

The turns themselves live in the recording's `transcript.json`; the index holds each
turn's current text (corrected where staff corrected it). A deleted recording takes its
rows with it (foreign keys, and a trigger for the index, which has none)."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from storyroom.database import Database, PerDialect, postgres_ddl
from storyroom.store import ModuleMigrations, fetch_all, fetch_one
from storyroom.transcribe.contracts import Correction, Transcript, TranscriptStatus, Turn

_TABLES = """
        CREATE TABLE transcripts (
            recording_id TEXT PRIMARY KEY REFERENCES recordings(id) ON DELETE CASCADE,
            status TEXT NOT NULL,                -- TranscriptStatus
            voices_done INTEGER NOT NULL DEFAULT 0,
            voices_total INTEGER NOT NULL DEFAULT 0,
            reason TEXT,                         -- why it failed, or what was left out
            updated_at REAL NOT NULL
        );
        CREATE TABLE transcript_corrections (
            id INTEGER PRIMARY KEY,
            recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
            turn INTEGER NOT NULL,
            text TEXT NOT NULL,
            machine_text TEXT NOT NULL,
            corrected_by TEXT NOT NULL,
            corrected_at REAL NOT NULL
        );
        CREATE INDEX transcript_corrections_by_turn
            ON transcript_corrections(recording_id, turn, id);
"""

TABLES = ModuleMigrations(
    "transcripts",
    (
        # Words said, searchable: FTS5 on SQLite, a tsvector with a GIN index on
        # PostgreSQL. Both are given text with its diacritics already folded (`fold`).
        PerDialect(
            sqlite=_TABLES
            + """
            CREATE VIRTUAL TABLE transcript_words USING fts5(
                text, recording_id UNINDEXED, turn UNINDEXED,
                tokenize = 'unicode61 remove_diacritics 2'
            );
            CREATE TRIGGER transcript_words_gone AFTER DELETE ON recordings BEGIN
                DELETE FROM transcript_words WHERE recording_id = old.id;
            END;
            """,
            postgresql=postgres_ddl(_TABLES)
            + """
            CREATE TABLE transcript_words (
                text TEXT NOT NULL,
                recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
                turn BIGINT NOT NULL,
                words tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
            );
            CREATE INDEX transcript_words_search ON transcript_words USING GIN (words);
            CREATE INDEX transcript_words_by_recording ON transcript_words (recording_id);
            """,
        ),
    ),
)

SEARCH_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class TranscriptState:
    recording_id: str
    status: TranscriptStatus
    voices_done: int
    voices_total: int
    reason: str | None
    updated_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "voices_done": self.voices_done,
            "voices_total": self.voices_total,
            "reason": self.reason,
        }


class TranscriptStore:
    """Reads and writes the transcript tables on the server's one database connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def state(self, recording_id: str) -> TranscriptState | None:
        row = await fetch_one(
            self.db,
            "SELECT recording_id, status, voices_done, voices_total, reason, updated_at"
            " FROM transcripts WHERE recording_id = ?",
            (recording_id,),
        )
        if row is None:
            return None
        return TranscriptState(row[0], TranscriptStatus(row[1]), *row[2:])

    async def set_state(
        self,
        recording_id: str,
        status: TranscriptStatus,
        voices_done: int = 0,
        voices_total: int = 0,
        reason: str | None = None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO transcripts (recording_id, status, voices_done, voices_total, reason,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(recording_id) DO UPDATE SET"
            " status = excluded.status, voices_done = excluded.voices_done,"
            " voices_total = excluded.voices_total, reason = excluded.reason,"
            " updated_at = excluded.updated_at",
            (recording_id, status, voices_done, voices_total, reason, time.time()),
        )
        await self.db.commit()

    async def to_resume(self) -> list[str]:
        """Finalized recordings whose transcript is due: never started, or cut off by a
        stop, or waiting for the extra (it may be installed now)."""
        rows = await fetch_all(
            self.db,
            "SELECT r.id FROM recordings r LEFT JOIN transcripts t ON t.recording_id = r.id"
            " WHERE r.finalize_status = 'ready' AND (t.status IS NULL OR t.status IN"
            " ('queued', 'transcribing', 'unavailable')) ORDER BY r.started_at",
        )
        return [r[0] for r in rows]

    async def corrections(self, recording_id: str) -> dict[int, Correction]:
        """The latest correction of each corrected turn."""
        rows = await fetch_all(
            self.db,
            "SELECT turn, text, corrected_by, corrected_at FROM transcript_corrections"
            " WHERE recording_id = ? ORDER BY id",
            (recording_id,),
        )
        return {row[0]: Correction(row[1], row[2], row[3]) for row in rows}

    async def add_correction(self, recording_id: str, turn: Turn, correction: Correction) -> None:
        await self.db.execute(
            "INSERT INTO transcript_corrections (recording_id, turn, text, machine_text,"
            " corrected_by, corrected_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                recording_id,
                turn.index,
                correction.text,
                turn.machine_text,
                correction.by,
                correction.at,
            ),
        )
        await self.db.commit()

    async def index(self, transcript: Transcript) -> None:
        """Replace the recording's searchable text with `transcript`'s turns."""
        await self.db.execute(
            "DELETE FROM transcript_words WHERE recording_id = ?", (transcript.recording_id,)
        )
        await self.db.executemany(
            "INSERT INTO transcript_words (text, recording_id, turn) VALUES (?, ?, ?)",
            [(fold(t.text), transcript.recording_id, t.index) for t in transcript.turns],
        )
        await self.db.commit()

    async def forget(self, recording_ids: Iterable[str], status: TranscriptStatus) -> None:
        """Drop the recordings' searchable text and corrections; mark them `status`."""
        for recording_id in recording_ids:
            await self.db.execute(
                "DELETE FROM transcript_words WHERE recording_id = ?", (recording_id,)
            )
            await self.db.execute(
                "DELETE FROM transcript_corrections WHERE recording_id = ?", (recording_id,)
            )
            await self.set_state(recording_id, status)

    async def search(self, words: str) -> dict[str, list[int]]:
        """Recordings whose current transcript says all of `words` (each a prefix-free
        token, diacritics ignored), with the turns that matched."""
        tokens = search_tokens(words)
        if not tokens:
            return {}
        if self.db.dialect == "sqlite":
            rows = await fetch_all(
                self.db,
                "SELECT recording_id, turn FROM transcript_words WHERE transcript_words MATCH ?"
                " ORDER BY rank LIMIT ?",
                (fts_query(words), SEARCH_LIMIT),
            )
        else:
            rows = await fetch_all(
                self.db,
                "SELECT recording_id, turn FROM transcript_words,"
                " to_tsquery('simple', ?) AS query WHERE words @@ query"
                " ORDER BY ts_rank(words, query) DESC LIMIT ?",
                (" & ".join(tokens), SEARCH_LIMIT),
            )
        out: dict[str, list[int]] = {}
        for recording_id, turn in rows:
            out.setdefault(recording_id, []).append(int(turn))
        return out


def fold(text: str) -> str:
    """Lower case without diacritics ("Canción" is "cancion"), as both engines index it."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def search_tokens(words: str) -> list[str]:
    """Staff's words as plain tokens: letters and digits only, folded, so nothing they
    type is read as query syntax on either engine."""
    tokens = ["".join(ch for ch in fold(w) if ch.isalnum()) for w in words.split()]
    return [t for t in tokens if t]


def fts_query(words: str) -> str:
    """Staff's words as an FTS5 query that means "all of these words" (each quoted)."""
    return " ".join(f'"{t}"' for t in search_tokens(words))
