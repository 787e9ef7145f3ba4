"""Scheduling an accepted pair: a time from their shared availability, a facilitator from
the roster who is free then and speaks a shared language, and, on confirmation, the
session (first names and bios only) and three invitations with the join links.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from storyroom.archive.copies import ContactSource, Copies
from storyroom.config import Settings
from storyroom.errors import InvalidState, NotFound, PreconditionFailed
from storyroom.matching.applications import ScheduleIn, Status
from storyroom.matching.availability import SLOT_MINUTES, intersect, intervals
from storyroom.matching.invitations import (
    Meeting,
    Notice,
    Person,
    Revision,
    facilitator_message,
    participant_message,
)
from storyroom.matching.outbox import Mailer, deliver
from storyroom.matching.store import (
    ApplicationRow,
    ApplicationStore,
    FacilitatorRow,
    ProposalRow,
    ScheduleRow,
)
from storyroom.orgs import OrgScope
from storyroom.room import protocol
from storyroom.room.sessions import create_session, new_seat_links
from storyroom.seats import SEATS
from storyroom.store import Store

log = logging.getLogger(__name__)

BLOCK_MINUTES = 60  # the calendar block: the conversation, a mic check and a goodbye
TARGET_MINUTES = 40
LEAD = timedelta(hours=24)  # invitations go out at least this long before
HORIZON = timedelta(days=21)  # how far ahead a time is looked for

Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Plan:
    facilitator: FacilitatorRow
    starts_at: datetime
    language: str


def session_language(
    a: ApplicationRow, b: ApplicationRow, facilitator_speaks: Iterable[str]
) -> str | None:
    """A language all three speak: the applicants' own preference first."""
    shared = set(a.speaks) & set(b.speaks) & set(facilitator_speaks)
    for lang in (a.language, b.language, "en", "es"):
        if lang in shared:
            return lang
    return None


def subtract(spans: Sequence[Span], busy: Iterable[Span]) -> list[Span]:
    out = list(spans)
    for b0, b1 in busy:
        cut: list[Span] = []
        for s0, s1 in out:
            if b1 <= s0 or b0 >= s1:
                cut.append((s0, s1))
                continue
            if s0 < b0:
                cut.append((s0, b0))
            if b1 < s1:
                cut.append((b1, s1))
        out = cut
    return out


