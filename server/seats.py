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


def join_path(session_id: str, seat: str) -> str:
    """The page a seat's link opens; the token rides in the fragment, never sent to servers."""
    page = "console" if seat == SeatName.FACILITATOR.value else "room"
    return f"/{page}/{session_id}"


def join_url(base_url: str, session_id: str, seat: str, token: str) -> str:
    return f"{base_url}{join_path(session_id, seat)}#token={token}"
