"""Seats and their join tokens.

A token is 192 random bits, shown once (in the join link) and stored only as its
SHA-256. Tokens are high-entropy, so a fast hash is enough: nothing to brute-force.
A token opens exactly one seat of one session until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

TOKEN_BYTES = 24


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


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_id(prefix: str) -> str:
    """Server-generated ids: the only things file paths are built from."""
    return f"{prefix}_{secrets.token_hex(8)}"


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def join_path(session_id: str, seat: str) -> str:
    """The page a seat's link opens; the token rides in the fragment, never sent to servers."""
    page = "console" if seat == SeatName.FACILITATOR.value else "room"
    return f"/{page}/{session_id}"


def join_url(base_url: str, session_id: str, seat: str, token: str) -> str:
    return f"{base_url}{join_path(session_id, seat)}#token={token}"
