"""The database (SQLite by default, PostgreSQL in a cluster; storyroom.database):
sessions, seats, consent history, room events.

Owner: the app's cleanup context opens one `Store` and closes it on shutdown.
Every change that matters is written here before it is shown to anyone.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from storyroom.database import Database, PerDialect, Row, Script, open_database, postgres_ddl
from storyroom.errors import InvalidInput, NotFound
from storyroom.finalize.contracts import Finalized
from storyroom.orgs import DEFAULT_ORG_ID, Organisation, OrgScope
from storyroom.records import FieldsRecord
from storyroom.schema import MIGRATIONS
from storyroom.seats import SessionKind
from storyroom.status import LIVE_STATES, FinalizeStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

RowT = TypeVar("RowT", bound="DataclassInstance")

JobWriter = Callable[[Database, str], Awaitable[None]]
"""Writes a recording's finalization job, in the open transaction (`Store.job_writer`)."""


_POSTGRES_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
"""


MIGRATION_LOCK = 0x73746F7279  # "story": PostgreSQL's advisory lock of the migrations


@asynccontextmanager
async def _migrating(db: Database) -> AsyncIterator[None]:
    """Nodes of a cluster that start at once: one brings the schema up to date while
    the others wait, then find it done (SQLite has one process)."""
    if db.dialect != "postgresql":
        yield
        return
    await db.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
    await db.commit()
    # a failed step closes the connection (Store.open), which ends the lock with it
    yield
    await db.commit()  # a module's steps may be savepoints in a transaction still open
    await db.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))
    await db.commit()


def _then(script: Script, after: PerDialect) -> PerDialect:
    """A migration step and the statement that records it, in one transaction."""
    if isinstance(script, PerDialect):
        return PerDialect(
            f"{script.sqlite};\n{after.sqlite}", f"{script.postgresql};\n{after.postgresql}"
        )
    return PerDialect(f"{script};\n{after.sqlite}", f"{postgres_ddl(script)};\n{after.postgresql}")


async def fetch_all(db: Database, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    """Every row of a query."""
    return await db.fetch_all(sql, params)


async def fetch_one(db: Database, sql: str, params: Sequence[Any] = ()) -> Row | None:
    """The first row of a query, if any."""
    return await db.fetch_one(sql, params)


def from_row(cls: type[RowT], row: Row, **decoded: Any) -> RowT:
    """A row dataclass from a `SELECT *` row: each field from the column of its name, or
    from `decoded` where the stored value needs decoding (JSON, enums)."""
    columns = {f.name: row[f.name] for f in fields(cls) if f.name not in decoded}
    return cls(**columns, **decoded)


@dataclass(frozen=True, slots=True)
class ModuleMigrations:
    """A module's own migrations, applied in order after the core schema."""

    name: str
    scripts: tuple[Script, ...]


@dataclass(frozen=True, slots=True)
class SeatRow:
    session_id: str
    seat: str
    name: str
    bio: str
    token_expires_at: float


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    title: str
    language: str
    target_minutes: int
    questions: list[dict[str, Any]]
    agreed: list[str]
    created_at: float
    starts_at: float | None = None  # the scheduled start, when the session has one
    kind: SessionKind = SessionKind.FACILITATED
    org_id: int = DEFAULT_ORG_ID


@dataclass(frozen=True, slots=True)
class Consent(FieldsRecord):
    record: bool
    archive: bool
    public: bool
    at: float


@dataclass(frozen=True, slots=True)
class RecordingRow:
    id: str
    session_id: str
    take: int
    status: str
    started_at: float
    stopped_at: float | None
    elapsed_before: float
    run_started_at: float | None
    status_reason: str | None
    finalize_status: FinalizeStatus | None = None
    finalize_percent: float = 0.0
    finalize_reason: str | None = None
    finalize_stage: str | None = None  # the worker's stage (finalize/progress), while it runs
    finalized: Finalized | None = None
    finalized_at: float | None = None

    @property
    def public_status(self) -> str:
        """What staff see: the live state, else the finalization state, else stopped/interrupted."""
        if self.status in LIVE_STATES or not self.finalize_status:
            return self.status
        if self.finalize_status is FinalizeStatus.QUEUED:
            return FinalizeStatus.FINALIZING
        return self.finalize_status


