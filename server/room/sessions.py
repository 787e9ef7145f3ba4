"""Creating sessions and describing them to staff."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from storyroom.config import Settings
from storyroom.errors import InvalidInput, NotFound
from storyroom.ids import hash_token, new_id, new_token
from storyroom.orgs import OrgScope
from storyroom.room.protocol import SessionIn
from storyroom.room.questions import session_questions
from storyroom.room.rooms import Rooms
from storyroom.seats import SEATS, SeatName, SessionKind, join_url
from storyroom.store import SessionRow, Store


@dataclass(frozen=True, slots=True)
class CreatedSession:
    id: str
    tokens: dict[str, str]
    urls: dict[str, str]
    kind: SessionKind = SessionKind.FACILITATED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "seats": {s: {"token": self.tokens[s], "url": self.urls[s]} for s in self.kind.seats},
        }


def seat_link_expiry(settings: Settings, now: float, starts_at: float | None) -> float:
    """When a seat link stops working: `token_grace_hours` after the scheduled start, so
    a link always outlives its conversation; without a schedule, `token_ttl_days` after
    `now` (its creation or reissue)."""
    if starts_at is not None:
        return starts_at + settings.token_grace_hours * 3600
    return now + settings.token_ttl_days * 86400


@dataclass(frozen=True, slots=True)
class SeatLink:
    """A seat's new join link (its token is shown once, here, and stored hashed)."""

    seat: str
    token: str
    url: str
    expires_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "seat": self.seat,
            "token": self.token,
            "url": self.url,
            "expires_at": self.expires_at,
        }


def parse_seat(value: str) -> SeatName:
    """A seat named in a path: `a`, `b` or `facilitator` (whether the session has that
    seat is `new_seat_links`' question)."""
    try:
        return SeatName(value)
    except ValueError:
        raise InvalidInput(
            "seat must be one of " + ", ".join(SEATS), code="invalid_value"
        ) from None


async def new_seat_links(
    store: Store,
    settings: Settings,
    scope: OrgScope,
    session_id: str,
    seats: tuple[str, ...],
    starts_at: float | None = None,
) -> dict[str, SeatLink]:
    """New links for `seats` of a session (reissued, or for a new start): the old tokens
    stop opening the seats at once; expiry follows `starts_at`, else the session's own
    scheduled start (and never comes sooner than the grace from now), else today's rule.
    `NotFound` for a session of an organisation `scope` does not see."""
    session = await store.get_session(session_id, scope)
    if session is None:
        raise NotFound("no such session")
    now = time.time()
    start = starts_at if starts_at is not None else session.starts_at
    expires = seat_link_expiry(settings, now, start)
    if start is not None:
        # a link reissued after the start (someone joins late) still gets the grace
        expires = max(expires, now + settings.token_grace_hours * 3600)
    absent = [seat for seat in seats if seat not in session.kind.seats]
    if absent:
        raise InvalidInput(
            f"a {session.kind.value} session has no seat {absent[0]!r}", code="invalid_value"
        )
    links = {}
    for seat in seats:
        token = new_token()
        url = join_url(settings.base_url, session_id, seat, token, session.kind)
        links[seat] = SeatLink(seat, token, url, expires)
    await store.replace_seat_tokens(
        session_id,
        [(seat, hash_token(link.token), link.expires_at) for seat, link in links.items()],
        starts_at=starts_at,
    )
    return links


async def create_session(
    store: Store, settings: Settings, spec: SessionIn, org_id: int
) -> CreatedSession:
    """A new session of `org_id` and its seat links, three or (self-guided) two, expiring
    after its start if it is scheduled."""
    now = time.time()
    expires = seat_link_expiry(settings, now, spec.starts_at)
    session = SessionRow(
        id=new_id("ses"),
        title=spec.title,
        language=spec.language,
        target_minutes=spec.target_minutes,
        questions=session_questions(spec.language, spec.questions),
        agreed=[],
        created_at=now,
        starts_at=spec.starts_at,
        kind=spec.kind,
        org_id=org_id,
    )
    people = {"a": spec.participants[0], "b": spec.participants[1]}
    if spec.facilitator is not None:
        people["facilitator"] = spec.facilitator
    seats = spec.kind.seats
    tokens = {seat: new_token() for seat in seats}
    await store.create_session(
        session,
        [
            (seat, people[seat].name, people[seat].bio, hash_token(tokens[seat]), expires)
            for seat in seats
        ],
    )
    urls = {
        seat: join_url(settings.base_url, session.id, seat, tokens[seat], spec.kind)
        for seat in seats
    }
    return CreatedSession(session.id, tokens, urls, spec.kind)


async def describe_session(
    store: Store, rooms: Rooms, scope: OrgScope, session_id: str
) -> dict[str, Any]:
    """Staff view: seats (first name, bio, connected, consent), recording state, cues;
    `NotFound` for a session of an organisation `scope` does not see."""
    session = await store.get_session(session_id, scope)
    if session is None:
        raise NotFound("no such session")
    room = rooms.live(session_id)
    seats = await store.seats(session_id)
    consent = await store.current_consent(session_id)
    recordings = await store.recordings_for(session_id)
    latest = recordings[-1] if recordings else None
    return {
        "id": session.id,
        "kind": session.kind.value,
        "title": session.title,
        "language": session.language,
        "target_minutes": session.target_minutes,
        "created_at": session.created_at,
        "starts_at": session.starts_at,
        "seats": {
            s.seat: {
                "name": s.name,
                "bio": s.bio,
                "connected": bool(room and room.connected(s.seat)),
                "consent": consent[s.seat].to_json() if s.seat in consent else None,
                "token_expires_at": s.token_expires_at,
            }
            for s in seats
        },
        "questions": session.questions,
        "agreed": session.agreed,
        "consent_history": await store.consent_history(session_id),
        "recording": {
            "state": room.state.value if room else (latest.status if latest else "idle"),
            "id": latest.id if latest else None,
            "take": latest.take if latest else 0,
            "status": latest.public_status if latest else "idle",
            "percent": latest.finalize_percent if latest and latest.finalize_status else None,
            "status_reason": latest.status_reason if latest else None,
        },
        "cues": [
            {"seq": c.id, "question_id": c.question_id, "at": c.at, "rec_time": c.rec_time}
            for c in await store.cues(session_id)
        ],
        "markers": [
            {"seq": m.id, "seat": m.seat, "label": m.label, "at": m.at, "rec_time": m.rec_time}
            for m in await store.markers(session_id)
        ],
    }
