"""Seats and their join links.

A seat's token (`ids.new_token`) opens exactly one seat of one session until it expires;
it rides in the join link's fragment and is stored only as its hash.
"""

from __future__ import annotations

from enum import StrEnum


class SeatName(StrEnum):
    A = "a"
    B = "b"
    FACILITATOR = "facilitator"

    @property
    def is_participant(self) -> bool:
        return self is not SeatName.FACILITATOR


# The one seat-name definition: every module that lists seats reads these.
SEATS: tuple[str, ...] = tuple(seat.value for seat in SeatName)
PARTICIPANT_SEATS: tuple[str, ...] = tuple(seat.value for seat in SeatName if seat.is_participant)


class SessionKind(StrEnum):
    """How a conversation is run (`sessions.kind`).

    `facilitated`: two participants and a facilitator who cues and keeps time.
    `self_guided`: two people who know each other, no facilitator; either of them cues,
    starts, pauses and stops (room/permissions.py)."""

    FACILITATED = "facilitated"
    SELF_GUIDED = "self_guided"

    @property
    def seats(self) -> tuple[str, ...]:
        """The seats a session of this kind has, in the order every list shows them."""
        return SEATS if self is SessionKind.FACILITATED else PARTICIPANT_SEATS


def join_path(session_id: str, seat: str, kind: SessionKind = SessionKind.FACILITATED) -> str:
    """The page a seat's link opens; the token rides in the fragment, never sent to servers.
    A self-guided seat opens the room page at `/together/`, which shows its guided
    introduction before joining."""
    if seat == SeatName.FACILITATOR.value:
        page = "console"
    elif kind is SessionKind.SELF_GUIDED:
        page = "together"
    else:
        page = "room"
    return f"/{page}/{session_id}"


def join_url(
    base_url: str,
    session_id: str,
    seat: str,
    token: str,
    kind: SessionKind = SessionKind.FACILITATED,
) -> str:
    return f"{base_url}{join_path(session_id, seat, kind)}#token={token}"
