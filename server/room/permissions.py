"""Who may do what in a room: the one table the room's state machine asks.

In a facilitated room the facilitator runs the conversation: cues, markers, the
recording's start, pause, resume and stop, the agreed list and private notes. In a
self-guided room there is no facilitator, so the two participants share what runs the
conversation (either of them may cue, mark, start, pause, resume and stop); private
notes and the agreed list stay the facilitator's, so nobody has them there.
"""

from __future__ import annotations

from enum import StrEnum

from storyroom.errors import Forbidden
from storyroom.seats import SeatName, SessionKind


class Action(StrEnum):
    """What a seat asks the room to do that not every seat may."""

    CUE = "cue"
    MARKER = "marker"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    NOTE = "note"


# What the participants of a self-guided room may do in the facilitator's place.
SHARED_IN_SELF_GUIDED: frozenset[Action] = frozenset(
    {Action.CUE, Action.MARKER, Action.START, Action.PAUSE, Action.RESUME, Action.STOP}
)


def allowed(kind: SessionKind, seat: str, action: Action) -> bool:
    """Whether `seat` of a room of `kind` may do `action`."""
    if kind is SessionKind.SELF_GUIDED:
        return seat in kind.seats and action in SHARED_IN_SELF_GUIDED
    return seat == SeatName.FACILITATOR.value


def require(kind: SessionKind, seat: str, action: Action) -> None:
    """`Forbidden` unless `seat` may do `action` in a room of `kind`."""
    if not allowed(kind, seat, action):
        if kind is SessionKind.SELF_GUIDED:
            raise Forbidden(f"nobody can {action.value} in a self-guided conversation")
        raise Forbidden("only the facilitator can do that")
