"""Storage of applications, match proposals, facilitators and schedules: the
"applications" module's own tables on the shared connection (`Store.db`).

Contact details (last name, email, phone) live only in `applications` and are read
only by staff endpoints and the mailer; sessions get first names and bios.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storyroom.database import Database, Row
from storyroom.ids import new_id
from storyroom.matching.applications import ApplicationFilter, ApplicationIn, FacilitatorIn, Status
from storyroom.matching.availability import Window
from storyroom.matching.engine import Applicant, Pair, pair_key
from storyroom.orgs import DEFAULT_ORG_ID, OrgScope
from storyroom.store import ModuleMigrations, fetch_all, fetch_one, from_row

TABLES = ModuleMigrations(
    "applications",
    (
        """
        CREATE TABLE applications (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,            -- new | proposed | matched | scheduled | withdrawn
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            first_name TEXT NOT NULL,
            last_name TEXT NOT NULL,         -- staff only
            email TEXT NOT NULL,             -- staff only
            phone TEXT NOT NULL DEFAULT '',  -- staff only
            city TEXT NOT NULL,
            region TEXT NOT NULL,
            time_zone TEXT NOT NULL,
            language TEXT NOT NULL,          -- the language we write to them in
            speaks TEXT NOT NULL,            -- JSON list of languages
            placement INTEGER NOT NULL,      -- 1 very liberal .. 4 centre .. 7 very conservative
            party TEXT NOT NULL DEFAULT '',
            bio TEXT NOT NULL,
            shaped_views TEXT NOT NULL DEFAULT '',
            availability TEXT NOT NULL,      -- JSON list of {"day", "start", "end"}, local time
            accessibility TEXT NOT NULL DEFAULT '',
            consented_at REAL NOT NULL       -- contact and privacy notice, both required
        );
        CREATE INDEX applications_by_status ON applications(status, created_at);
        CREATE TABLE proposals (
            id TEXT PRIMARY KEY,
            a_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
            b_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
            status TEXT NOT NULL,            -- proposed | accepted | rejected | scheduled | cancelled
            weight INTEGER NOT NULL,
            explanation TEXT NOT NULL,       -- JSON: region, languages, placements, slot
            created_at REAL NOT NULL,
            decided_at REAL,
            CHECK (a_id < b_id)
        );
        -- the same two people are never proposed twice, whatever became of the first time
        CREATE UNIQUE INDEX proposals_by_pair ON proposals(a_id, b_id);
        CREATE INDEX proposals_by_b ON proposals(b_id);
        CREATE INDEX proposals_by_status ON proposals(status, created_at);
        CREATE TABLE facilitators (
            id TEXT PRIMARY KEY,
            first_name TEXT NOT NULL,
            email TEXT NOT NULL,
            language TEXT NOT NULL,
            speaks TEXT NOT NULL,
            time_zone TEXT NOT NULL,
            availability TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL
        );
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            proposal_id TEXT NOT NULL UNIQUE REFERENCES proposals(id) ON DELETE CASCADE,
            facilitator_id TEXT NOT NULL REFERENCES facilitators(id),
            language TEXT NOT NULL,
            starts_at REAL NOT NULL,
            minutes INTEGER NOT NULL,
            status TEXT NOT NULL,            -- planned | confirmed | cancelled
            session_id TEXT,                 -- the core session, once confirmed
            invitations TEXT NOT NULL DEFAULT '[]',  -- JSON: [{"role", "message", "via"}]
            created_at REAL NOT NULL,
            confirmed_at REAL
        );
        CREATE INDEX schedules_by_facilitator ON schedules(facilitator_id, starts_at);
        """,
        # 2: a confirmed session moved or cancelled: its invitations' calendar SEQUENCE
        """
        ALTER TABLE schedules ADD COLUMN sequence INTEGER NOT NULL DEFAULT 0;
        """,
        # 3: each row belongs to an organisation (what existed before: the default one);
        # matching and scheduling run within one
        """
        ALTER TABLE applications ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE proposals ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE facilitators ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE schedules ADD COLUMN org_id INTEGER NOT NULL DEFAULT 1;
        CREATE INDEX applications_by_org ON applications(org_id, status, created_at);
        """,
    ),
)


def _windows(raw: str) -> tuple[Window, ...]:
    out = []
    for item in json.loads(raw):
        start_h, start_m = item["start"].split(":")
        end_h, end_m = item["end"].split(":")
        out.append(
            Window(item["day"], int(start_h) * 60 + int(start_m), int(end_h) * 60 + int(end_m))
        )
    return tuple(out)


def _windows_json(windows: Iterable[Window]) -> str:
    return json.dumps([w.to_json() for w in windows])


@dataclass(frozen=True, slots=True)
class ApplicationRow(ApplicationIn):
    """A stored application: what the person sent, and where it is in the flow."""

    id: str
    status: Status
    created_at: float
    updated_at: float
    consented_at: float
    org_id: int = DEFAULT_ORG_ID

    def for_matching(self) -> Applicant:
        """What the engine sees: no names, no contact details."""
        return Applicant(
            self.id,
            self.region,
            frozenset(self.speaks),
            self.placement,
            self.time_zone,
            self.availability,
        )

    def summary_json(self) -> dict[str, Any]:
        """A list row for staff."""
        return {
            "id": self.id,
            "status": self.status.value,
            "created_at": self.created_at,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "city": self.city,
            "region": self.region,
            "language": self.language,
            "speaks": list(self.speaks),
            "placement": self.placement,
        }

    def staff_json(self) -> dict[str, Any]:
        """Everything, contact details included: staff only."""
        return {
            **self.summary_json(),
            "updated_at": self.updated_at,
            "email": self.email,
            "phone": self.phone,
            "time_zone": self.time_zone,
            "party": self.party,
            "bio": self.bio,
            "shaped_views": self.shaped_views,
            "availability": [w.to_json() for w in self.availability],
            "accessibility": self.accessibility,
            "consented_at": self.consented_at,
        }


@dataclass(frozen=True, slots=True)
class ProposalRow:
    id: str
    a_id: str
    b_id: str
    status: str
    weight: int
    explanation: dict[str, Any]
    created_at: float
    decided_at: float | None
    org_id: int = DEFAULT_ORG_ID


@dataclass(frozen=True, slots=True)
class FacilitatorRow(FacilitatorIn):
    """A stored facilitator: what staff entered, and whether they take sessions."""

    id: str
    active: bool
    created_at: float
    org_id: int = DEFAULT_ORG_ID

    def staff_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "email": self.email,
            "language": self.language,
            "speaks": list(self.speaks),
            "time_zone": self.time_zone,
            "availability": [w.to_json() for w in self.availability],
            "active": self.active,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    id: str
    proposal_id: str
    facilitator_id: str
    language: str
    starts_at: float
    minutes: int
    status: str
    session_id: str | None
    invitations: list[dict[str, Any]]
    created_at: float
    confirmed_at: float | None
    sequence: int = 0  # the calendar SEQUENCE of the last invitations sent
    org_id: int = DEFAULT_ORG_ID


def _application(r: Row) -> ApplicationRow:
    return from_row(
        ApplicationRow,
        r,
        status=Status(r["status"]),
        speaks=tuple(json.loads(r["speaks"])),
        availability=_windows(r["availability"]),
    )


def _proposal(r: Row) -> ProposalRow:
    return from_row(ProposalRow, r, explanation=json.loads(r["explanation"]))


def _facilitator(r: Row) -> FacilitatorRow:
    return from_row(
        FacilitatorRow,
        r,
        speaks=tuple(json.loads(r["speaks"])),
        availability=_windows(r["availability"]),
        active=bool(r["active"]),
    )


def _schedule(r: Row) -> ScheduleRow:
    return from_row(ScheduleRow, r, invitations=json.loads(r["invitations"]))


class ApplicationStore:
    """The module's tables. Each method commits what it changed before returning."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- applications -----------------------------------------------------------------

    async def add_application(
        self, spec: ApplicationIn, org_id: int, now: float | None = None
    ) -> str:
        """An application to `org_id`'s programme."""
        now = time.time() if now is None else now
        app_id = new_id("app")
        await self._db.execute(
            "INSERT INTO applications (id, status, created_at, updated_at, first_name, last_name,"
            " email, phone, city, region, time_zone, language, speaks, placement, party, bio,"
            " shaped_views, availability, accessibility, consented_at, org_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                app_id,
                Status.NEW.value,
                now,
                now,
                spec.first_name,
                spec.last_name,
                spec.email,
                spec.phone,
                spec.city,
                spec.region,
                spec.time_zone,
                spec.language,
                json.dumps(list(spec.speaks)),
                spec.placement,
                spec.party,
                spec.bio,
                spec.shaped_views,
                _windows_json(spec.availability),
                spec.accessibility,
                now,
                org_id,
            ),
        )
        await self._db.commit()
        return app_id

    async def list_applications(
        self, where: ApplicationFilter, scope: OrgScope, limit: int = 1000
    ) -> list[ApplicationRow]:
        owned, owner = scope.where("org_id")
        clauses: list[str] = [owned]
        params: list[Any] = list(owner)
        if where.region:
            clauses.append("region = ?")
            params.append(where.region)
        if where.language:
            # `speaks` is a JSON list of language codes; a quoted code in its text is the
            # same test on both engines (SQLite's json_each has no PostgreSQL twin on TEXT)
            clauses.append("speaks LIKE ?")
            params.append(f'%"{where.language}"%')
        if where.placement:
            clauses.append("placement = ?")
            params.append(where.placement)
        if where.status:
            clauses.append("status = ?")
            params.append(where.status.value)
        sql = "SELECT * FROM applications WHERE " + " AND ".join(clauses)
        rows = await fetch_all(
            self._db, sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit)
        )
        return [_application(r) for r in rows]

    async def get_application(self, app_id: str, scope: OrgScope) -> ApplicationRow | None:
        row = await self._owned("applications", app_id, scope)
        return _application(row) if row else None

    async def _owned(self, table: str, row_id: str, scope: OrgScope) -> Row | None:
        """A row of `table` (one of this module's) by id, if `scope` sees its organisation."""
        owned, args = scope.where("org_id")
        return await fetch_one(
            self._db, f"SELECT * FROM {table} WHERE id = ? AND {owned}", (row_id, *args)
        )

    async def applications(self, ids: Iterable[str]) -> dict[str, ApplicationRow]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = await fetch_all(
            self._db, f"SELECT * FROM applications WHERE id IN ({marks})", wanted
        )
        return {r["id"]: _application(r) for r in rows}

    async def waiting(self, org_id: int) -> list[ApplicationRow]:
        """Everyone the engine may pair within `org_id`: its new applications, oldest first."""
        rows = await fetch_all(
            self._db,
            "SELECT * FROM applications WHERE status = ? AND org_id = ? ORDER BY created_at",
            (Status.NEW.value, org_id),
        )
        return [_application(r) for r in rows]

    async def _set_status(self, ids: Iterable[str], status: Status, now: float) -> None:
        await self._db.executemany(
            "UPDATE applications SET status = ?, updated_at = ? WHERE id = ?",
            [(status.value, now, app_id) for app_id in ids],
        )

    async def withdraw(self, app_id: str, now: float | None = None) -> None:
        """Out of matching for good; open proposals with them are cancelled (the partner
        goes back to waiting) and unconfirmed plans dropped. A confirmed session stays."""
        now = time.time() if now is None else now
        open_rows = await fetch_all(
            self._db,
            "SELECT * FROM proposals WHERE (a_id = ? OR b_id = ?)"
            " AND status IN ('proposed', 'accepted')",
            (app_id, app_id),
        )
        for p in map(_proposal, open_rows):
            partner = p.b_id if p.a_id == app_id else p.a_id
            await self._db.execute(
                "UPDATE proposals SET status = 'cancelled', decided_at = ? WHERE id = ?",
                (now, p.id),
            )
            await self._db.execute(
                "DELETE FROM schedules WHERE proposal_id = ? AND status = 'planned'", (p.id,)
            )
            await self._db.execute(
                "UPDATE applications SET status = ?, updated_at = ? WHERE id = ? AND status != ?",
                (Status.NEW.value, now, partner, Status.WITHDRAWN.value),
            )
        await self._set_status([app_id], Status.WITHDRAWN, now)
        await self._db.commit()

    async def delete_application(self, app_id: str) -> None:
        """Erase the application and its contact details; proposals and unconfirmed plans
        with it go too (the partner goes back to waiting)."""
        await self.withdraw(app_id)
        await self._db.execute("DELETE FROM applications WHERE id = ?", (app_id,))
        await self._db.commit()

    # -- proposals ----------------------------------------------------------------------

    async def proposed_pairs(self) -> set[tuple[str, str]]:
        """Every pair ever proposed, whatever became of it."""
        rows = await fetch_all(self._db, "SELECT a_id, b_id FROM proposals")
        return {(r[0], r[1]) for r in rows}

    async def add_proposals(
        self, pairs: Sequence[Pair], org_id: int, now: float | None = None
    ) -> list[str]:
        """Store the engine's pairs of `org_id`'s applicants and mark both people proposed.
        Pairs whose people are no longer waiting (changed while the engine ran) or are not
        `org_id`'s are skipped."""
        now = time.time() if now is None else now
        ids = []
        waiting = {a.id for a in await self.waiting(org_id)}
        for pair in pairs:
            if pair.a not in waiting or pair.b not in waiting:
                continue
            a, b = pair_key(pair.a, pair.b)
            proposal_id = new_id("prp")
            cur = await self._db.execute(
                # ON CONFLICT, not SQLite's INSERT OR IGNORE: the same on PostgreSQL
                "INSERT INTO proposals (id, a_id, b_id, status, weight, explanation,"
                " created_at, org_id) VALUES (?, ?, ?, 'proposed', ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    proposal_id,
                    a,
                    b,
                    pair.weight,
                    json.dumps(pair.explanation.to_json()),
                    now,
                    org_id,
                ),
            )
            if cur.rowcount != 1:
                continue  # proposed before: never twice
            await self._set_status([a, b], Status.PROPOSED, now)
            waiting -= {a, b}
            ids.append(proposal_id)
        await self._db.commit()
        return ids

    async def list_proposals(self, scope: OrgScope, status: str | None = None) -> list[ProposalRow]:
        owned, args = scope.where("org_id")
        if status:
            owned += " AND status = ?"
            args = (*args, status)
        rows = await fetch_all(
            self._db,
            f"SELECT * FROM proposals WHERE {owned} ORDER BY created_at DESC, weight DESC",
            args,
        )
        return [_proposal(r) for r in rows]

    async def get_proposal(self, proposal_id: str, scope: OrgScope) -> ProposalRow | None:
        row = await self._owned("proposals", proposal_id, scope)
        return _proposal(row) if row else None

    async def proposals_with(self, app_id: str) -> list[ProposalRow]:
        rows = await fetch_all(
            self._db,
            "SELECT * FROM proposals WHERE a_id = ? OR b_id = ? ORDER BY created_at DESC",
            (app_id, app_id),
        )
        return [_proposal(r) for r in rows]

    async def decide(self, proposal: ProposalRow, accept: bool, now: float | None = None) -> None:
        """Accept (both matched) or reject (both wait again; never proposed to each other
        again)."""
        now = time.time() if now is None else now
        await self._db.execute(
            "UPDATE proposals SET status = ?, decided_at = ? WHERE id = ?",
            ("accepted" if accept else "rejected", now, proposal.id),
        )
        await self._set_status(
            [proposal.a_id, proposal.b_id], Status.MATCHED if accept else Status.NEW, now
        )
        await self._db.commit()

    # -- facilitators -------------------------------------------------------------------

    async def add_facilitator(
        self, spec: FacilitatorIn, org_id: int, now: float | None = None
    ) -> str:
        now = time.time() if now is None else now
        facilitator_id = new_id("fac")
        await self._db.execute(
            "INSERT INTO facilitators (id, first_name, email, language, speaks, time_zone,"
            " availability, active, created_at, org_id) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            (
                facilitator_id,
                spec.first_name,
                spec.email,
                spec.language,
                json.dumps(list(spec.speaks)),
                spec.time_zone,
                _windows_json(spec.availability),
                now,
                org_id,
            ),
        )
        await self._db.commit()
        return facilitator_id

    async def facilitators(
        self, scope: OrgScope, active_only: bool = False
    ) -> list[FacilitatorRow]:
        owned, args = scope.where("org_id")
        sql = f"SELECT * FROM facilitators WHERE {owned}"
        if active_only:
            sql += " AND active = 1"
        rows = await fetch_all(self._db, sql + " ORDER BY first_name, id", args)
        return [_facilitator(r) for r in rows]

    async def get_facilitator(self, facilitator_id: str, scope: OrgScope) -> FacilitatorRow | None:
        row = await self._owned("facilitators", facilitator_id, scope)
        return _facilitator(row) if row else None

    async def set_facilitator_active(self, facilitator_id: str, active: bool) -> None:
        await self._db.execute(
            "UPDATE facilitators SET active = ? WHERE id = ?", (int(active), facilitator_id)
        )
        await self._db.commit()

    # -- schedules ----------------------------------------------------------------------

    async def plan(
        self,
        proposal_id: str,
        facilitator_id: str,
        language: str,
        starts_at: float,
        minutes: int,
        org_id: int,
        now: float | None = None,
    ) -> ScheduleRow:
        """Propose (or re-propose) a time and facilitator for an accepted pair of `org_id`."""
        now = time.time() if now is None else now
        await self._db.execute(
            "INSERT INTO schedules (id, proposal_id, facilitator_id, language, starts_at,"
            " minutes, status, created_at, org_id) VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?)"
            " ON CONFLICT (proposal_id) DO UPDATE SET facilitator_id = excluded.facilitator_id,"
            " language = excluded.language, starts_at = excluded.starts_at,"
            " minutes = excluded.minutes WHERE schedules.status = 'planned'",
            (
                new_id("sch"),
                proposal_id,
                facilitator_id,
                language,
                starts_at,
                minutes,
                now,
                org_id,
            ),
        )
        await self._db.commit()
        found = await self.schedule_for(proposal_id)
        assert found is not None
        return found

    async def schedule_for(self, proposal_id: str) -> ScheduleRow | None:
        row = await fetch_one(
            self._db, "SELECT * FROM schedules WHERE proposal_id = ?", (proposal_id,)
        )
        return _schedule(row) if row else None

    async def get_schedule(self, schedule_id: str, scope: OrgScope) -> ScheduleRow | None:
        row = await self._owned("schedules", schedule_id, scope)
        return _schedule(row) if row else None

    async def schedules(self, scope: OrgScope) -> list[ScheduleRow]:
        owned, args = scope.where("org_id")
        rows = await fetch_all(
            self._db, f"SELECT * FROM schedules WHERE {owned} ORDER BY starts_at", args
        )
        return [_schedule(r) for r in rows]

    async def busy(self, facilitator_id: str, exclude: str | None = None) -> list[ScheduleRow]:
        """The facilitator's planned and confirmed sessions (but `exclude`)."""
        rows = await fetch_all(
            self._db,
            "SELECT * FROM schedules WHERE facilitator_id = ? AND id != ?"
            " AND status != 'cancelled'",
            (facilitator_id, exclude or ""),
        )
        return [_schedule(r) for r in rows]

    async def confirm(
        self,
        schedule: ScheduleRow,
        proposal: ProposalRow,
        session_id: str,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        await self._db.execute(
            "UPDATE schedules SET status = 'confirmed', session_id = ?, confirmed_at = ?"
            " WHERE id = ?",
            (session_id, now, schedule.id),
        )
        await self._db.execute(
            "UPDATE proposals SET status = 'scheduled' WHERE id = ?", (proposal.id,)
        )
        await self._set_status([proposal.a_id, proposal.b_id], Status.SCHEDULED, now)
        await self._db.commit()

    async def revise(
        self, schedule: ScheduleRow, starts_at: float | None, cancel: bool
    ) -> ScheduleRow:
        """A confirmed session moved to `starts_at`, or cancelled: the next SEQUENCE."""
        await self._db.execute(
            "UPDATE schedules SET starts_at = COALESCE(?, starts_at), sequence = sequence + 1,"
            " status = CASE WHEN ? = 1 THEN 'cancelled' ELSE status END"
            " WHERE id = ? AND status = 'confirmed'",
            (starts_at, cancel, schedule.id),
        )
        await self._db.commit()
        found = await self.get_schedule(schedule.id, OrgScope(schedule.org_id))
        assert found is not None
        return found

    async def record_invitations(self, schedule_id: str, sent: list[dict[str, Any]]) -> None:
        await self._db.execute(
            "UPDATE schedules SET invitations = ? WHERE id = ?", (json.dumps(sent), schedule_id)
        )
        await self._db.commit()
