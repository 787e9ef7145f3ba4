"""A small in-memory rate limit per client address (sliding window), for public forms.

One process, one memory: behind several processes or a proxy that hides client
addresses this is a speed bump, not a wall. The number of tracked addresses is capped,
so a flood of addresses cannot grow it without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from storyroom.errors import UserError


class RateLimited(UserError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many attempts from this address. Please try again later.")
        self.retry_after = max(1, round(retry_after))


class RateLimit:
    """At most `limit` hits per `window` seconds per key."""

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
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str) -> None:
        """Count one attempt; raises `RateLimited` when over the limit (not counted then)."""
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            raise RateLimited(hits[0] + self.window - now)
        hits.append(now)