@dataclass(frozen=True, slots=True)
class CueRow:
    id: int
    question_id: str
    at: float
    rec_time: float | None
    recording_id: str | None


@dataclass(frozen=True, slots=True)
class NoteRow:
    id: int
    text: str
    at: float
    rec_time: float | None


@dataclass(frozen=True, slots=True)
class MarkerRow:
    id: int
    seat: str
    label: str
    at: float
    rec_time: float | None
    recording_id: str | None


class Store:
    """The database. Its SQL runs off the loop (aiosqlite's thread, psycopg's sockets)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.job_writer: JobWriter | None = None
        """With a job queue in the database (storyroom.finalize.queue): the finalization
        job of a take that stops or is interrupted is written by this in the same
        transaction as the status change, so the job exists if and only if it changed."""

    @classmethod
    async def open(cls, path_or_url: Path | str, modules: Sequence[ModuleMigrations] = ()) -> Store:
        """Open (creating) the database (a SQLite file's path or a `postgresql://` URL)
        and bring the core schema and each module's own tables up to date."""
        db = await open_database(path_or_url)
        store = cls(db)
        try:
            async with _migrating(db):
                await store._migrate()
                for module in modules:
                    await store._migrate_module(module)
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    @property
    def db(self) -> Database:
        """The connection, for modules that keep their own tables (applications, staff)."""
        return self._db

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema version {version} is newer than this storyroom "
                f"({len(MIGRATIONS)}); upgrade storyroom"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(
                _then(
                    script,
                    PerDialect(
                        sqlite=f"PRAGMA user_version = {number};",
                        postgresql=f"UPDATE schema_version SET version = {number};",
                    ),
                )
            )

    async def _migrate_module(self, module: ModuleMigrations) -> None:
        """A module's tables have their own version line in `module_versions`."""
        row = await fetch_one(
            self._db, "SELECT version FROM module_versions WHERE module = ?", (module.name,)
        )
        version = int(row[0]) if row else 0
        if version > len(module.scripts):
            raise RuntimeError(
                f"the {module.name} tables are at version {version}, newer than this storyroom"
            )
        for number, script in enumerate(module.scripts[version:], start=version + 1):
            record = (
                f"INSERT INTO module_versions (module, version) VALUES ('{module.name}', {number})"
                " ON CONFLICT (module) DO UPDATE SET version = excluded.version;"
            )
            await self._db.executescript(_then(script, PerDialect(record, record)))

    async def schema_version(self) -> int:
        """The core schema's version: SQLite's `user_version`, a one-row table on PostgreSQL."""
        if self._db.dialect == "sqlite":
            row = await fetch_one(self._db, "PRAGMA user_version")
        else:
            await self._db.executescript(PerDialect(sqlite="", postgresql=_POSTGRES_SCHEMA_VERSION))
            row = await fetch_one(self._db, "SELECT version FROM schema_version")
        return int(row[0]) if row else 0

    # -- sessions and seats -------------------------------------------------

    async def create_session(
        self,
        session: SessionRow,
        seats: Sequence[tuple[str, str, str, str, float]],
    ) -> None:
        """Insert a session and its seats (seat, name, bio, token_hash, expires_at) atomically."""
        await self._db.execute("BEGIN")
        try:
            await self._db.execute(
                "INSERT INTO sessions (id, title, language, target_minutes, questions, agreed,"
                " created_at, starts_at, kind, org_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.title,
                    session.language,
                    session.target_minutes,
                    json.dumps(session.questions),
                    json.dumps(session.agreed),
                    session.created_at,
                    session.starts_at,
                    session.kind.value,
                    session.org_id,
                ),
            )
            await self._db.executemany(
                "INSERT INTO seats (session_id, seat, name, bio, token_hash, token_expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(session.id, *seat) for seat in seats],
            )
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise

    async def get_session(self, session_id: str, scope: OrgScope) -> SessionRow | None:
        """The session, if it belongs to an organisation `scope` sees."""
        owned, args = scope.where("org_id")
        row = await fetch_one(
            self._db, f"SELECT * FROM sessions WHERE id = ? AND {owned}", (session_id, *args)
        )
        return _session(row) if row else None

    async def list_sessions(self, scope: OrgScope, limit: int = 200) -> list[SessionRow]:
        owned, args = scope.where("org_id")
        rows = await fetch_all(
            self._db,
            f"SELECT * FROM sessions WHERE {owned} ORDER BY created_at DESC LIMIT ?",
            (*args, limit),
        )
        return [_session(r) for r in rows]

    # -- organisations ----------------------------------------------------------------

    async def add_organisation(
        self,
        slug: str,
        name: str,
        logo_url: str | None,
        contact: str | None,
        settings: dict[str, Any],
    ) -> Organisation:
        cur = await self._db.execute(
            "INSERT INTO organisations (slug, name, logo_url, contact, settings, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (slug) DO NOTHING",
            (slug, name, logo_url, contact, json.dumps(settings), time.time()),
        )
        await self._db.commit()
        if not cur.rowcount:
            raise InvalidInput(f"{slug} is taken", code="exists", status=409)
        found = await self.organisation_by_slug(slug)
        assert found is not None
        return found

    async def organisation(self, org_id: int) -> Organisation | None:
        row = await fetch_one(self._db, "SELECT * FROM organisations WHERE id = ?", (org_id,))
        return _organisation(row) if row else None

    async def organisation_by_slug(self, slug: str) -> Organisation | None:
        row = await fetch_one(self._db, "SELECT * FROM organisations WHERE slug = ?", (slug,))
        return _organisation(row) if row else None

    async def organisations(self, scope: OrgScope) -> list[Organisation]:
        owned, args = scope.where("id")
        rows = await fetch_all(
            self._db, f"SELECT * FROM organisations WHERE {owned} ORDER BY id", args
        )
        return [_organisation(r) for r in rows]

    async def session_organisation(self, session_id: str) -> Organisation:
        """The organisation a session belongs to (for participants' pages and bags)."""
        row = await fetch_one(
            self._db,
            "SELECT o.* FROM organisations o JOIN sessions s ON s.org_id = o.id WHERE s.id = ?",
            (session_id,),
        )
        if row is None:
            raise NotFound("no such session")
        return _organisation(row)

    async def seats(self, session_id: str) -> list[SeatRow]:
        rows = await fetch_all(
            self._db,
            "SELECT session_id, seat, name, bio, token_expires_at FROM seats"
            " WHERE session_id = ? ORDER BY seat",
            (session_id,),
        )
        return [SeatRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def seat_by_token_hash(self, token_hash: str) -> SeatRow | None:
        r = await fetch_one(
            self._db,
            "SELECT session_id, seat, name, bio, token_expires_at FROM seats WHERE token_hash = ?",
            (token_hash,),
        )
        return SeatRow(r[0], r[1], r[2], r[3], r[4]) if r else None

    async def replace_seat_tokens(
        self,
        session_id: str,
        tokens: Sequence[tuple[str, str, float]],
        starts_at: float | None = None,
    ) -> None:
        """New (seat, token_hash, expires_at) for seats of a session, atomically; the old
        tokens stop opening anything. With `starts_at`, the session's start moves too."""
        await self._db.execute("BEGIN")
        try:
            if starts_at is not None:
                await self._db.execute(
                    "UPDATE sessions SET starts_at = ? WHERE id = ?", (starts_at, session_id)
                )
            await self._db.executemany(
                "UPDATE seats SET token_hash = ?, token_expires_at = ?"
                " WHERE session_id = ? AND seat = ?",
                [(token_hash, expires, session_id, seat) for seat, token_hash, expires in tokens],
            )
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise

    async def expire_seat_tokens(self, session_id: str, at: float) -> None:
        """Every seat link of the session stops working at `at` (a cancelled session)."""
        await self._db.execute(
            "UPDATE seats SET token_expires_at = ? WHERE session_id = ? AND token_expires_at > ?",
            (at, session_id, at),
        )
        await self._db.commit()

    async def set_agreed(self, session_id: str, question_ids: Sequence[str]) -> None:
        await self._db.execute(
            "UPDATE sessions SET agreed = ? WHERE id = ?",
            (json.dumps(list(question_ids)), session_id),
        )
        await self._db.commit()

    # -- consent and choices --------------------------------------------------

    async def add_consent(
        self, session_id: str, seat: str, consent: Consent, source: str = "room"
    ) -> None:
        await self._db.execute(
            "INSERT INTO consent_events (session_id, seat, record, archive, public, at, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, seat, consent.record, consent.archive, consent.public, consent.at, source),
        )
        await self._db.commit()

    async def current_consent(self, session_id: str) -> dict[str, Consent]:
        rows = await fetch_all(
            self._db,
            "SELECT seat, record, archive, public, at FROM consent_events WHERE id IN"
            " (SELECT MAX(id) FROM consent_events WHERE session_id = ? GROUP BY seat)",
            (session_id,),
        )
        return {r[0]: Consent(bool(r[1]), bool(r[2]), bool(r[3]), r[4]) for r in rows}

    async def consent_history(self, session_id: str) -> list[dict[str, Any]]:
        rows = await fetch_all(
            self._db,
            "SELECT seat, record, archive, public, at, source FROM consent_events"
            " WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [
            {
                "seat": r[0],
                "record": bool(r[1]),
                "archive": bool(r[2]),
                "public": bool(r[3]),
                "at": r[4],
                "source": r[5],
            }
            for r in rows
        ]

    async def set_choices(self, session_id: str, seat: str, question_ids: Sequence[str]) -> None:
        await self._db.execute(
            "INSERT INTO question_choices (session_id, seat, question_ids, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (session_id, seat) DO UPDATE SET question_ids = excluded.question_ids,"
            " at = excluded.at",
            (session_id, seat, json.dumps(list(question_ids)), time.time()),
        )
        await self._db.commit()

    async def choices(self, session_id: str) -> dict[str, list[str]]:
        rows = await fetch_all(
            self._db,
            "SELECT seat, question_ids FROM question_choices WHERE session_id = ?",
            (session_id,),
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    # -- recordings -----------------------------------------------------------

    async def recordings_for(self, session_id: str) -> list[RecordingRow]:
        rows = await fetch_all(
            self._db, "SELECT * FROM recordings WHERE session_id = ? ORDER BY take", (session_id,)
        )
        return [_recording(r) for r in rows]

    async def get_recording(self, recording_id: str, scope: OrgScope) -> RecordingRow | None:
        """The recording, if its session belongs to an organisation `scope` sees."""
        owned, args = scope.where("s.org_id")
        row = await fetch_one(
            self._db,
            "SELECT r.* FROM recordings r JOIN sessions s ON s.id = r.session_id"
            f" WHERE r.id = ? AND {owned}",
            (recording_id, *args),
        )
        return _recording(row) if row else None

    async def list_recordings(self, scope: OrgScope, limit: int = 500) -> list[RecordingRow]:
        owned, args = scope.where("s.org_id")
        rows = await fetch_all(
            self._db,
            "SELECT r.* FROM recordings r JOIN sessions s ON s.id = r.session_id"
            f" WHERE {owned} ORDER BY r.started_at DESC LIMIT ?",
            (*args, limit),
        )
        return [_recording(r) for r in rows]

    async def insert_recording(self, rec: RecordingRow) -> None:
        await self._db.execute(
            "INSERT INTO recordings (id, session_id, take, status, started_at, stopped_at,"
            " elapsed_before, run_started_at, status_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec.id,
                rec.session_id,
                rec.take,
                rec.status,
                rec.started_at,
                rec.stopped_at,
                rec.elapsed_before,
                rec.run_started_at,
                rec.status_reason,
            ),
        )
        await self._db.execute(
            "INSERT INTO recording_events (recording_id, kind, at, rec_time) VALUES (?, ?, ?, 0)",
            (rec.id, "start", rec.started_at),
        )
        await self._db.commit()

    async def update_recording(
        self, rec: RecordingRow, event: str, at: float, rec_time: float
    ) -> None:
        """Persist a state transition together with its event row (and, for a stop, its
        finalization job: `job_writer`); all or nothing."""
        async with self.transaction():
            await self._update_recording(rec, event, at, rec_time)

    async def _update_recording(
        self, rec: RecordingRow, event: str, at: float, rec_time: float
    ) -> None:
        await self._db.execute(
            "UPDATE recordings SET status = ?, stopped_at = ?, elapsed_before = ?,"
            " run_started_at = ?, status_reason = ? WHERE id = ?",
            (
                rec.status,
                rec.stopped_at,
                rec.elapsed_before,
                rec.run_started_at,
                rec.status_reason,
                rec.id,
            ),
        )
        await self._db.execute(
            "INSERT INTO recording_events (recording_id, kind, at, rec_time) VALUES (?, ?, ?, ?)",
            (rec.id, event, at, rec_time),
        )
        if rec.status in ("stopped", "interrupted"):
            await self._write_job(rec.id)

    async def recording_events(self, recording_id: str) -> list[dict[str, Any]]:
        rows = await fetch_all(
            self._db,
            "SELECT kind, at, rec_time FROM recording_events WHERE recording_id = ? ORDER BY id",
            (recording_id,),
        )
        return [{"kind": r[0], "at": r[1], "rec_time": r[2]} for r in rows]

    async def mark_running_interrupted(self, now: float) -> list[str]:
        """At start-up: recordings left recording or paused by a dead process become interrupted."""
        async with self.transaction():
            interrupted = await interrupt_running(self._db, now)
            for rec_id in interrupted:
                await self._write_job(rec_id)
        return interrupted

    async def set_finalize(
        self,
        recording_id: str,
        status: FinalizeStatus,
        percent: float = 0.0,
        reason: str | None = None,
        result: Finalized | None = None,
        stage: str | None = None,
    ) -> None:
        await self._db.execute(
            "UPDATE recordings SET finalize_status = ?, finalize_percent = ?, finalize_reason = ?,"
            " finalize_stage = ?,"
            " finalized = COALESCE(?, finalized), finalized_at = CASE WHEN ? = 'ready' THEN ?"
            " ELSE finalized_at END WHERE id = ?",
            (
                status,
                percent,
                reason,
                stage,
                json.dumps(result.to_json()) if result is not None else None,
                status,
                time.time(),
                recording_id,
            ),
        )
        await self._db.commit()

    async def queue_finalize(self, recording_id: str, writer: JobWriter | None = None) -> None:
        """Mark a recording `queued` and write its job (`writer`, else `job_writer`) in
        one transaction. Raises NotFound for an unknown recording."""
        async with self.transaction():
            if not await self._write_job(recording_id, writer):
                raise NotFound(f"there is no recording {recording_id!r}", code="unknown_recording")

    async def _write_job(self, recording_id: str, writer: JobWriter | None = None) -> bool:
        """In the caller's transaction: `queued`, and the job when jobs are rows."""
        return await write_job(self._db, recording_id, writer or self.job_writer)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Commit what the block wrote, or roll all of it back if it raises."""
        try:
            yield
        except BaseException:
            await self._db.rollback()
            raise
        await self._db.commit()

    async def finalize_states(self, also: Sequence[str]) -> list[Row]:
        """`id, finalize_status, finalize_percent, finalize_stage` of the recordings being
        finalized or queued, and of those in `also` (to see them end)."""
        marks = ",".join("?" * len(also)) or "NULL"
        return await fetch_all(
            self._db,
            "SELECT id, finalize_status, finalize_percent, finalize_stage FROM recordings"
            f" WHERE finalize_status IN ('queued', 'finalizing') OR id IN ({marks})",
            tuple(also),
        )

    async def recordings_to_finalize(self) -> list[RecordingRow]:
        """Stopped or interrupted recordings whose finalization never finished."""
        rows = await fetch_all(
            self._db,
            "SELECT * FROM recordings WHERE status IN ('stopped', 'interrupted')"
            " AND (finalize_status IS NULL OR finalize_status IN ('queued', 'finalizing'))"
            " ORDER BY started_at",
        )
        return [_recording(r) for r in rows]

    # -- cues and markers -------------------------------------------------------

    async def add_cue(
        self,
        session_id: str,
        recording_id: str | None,
        question_id: str,
        at: float,
        rec_time: float | None,
    ) -> int:
        row = await fetch_one(
            self._db,
            "INSERT INTO cues (session_id, recording_id, question_id, at, rec_time)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (session_id, recording_id, question_id, at, rec_time),
        )
        await self._db.commit()
        assert row is not None
        return int(row["id"])

    async def cues(self, session_id: str) -> list[CueRow]:
        rows = await fetch_all(
            self._db,
            "SELECT id, question_id, at, rec_time, recording_id FROM cues WHERE session_id = ?"
            " ORDER BY id",
            (session_id,),
        )
        return [CueRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def add_marker(
        self,
        session_id: str,
        recording_id: str | None,
        seat: str,
        label: str,
        at: float,
        rec_time: float | None,
    ) -> int:
        row = await fetch_one(
            self._db,
            "INSERT INTO markers (session_id, recording_id, seat, label, at, rec_time)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (session_id, recording_id, seat, label, at, rec_time),
        )
        await self._db.commit()
        assert row is not None
        return int(row["id"])

    async def add_note(
        self,
        session_id: str,
        recording_id: str | None,
        seat: str,
        text: str,
        at: float,
        rec_time: float | None,
    ) -> int:
        row = await fetch_one(
            self._db,
            "INSERT INTO notes (session_id, recording_id, seat, text, at, rec_time)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (session_id, recording_id, seat, text, at, rec_time),
        )
        await self._db.commit()
        assert row is not None
        return int(row["id"])

    async def notes(self, session_id: str) -> list[NoteRow]:
        rows = await fetch_all(
            self._db,
            "SELECT id, text, at, rec_time FROM notes WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [NoteRow(r[0], r[1], r[2], r[3]) for r in rows]

    async def markers(self, session_id: str) -> list[MarkerRow]:
        rows = await fetch_all(
            self._db,
            "SELECT id, seat, label, at, rec_time, recording_id FROM markers WHERE session_id = ?"
            " ORDER BY id",
            (session_id,),
        )
        return [MarkerRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def write_job(db: Database, recording_id: str, writer: JobWriter | None) -> bool:
    """In `db`'s open transaction: the recording `queued` and its job written by `writer`
    (nothing when jobs are not rows: None); False for an unknown recording. The store's
    stops and the cluster's reaper both use it, inside the transaction that ends the take."""
    if writer is None:
        return True
    cursor = await db.execute(
        "UPDATE recordings SET finalize_status = 'queued', finalize_percent = 0,"
        " finalize_reason = NULL, finalize_stage = NULL WHERE id = ?",
        (recording_id,),
    )
    if cursor.rowcount != 1:
        return False
    await writer(db, recording_id)
    return True


async def interrupt_running(
    db: Database,
    now: float,
    of_sessions: str = "",
    params: Sequence[Any] = (),
    why: str = "the server stopped",
) -> list[str]:
    """Recordings left recording or paused by a process that is gone become interrupted
    (all of them, or those whose session is in the subquery `of_sessions`: a dead node's
    rooms); their ids. Runs in the caller's transaction, which the caller commits: a
    cluster's reaper frees the dead node's rooms in the same one."""
    query = "SELECT * FROM recordings WHERE status IN ('recording', 'paused')"
    if of_sessions:
        query += f" AND session_id IN ({of_sessions})"
    rows = [_recording(r) for r in await fetch_all(db, query + " FOR UPDATE" * _locks(db), params)]
    for rec in rows:
        await db.execute(
            "UPDATE recordings SET status = 'interrupted', stopped_at = ?, run_started_at = NULL,"
            " status_reason = ? WHERE id = ?",
            (now, f"{why} while this recording was {rec.status}", rec.id),
        )
        await db.execute(
            "INSERT INTO recording_events (recording_id, kind, at, rec_time) VALUES (?, ?, ?, ?)",
            (rec.id, "interrupted", now, rec.elapsed_before),
        )
    return [r.id for r in rows]


def _locks(db: Database) -> bool:
    """Whether `SELECT ... FOR UPDATE` exists (PostgreSQL; SQLite has one writer anyway)."""
    return db.dialect == "postgresql"


def _session(row: Row) -> SessionRow:
    return from_row(
        SessionRow,
        row,
        questions=json.loads(row["questions"]),
        agreed=json.loads(row["agreed"]),
        kind=SessionKind(row["kind"]),
    )


def _organisation(row: Row) -> Organisation:
    return from_row(Organisation, row, settings=json.loads(row["settings"]))


def _recording(row: Row) -> RecordingRow:
    status = row["finalize_status"]
    finalized = Finalized.from_json(json.loads(row["finalized"])) if row["finalized"] else None
    return from_row(
        RecordingRow,
        row,
        finalize_status=FinalizeStatus(status) if status else None,
        finalized=finalized,
    )
