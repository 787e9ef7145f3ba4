"""Weekly availability: windows in a person's own time zone, compared in UTC.

A window is a day of the week (0 = Monday) and a start and end time of day in 15-minute
steps, local to the person's IANA time zone. Every current time zone's offset is a
multiple of 15 minutes, so in UTC a window still starts and ends on 15-minute slots:
matching compares bit masks of a reference week's 672 slots, and scheduling turns
windows into concrete UTC intervals over the coming days.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo

SLOT_MINUTES = 15
WEEK_MINUTES = 7 * 24 * 60
WEEK_SLOTS = WEEK_MINUTES // SLOT_MINUTES
_WEEK_MASK = (1 << WEEK_SLOTS) - 1
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A weekly window in local time: `start` and `end` are minutes after midnight."""

    day: int
    start: int
    end: int

    @property
    def minutes(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, object]:
        return {"day": self.day, "start": clock(self.start), "end": clock(self.end)}


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def week_start(moment: datetime) -> datetime:
    """Monday 00:00 UTC of the week holding `moment`."""
    moment = moment.astimezone(UTC)
    monday = moment.date() - timedelta(days=moment.weekday())
    return datetime.combine(monday, time(0), tzinfo=UTC)


def _utc(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """A local wall time (24:00 is the next midnight) in UTC."""
    naive = datetime.combine(day, time(0)) + timedelta(minutes=minutes)
    return naive.replace(tzinfo=tz).astimezone(UTC)


@lru_cache(maxsize=65_536)  # bounded: a new reference week each week
def _window_slots(window: Window, tz_name: str, reference: datetime) -> tuple[int, int]:
    """(first slot, slot count) of `window` in the week starting at `reference` (UTC)."""
    tz = zone(tz_name)
    day = reference.date() + timedelta(days=window.day)
    start = _utc(day, window.start, tz)
    end = _utc(day, window.end, tz)
    first = int((start - reference).total_seconds() // 60) // SLOT_MINUTES
    count = max(0, int((end - start).total_seconds() // 60) // SLOT_MINUTES)
    return first % WEEK_SLOTS, min(count, WEEK_SLOTS)


def weekly_mask(windows: Iterable[Window], tz_name: str, reference: datetime) -> int:
    """The 672-bit mask of the reference week's UTC slots the windows cover (weeks wrap)."""
    mask = 0
    for window in windows:
        first, count = _window_slots(window, tz_name, reference)
        bits = ((1 << count) - 1) << first
        mask |= (bits & _WEEK_MASK) | (bits >> WEEK_SLOTS)
    return mask


def runs(mask: int, minutes: int) -> int:
    """Bits of the slots where a run of at least `minutes` of set slots starts (wrapping).

    runs(a & b) == runs(a) & runs(b), so two people share such a run exactly when
    `runs(a, m) & runs(b, m)` is not zero.
    """
    need = max(1, -(-minutes // SLOT_MINUTES))
    extended = mask | (mask << WEEK_SLOTS)
    out = extended
    for shift in range(1, need):
        out &= extended >> shift
    return out & _WEEK_MASK


def first_run(mask: int, minutes: int) -> tuple[int, int] | None:
    """(start slot, slots) of the longest run that starts earliest among runs of at least
    `minutes`; None when there is none."""
    starts = runs(mask, minutes)
    if not starts:
        return None
    best: tuple[int, int] | None = None
    extended = mask | (mask << WEEK_SLOTS)
    while starts:
        low = (starts & -starts).bit_length() - 1
        length = 0
        while length < WEEK_SLOTS and extended >> (low + length) & 1:
            length += 1
        if best is None or length > best[1]:
            best = (low, length)
        # skip the rest of this run
        starts &= ~(((1 << length) - 1) << low)
    return best


def intervals(
    windows: Sequence[Window], tz_name: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Concrete UTC intervals of the windows between `start` and `end` (sorted, merged)."""
    tz = zone(tz_name)
    first_day = start.astimezone(tz).date() - timedelta(days=1)
    last_day = end.astimezone(tz).date() + timedelta(days=1)
    out: list[tuple[datetime, datetime]] = []
    day = first_day
    while day <= last_day:
        for window in windows:
            if window.day == day.weekday():
                a, b = _utc(day, window.start, tz), _utc(day, window.end, tz)
                a, b = max(a, start), min(b, end)
                if b > a:
                    out.append((a, b))
        day += timedelta(days=1)
    return merge(out)


def merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def intersect(
    left: Sequence[tuple[datetime, datetime]], right: Sequence[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        a, b = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if b > a:
            out.append((a, b))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return out


def in_zone(moment: datetime, tz_name: str) -> datetime:
    """`moment` in the person's own time zone."""
    return moment.astimezone(zone(tz_name))
