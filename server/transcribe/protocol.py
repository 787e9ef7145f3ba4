"""Parsing staff's transcript calls at the edge: a turn's number in the URL and a
correction's body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from storyroom import fields
from storyroom.errors import NotFound

TURN_TEXT_MAX: Final = 10_000
TURN_MAX: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class CorrectionIn:
    text: str


def parse_correction(payload: Any) -> CorrectionIn:
    given = fields.obj(payload, {"text"}, {"text"}, "correction")
    return CorrectionIn(fields.text(given["text"], "text", TURN_TEXT_MAX))


def parse_turn(value: str) -> int:
    """A turn's number from the URL; anything else is a turn that does not exist."""
    if not value.isascii() or not value.isdigit() or len(value) > len(str(TURN_MAX)):
        raise NotFound("no such turn")
    return int(value)
