"""The audit log: every staff action (sign-in, download, edit, consent, copies, export,
delete; in matching: decisions on applications and proposals, scheduling, facilitators,
reading the outbox), who did it, when, from where. Append-only: the app has no route
that changes or removes an entry, and database triggers refuse UPDATE and DELETE on the
table, so a bug cannot rewrite history either. Deleting a recording keeps its entries.

Nothing secret goes in: no passwords, no tokens, only who, what and which thing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from storyroom.database import PerDialect, postgres_ddl
from storyroom.records import FieldsRecord
from storyroom.store import ModuleMigrations, Store, fetch_all

log = logging.getLogger(__name__)

_AUDIT_TABLE = """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,           -- a staff email, "staff token" or "command line"
        action TEXT NOT NULL,
        target TEXT,                   -- e.g. a recording id (kept after deletion)
        detail TEXT NOT NULL DEFAULT '{}',  -- JSON
        address TEXT
    );
    CREATE INDEX audit_by_target ON audit_log(target, id);
"""

TABLES = ModuleMigrations(
    "audit",
    (
        # Append-only on both engines: the database itself refuses a change or a deletion.
        PerDialect(
            sqlite=_AUDIT_TABLE
            + """
            CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
            CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
            """,
            postgresql=postgres_ddl(_AUDIT_TABLE)
            + """
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
            CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
            """,
        ),
    ),
)

ACTIONS = (
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "download",
    "edit",
    "consent",
    "copies_issued",
    "copy_revoked",
    "copy_resent",
    "contact_changed",
    "clip",
    "export",
    "delete",
    "transcript_corrected",
    # the matching wing: applications, proposals, scheduling, facilitators, the outbox
    "application_withdrawn",
    "application_deleted",
    "matching_run",
    "proposal_accepted",
    "proposal_rejected",
    "proposal_scheduled",
    "schedule_confirmed",
    "facilitator_added",
    "facilitator_activated",
    "facilitator_deactivated",
    "outbox_read",
    # the room wing: a seat's link made again; the matching wing: a session moved or cancelled
    "seat_link_reissued",
    "schedule_moved",
    "schedule_cancelled",
)


@dataclass(frozen=True, slots=True)
class AuditEntry(FieldsRecord):
    id: int
    at: float
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    address: str | None


class Audit:
    """Writes and reads the audit log (owner: app.py, `Services.audit`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> None:
        assert action in ACTIONS, action
        await self.store.db.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail, address)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail or {}), address),
        )
        await self.store.db.commit()
        log.info("audit: %s %s %s", actor, action, target or "")

    async def entries(
        self,
        limit: int = 100,
        before: int | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first; `before` pages back from an entry id."""
        where: list[str] = []
        args: list[Any] = []
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if action is not None:
            where.append("action = ?")
            args.append(action)
        if target is not None:
            where.append("target = ?")
            args.append(target)
        sql = "SELECT id, at, actor, action, target, detail, address FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await fetch_all(self.store.db, sql, (*args, limit))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]
