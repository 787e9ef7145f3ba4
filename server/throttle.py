"""Wrong credentials slow a client down: after too many failures it is refused for a while.

Two users: staff sign-in (failures per client address and per account) and tokens
(staff bearer tokens, participant copy links, seat tokens at Socket.IO connect), whose
failures are counted per client address. Only failures count, so people who type their
password right are never held up. A refused client gets 429 with Retry-After (HTTP) or a
`rate_limited` connect refusal (Socket.IO).

One process, one memory, like `ratelimit`: the client address is the TCP peer's, so
behind a proxy that hides addresses everyone shares one budget.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from storyroom.ratelimit import RateLimited

log = logging.getLogger(__name__)


class FailureLimit:
    """At most `limit` failures per `window` seconds per key; then `check` refuses."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        cutoff = self.clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def check(self, key: str) -> None:
        """Raise `RateLimited` while `key` has used up its failures."""
        failures = self._recent(key)
        if failures is not None and len(failures) >= self.limit:
            raise RateLimited(failures[0] + self.window - self.clock())

    def fail(self, key: str) -> None:
        failures = self._recent(key)
        if failures is None:
            failures = self._failures[key] = deque()
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        failures.append(self.clock())

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)


def environ_address(environ: dict[str, Any]) -> str:
    """The client address of a Socket.IO connection (engine.io's REMOTE_ADDR is fixed)."""
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote or environ.get("REMOTE_ADDR") or "unknown")


def guard_socketio_connect(sio: socketio.AsyncServer, tokens: FailureLimit) -> None:
    """Count refused seat tokens per address and refuse connects from an address that
    has had too many. Wraps the connect handler signaling registered (call it after)."""
    original: Callable[..., Awaitable[Any]] = sio.handlers["/"]["connect"]

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        address = environ_address(environ)
        try:
            tokens.check(address)
        except RateLimited as exc:
            log.warning("refused connect %s from %s: too many wrong tokens", sid, address)
            raise socketio.exceptions.ConnectionRefusedError(
                "Too many wrong links from this connection. Please wait a few minutes.",
                {"code": "rate_limited", "retry_after": exc.retry_after},
            ) from None
        try:
            return await original(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError as exc:
            data = exc.error_args.get("data") if isinstance(exc.error_args, dict) else None
            if isinstance(data, dict) and data.get("code") == "token_invalid":
                tokens.fail(address)
            raise

    sio.on("connect", connect)