def _ceil_slot(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    extra = moment.minute % SLOT_MINUTES
    return moment + timedelta(minutes=SLOT_MINUTES - extra) if extra else moment


def plan(
    a: ApplicationRow,
    b: ApplicationRow,
    facilitators: Sequence[FacilitatorRow],
    busy: Mapping[str, Sequence[Span]],
    now: datetime,
    choice: ScheduleIn,
) -> Plan:
    """The earliest time all three are free (or staff's `choice`), with the facilitator
    who has the fewest sessions among those free first."""
    start = _ceil_slot(now + LEAD)
    end = now + HORIZON
    pair = intersect(
        intervals(a.availability, a.time_zone, start, end),
        intervals(b.availability, b.time_zone, start, end),
    )
    block = timedelta(minutes=BLOCK_MINUTES)
    roster = [f for f in facilitators if f.active]
    if choice.facilitator_id is not None:
        roster = [f for f in roster if f.id == choice.facilitator_id]
        if not roster:
            raise NotFound("no such active facilitator")
    options: list[tuple[datetime, int, str, Plan]] = []
    for f in roster:
        language = session_language(a, b, f.speaks)
        if language is None:
            continue
        free = subtract(
            intersect(pair, intervals(f.availability, f.time_zone, start, end)),
            busy.get(f.id, ()),
        )
        at: datetime | None = None
        if choice.starts_at is not None:
            wanted = choice.starts_at
            if any(s0 <= wanted and wanted + block <= s1 for s0, s1 in free):
                at = wanted
        else:
            for s0, s1 in free:
                first = _ceil_slot(s0)
                if first + block <= s1:
                    at = first
                    break
        if at is not None:
            load = len(busy.get(f.id, ()))
            options.append((at, load, f.first_name, Plan(f, at, language)))
    if not options:
        if choice.starts_at is not None:
            raise PreconditionFailed(
                "the two people and a facilitator who speaks their language are not all free then",
                code="no_time",
            )
        if not any(session_language(a, b, f.speaks) for f in roster):
            raise PreconditionFailed(
                "no active facilitator speaks a language this pair shares", code="no_facilitator"
            )
        raise PreconditionFailed(
            f"no time in the next {HORIZON.days} days when both people and a facilitator are free",
            code="no_time",
        )
    options.sort(key=lambda o: (o[0], o[1], o[2]))
    return options[0][3]


async def busy_spans(
    applications: ApplicationStore, facilitators: Iterable[FacilitatorRow], exclude: str | None
) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for f in facilitators:
        out[f.id] = [
            (
                datetime.fromtimestamp(s.starts_at, UTC),
                datetime.fromtimestamp(s.starts_at, UTC) + timedelta(minutes=s.minutes),
            )
            for s in await applications.busy(f.id, exclude)
        ]
    return out


async def plan_proposal(
    applications: ApplicationStore, proposal: ProposalRow, choice: ScheduleIn, now: datetime
) -> ScheduleRow:
    """Propose a time and facilitator for an accepted pair (again, if asked again)."""
    if proposal.status != "accepted":
        raise InvalidState("only an accepted pair can be scheduled")
    people = await applications.applications([proposal.a_id, proposal.b_id])
    a, b = people.get(proposal.a_id), people.get(proposal.b_id)
    if a is None or b is None:
        raise NotFound("one of the two applications no longer exists")
    existing = await applications.schedule_for(proposal.id)
    if existing is not None and existing.status != "planned":
        raise InvalidState("this pair's session is already confirmed")
    roster = await applications.facilitators(OrgScope(proposal.org_id), active_only=True)
    busy = await busy_spans(applications, roster, existing.id if existing else None)
    chosen = plan(a, b, roster, busy, now, choice)
    return await applications.plan(
        proposal.id,
        chosen.facilitator.id,
        chosen.language,
        chosen.starts_at.timestamp(),
        BLOCK_MINUTES,
        proposal.org_id,
        now=now.timestamp(),
    )


@dataclass(frozen=True, slots=True)
class Confirmed:
    session_id: str
    invitations: list[dict[str, Any]]


async def _three(
    applications: ApplicationStore, schedule: ScheduleRow
) -> tuple[ProposalRow, ApplicationRow, ApplicationRow, FacilitatorRow]:
    """The pair and the facilitator of a schedule (all of its organisation)."""
    scope = OrgScope(schedule.org_id)
    proposal = await applications.get_proposal(schedule.proposal_id, scope)
    if proposal is None:
        raise NotFound("the pair no longer exists")
    people = await applications.applications([proposal.a_id, proposal.b_id])
    a, b = people.get(proposal.a_id), people.get(proposal.b_id)
    facilitator = await applications.get_facilitator(schedule.facilitator_id, scope)
    if a is None or b is None or facilitator is None:
        raise NotFound("one of the three people no longer exists")
    return proposal, a, b, facilitator


@dataclass(frozen=True, slots=True)
class Desk:
    """What changing a schedule touches: the rooms' store (sessions and their links), the
    matching wing's store, the settings, the mailer and the copies' contacts."""

    store: Store
    applications: ApplicationStore
    settings: Settings
    mailer: Mailer
    copies: Copies


async def confirm(desk: Desk, schedule: ScheduleRow, now: datetime) -> Confirmed:
    """Create the session and send the three invitations."""
    if schedule.status != "planned":
        raise InvalidState("this session is already confirmed")
    proposal, a, b, facilitator = await _three(desk.applications, schedule)
    if proposal.status != "accepted":
        raise InvalidState("the pair is no longer accepted")
    if a.status != Status.MATCHED or b.status != Status.MATCHED:
        raise InvalidState("both people must still be matched")
    # Through the same boundary as any session request: first names and bios only.
    spec = protocol.parse_session_create(
        {
            "title": f"{a.first_name} & {b.first_name}",
            "language": schedule.language,
            "target_minutes": TARGET_MINUTES,
            "participants": [
                {"name": a.first_name, "bio": a.bio},
                {"name": b.first_name, "bio": b.bio},
            ],
            "facilitator": {"name": facilitator.first_name},
            "starts_at": datetime.fromtimestamp(schedule.starts_at, UTC).isoformat(),
        }
    )
    created = await create_session(desk.store, desk.settings, spec, schedule.org_id)
    await desk.applications.confirm(schedule, proposal, created.id, now=now.timestamp())
    # where each participant's copy will go: their application's email and language
    for seat, person in (("a", a), ("b", b)):
        await desk.copies.set_contact(
            created.id, seat, person.email, person.language, ContactSource.APPLICATION
        )
    log.info("schedule %s confirmed as session %s", schedule.id, created.id)
    sent = await _notify(desk, schedule, created.urls, Revision(), now)
    await desk.applications.record_invitations(schedule.id, sent)
    return Confirmed(created.id, sent)


async def _notify(
    desk: Desk,
    schedule: ScheduleRow,
    urls: Mapping[str, str],
    revision: Revision,
    now: datetime,
) -> list[dict[str, Any]]:
    """Send the three people their notice about `schedule` (each with their own link in
    `urls`); what was sent, for the schedule's record."""
    _, a, b, facilitator = await _three(desk.applications, schedule)
    organisation = await desk.store.organisation(schedule.org_id)
    assert organisation is not None  # organisations are never deleted
    meeting = Meeting(
        schedule_id=schedule.id,
        starts_at=datetime.fromtimestamp(schedule.starts_at, UTC),
        minutes=schedule.minutes,
        target_minutes=TARGET_MINUTES,
        language=schedule.language,
        host=urlsplit(desk.settings.base_url).hostname or "storyroom.invalid",
        signature=organisation.signature,
    )
    pa = Person(a.first_name, a.email, a.language, a.time_zone, a.bio)
    pb = Person(b.first_name, b.email, b.language, b.time_zone, b.bio)
    pf = Person(
        facilitator.first_name, facilitator.email, facilitator.language, facilitator.time_zone
    )
    sender = desk.settings.mail_from
    messages = [
        (
            "a",
            participant_message(
                sender, meeting, "a", pa, pb, pf.first_name, urls.get("a", ""), now, revision
            ),
        ),
        (
            "b",
            participant_message(
                sender, meeting, "b", pb, pa, pf.first_name, urls.get("b", ""), now, revision
            ),
        ),
        (
            "facilitator",
            facilitator_message(
                sender, meeting, pf, pa, pb, urls.get("facilitator", ""), now, revision
            ),
        ),
    ]
    sent = []
    for role, message in messages:
        sent.append(
            {
                "role": role,
                "notice": revision.notice.value,
                "sequence": revision.sequence,
                **await deliver(desk.mailer, desk.settings, message, schedule.org_id),
            }
        )
    return sent


async def _confirmed_not_recorded(store: Store, schedule: ScheduleRow) -> str:
    """The session of a confirmed schedule whose conversation has not been recorded."""
    if schedule.status != "confirmed" or schedule.session_id is None:
        raise InvalidState("only a confirmed session can be moved or cancelled")
    if await store.recordings_for(schedule.session_id):
        raise InvalidState("this conversation has already been recorded")
    return schedule.session_id


async def reschedule(
    desk: Desk, schedule: ScheduleRow, starts_at: datetime, now: datetime
) -> ScheduleRow:
    """Move a confirmed session to `starts_at` (when the pair and its facilitator are all
    free then): new links for the three seats, expiring after the new start, and updated
    invitations whose calendar entries replace the earlier ones."""
    session_id = await _confirmed_not_recorded(desk.store, schedule)
    _, a, b, facilitator = await _three(desk.applications, schedule)
    busy = await busy_spans(desk.applications, [facilitator], schedule.id)
    plan(a, b, [facilitator], busy, now, ScheduleIn(facilitator.id, starts_at))
    moved = await desk.applications.revise(schedule, starts_at.timestamp(), cancel=False)
    links = await new_seat_links(
        desk.store, desk.settings, OrgScope(schedule.org_id), session_id, SEATS, moved.starts_at
    )
    urls = {seat: link.url for seat, link in links.items()}
    revision = Revision(Notice.UPDATE, moved.sequence)
    sent = await _notify(desk, moved, urls, revision, now)
    await desk.applications.record_invitations(moved.id, [*schedule.invitations, *sent])
    log.info("schedule %s moved (sequence %d)", moved.id, moved.sequence)
    found = await desk.applications.get_schedule(moved.id, OrgScope(schedule.org_id))
    assert found is not None
    return found


async def cancel(desk: Desk, schedule: ScheduleRow, now: datetime) -> ScheduleRow:
    """Cancel a confirmed session: its links stop working now, and each person is sent a
    cancellation whose calendar entry removes the earlier one."""
    session_id = await _confirmed_not_recorded(desk.store, schedule)
    cancelled = await desk.applications.revise(schedule, None, cancel=True)
    await desk.store.expire_seat_tokens(session_id, now.timestamp())
    revision = Revision(Notice.CANCELLATION, cancelled.sequence)
    sent = await _notify(desk, cancelled, {}, revision, now)
    await desk.applications.record_invitations(cancelled.id, [*schedule.invitations, *sent])
    log.info("schedule %s cancelled (sequence %d)", cancelled.id, cancelled.sequence)
    found = await desk.applications.get_schedule(cancelled.id, OrgScope(schedule.org_id))
    assert found is not None
    return found
