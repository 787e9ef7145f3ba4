"""The one way tests wait: poll a condition until it holds, or fail saying what was awaited.

A fixed sleep is either too short on a busy machine or too long on a quiet one; a poll
with a generous timeout is neither. The timeout only bounds how long a broken run hangs.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(timeout: float, what: str, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what} (last seen: {last!r})")


async def wait_for(
    condition: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = 20.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll `condition` (plain or async) until it returns something truthy; return that.

    Fails with an AssertionError naming `what` (or the condition) and the last value it
    returned after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]  # truthy, so not None
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what or repr(condition), value)
        await asyncio.sleep(interval)


def wait_for_sync(
    condition: Callable[[], T | None],
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "",
) -> T:
    """:func:`wait_for` for code without an event loop (it blocks the calling thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what or repr(condition), value)
        time.sleep(interval)


async def wait_until(moment: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Let time pass until `clock()` reaches `moment` (audio to flow, a token to age).

    A moment, not a condition: its timeout is the moment itself plus ten seconds, so
    only a stalled loop fails it."""
    await wait_for(
        lambda: clock() >= moment,
        timeout=max(0.0, moment - clock()) + 10,
        what=f"the clock to reach {moment:.3f}",
    )
