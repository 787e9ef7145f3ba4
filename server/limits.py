"""How often a client may try: a sliding window of recent moments per key.

Two users: public forms and staff sign-in count every attempt (`RateLimit`); wrong
credentials count only failures (`FailureLimit`: wrong passwords per account, wrong
staff tokens, copy links and seat tokens per client address), so people who get it
right are never held up. A refused client gets 429 with Retry-After (HTTP) or a
`rate_limited` connect refusal (Socket.IO).

One process, one memory: behind several processes or a proxy that hides client
addresses this is a speed bump, not a wall. The number of tracked keys is capped, so a
flood of addresses cannot grow it without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from storyroom.errors import UserError


class RateLimited(UserError, status=429, code="rate_limited"):
    """Too many attempts (or failures) from this client for now; retry after `retry_after`."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many attempts from this address. Please try again later.")
        self.retry_after = max(1, round(retry_after))


class SlidingWindow:
    """At most `limit` counted moments per `window` seconds per key."""

    def __init__(
        self,
        limit: int,
        window: float = 3600.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._moments: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        """The moments of `key` still inside the window; None (and forgotten) when none."""
        moments = self._moments.get(key)
        if moments is None:
            return None
        cutoff = self.clock() - self.window
        while moments and moments[0] <= cutoff:
            moments.popleft()
        if not moments:
            del self._moments[key]
            return None
        return moments

    def check(self, key: str) -> None:
        """Raise `RateLimited` while `key` has used up its budget."""
        moments = self._recent(key)
        if moments is not None and len(moments) >= self.limit:
            raise RateLimited(moments[0] + self.window - self.clock())

    def _count(self, key: str) -> None:
        moments = self._recent(key)
        if moments is None:
            moments = self._moments[key] = deque()
            while len(self._moments) > self.max_keys:
                self._moments.popitem(last=False)
        else:
            self._moments.move_to_end(key)
        moments.append(self.clock())

    def clear(self, key: str) -> None:
        self._moments.pop(key, None)


class RateLimit(SlidingWindow):
    """Every attempt counts (public forms, sign-in attempts per address)."""

    def hit(self, key: str) -> None:
        """Count one attempt; raises `RateLimited` when over the limit (not counted then)."""
        self.check(key)
        self._count(key)


class FailureLimit(SlidingWindow):
    """Only failures count; `check` before trying, `fail` after a wrong credential."""

    def fail(self, key: str) -> None:
        self._count(key)
