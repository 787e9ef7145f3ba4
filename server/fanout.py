"""Redis, for what is live and disposable across nodes (when `redis_url` is set).

Two things go through it, and nothing else:
- python-socketio's `AsyncRedisManager` (channel `SOCKETIO_CHANNEL`): an emit to the
  staff pages' rooms (`room.staff_feed`) reaches the staff sockets of every node. Seat
  traffic never does: signaling emits to its own seats with `ignore_queue=True`.
- `Fanout`'s own channel (`STAFF_CHANNEL`): typed messages between nodes, a staff
  session's end (`Revocation`: every node forgets it and hangs up its sockets), a wrong
  password (`SigninFailure`: every node counts it, so an account is locked out on all of
  them at once) and a staff page's request for every node's live rooms (`Resync`).

Without Redis the same `Fanout` delivers its messages in this process only, and
Socket.IO keeps its in-process manager: one node, exactly as before.

When Redis is down, rooms and recordings go on (a publish that fails is logged and
dropped); staff pages fall back to polling and resynchronise when their socket comes
back. `probe` says whether Redis answers and both listeners are subscribed, for
/readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

import socketio

from storyroom.config import Settings
from storyroom.readiness import Check, redacted
from storyroom.staff.accounts import Revocation, SigninFailure
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SOCKETIO_CHANNEL: Final = "storyroom:socketio"
STAFF_CHANNEL: Final = "storyroom:staff"
CONNECT_TIMEOUT_S: Final = 2.0
PROBE_TIMEOUT_S: Final = 2.0
PROBE_INTERVAL_S: Final = 2.0
RETRY_MAX_S: Final = 5.0
"""Our own listener's longest wait between reconnects (python-socketio's waits up to 60 s;
`probe` says not ready until it is subscribed again)."""


@dataclass(frozen=True, slots=True)
class Resync:
    """A staff page connected (`sid`, on some node): every node sends it the summaries
    of its live rooms that `org_id` may see (None: every organisation's)."""

    sid: str
    org_id: int | None


Message = Revocation | Resync | SigninFailure
_KINDS: Final[dict[str, type[Revocation] | type[Resync] | type[SigninFailure]]] = {
    "revocation": Revocation,
    "resync": Resync,
    "signin_failure": SigninFailure,
}
_NAMES: Final = {kind: name for name, kind in _KINDS.items()}


def encode(message: Message, origin: str) -> str:
    body = asdict(message)
    return json.dumps({"kind": _NAMES[type(message)], "origin": origin, "body": body})


def decode(raw: bytes | str) -> tuple[str, Message]:
    """(origin, message) of one published message; `ValueError` for anything else."""
    try:
        outer = json.loads(raw)
        kind, origin, body = outer["kind"], outer["origin"], outer["body"]
        return str(origin), _KINDS[kind](**body)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a fan-out message: {exc}") from None


def client_manager(settings: Settings, node: str) -> socketio.AsyncManager:
    """Socket.IO's client manager: Redis when configured, else the in-process one."""
    if not settings.redis_url:
        return socketio.AsyncManager()
    return socketio.AsyncRedisManager(
        settings.redis_url,
        channel=SOCKETIO_CHANNEL,
        redis_options=_redis_options(f"storyroom-{node}-socketio"),
    )


async def reachable(settings: Settings) -> Check:
    """`storyroom check`: Redis answers a PING and takes a PUBLISH (on a channel of its
    own, which no node listens to)."""
    from redis import asyncio as aioredis

    where = redacted(settings.redis_url)
    client = aioredis.Redis.from_url(settings.redis_url, **_redis_options("storyroom-check"))
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S * 2):
            await client.ping()
            await client.publish(f"{STAFF_CHANNEL}:check", "storyroom check")
    except Exception as exc:
        return Check("redis", False, f"{where} does not answer: {exc or type(exc).__name__}")
    finally:
        await client.aclose()
    return Check("redis", True, f"{where} answers and takes a PUBLISH")


def _redis_options(client_name: str) -> dict[str, Any]:
    # no socket_timeout: a subscriber idles between messages and must not time out
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": 10,
        "client_name": client_name,
    }


Handler = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Health:
    """The last `probe`: Redis answered and both listeners are subscribed."""

    ok: bool
    detail: str
    at: float


class Fanout:
    """Owns the Redis side of this node: Socket.IO's manager listener (started here, not
    at the first connection, so a node without sockets still reports it) and the staff
    channel's listener, publisher and probe. Owner: app.py."""

    def __init__(self, settings: Settings, sio: socketio.AsyncServer, node: str) -> None:
        self.settings = settings
        self.sio = sio
        self.node = node
        self.origin = uuid.uuid4().hex
        self.enabled = bool(settings.redis_url)
        self.where = redacted(settings.redis_url) if self.enabled else ""
        self._handlers: list[Handler] = []
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.subscribed = False
        self.published = 0
        self.publish_failures = 0
        self.health = Health(True, "not configured: one process", time.time())

    def on_message(self, handler: Handler) -> None:
        """Call `handler` for each message, from this node or another."""
        self._handlers.append(handler)

    def start(self) -> None:
        if not self.enabled:
            return
        from redis import asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            self.settings.redis_url, **_redis_options(f"storyroom-{self.node}-staff")
        )
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.sio.manager.initialize()  # its listener task starts now
        self._listener = asyncio.create_task(self._listen(), name="fanout-listener")
        self._prober = asyncio.create_task(self._probe_loop(), name="fanout-probe")
        log.info("Redis fan-out on %s", self.where)

    async def close(self) -> None:
        tasks = [self._listener, self._prober, self._socketio_listener()]
        self._listener = self._prober = None
        for task in tasks:
            await cancel_and_wait(task)
        manager = self.sio.manager
        for client in (self._redis, getattr(manager, "redis", None)):
            if client is not None:
                await client.aclose()
        self._redis = None

    def _socketio_listener(self) -> asyncio.Task[None] | None:
        task = getattr(self.sio.manager, "thread", None)
        return task if isinstance(task, asyncio.Task) else None

    async def publish(self, message: Message, here: bool = True) -> None:
        """Deliver `message` here now (unless `here` is false: this node has acted on it
        already), then to every other node (dropped, and logged, when Redis is down: what
        it carries is live and disposable)."""
        if here:
            await self._deliver(message)
        if self._redis is None:
            return
        try:
            await self._redis.publish(STAFF_CHANNEL, encode(message, self.origin))
            self.published += 1
        except Exception as exc:
            # the other nodes miss it: sessions are re-read within SESSION_RECHECK_S
            self.publish_failures += 1
            log.warning("fan-out: %s not published to %s: %s", message, self.where, exc)

    async def _deliver(self, message: Message) -> None:
        for handler in self._handlers:
            try:
                await handler(message)
            except Exception:
                # one handler's failure must not keep the message from the others
                log.exception("fan-out: handling %s failed", message)

    async def _listen(self) -> None:
        wait = 0.5
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(STAFF_CHANNEL)
                self.subscribed, wait = True, 0.5
                async for raw in pubsub.listen():
                    if raw.get("type") == "message":
                        await self._received(raw["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "fan-out: not listening to %s (%s); again in %.1f s", self.where, exc, wait
                )
            finally:
                self.subscribed = False
                await _close_quietly(pubsub)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)

    async def _received(self, raw: bytes | str) -> None:
        try:
            origin, message = decode(raw)
        except ValueError as exc:
            log.warning("fan-out: ignored a message on %s: %s", STAFF_CHANNEL, exc)
            return
        if origin != self.origin:  # our own were delivered when published
            await self._deliver(message)

    async def _probe_loop(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def probe(self) -> Health:
        """Redis answers a PING, and both listeners (Socket.IO's and ours) are alive and
        subscribed (their connections, found by name in CLIENT LIST)."""
        self.health = Health(*await self._probe(), time.time())
        return self.health

    async def _probe(self) -> tuple[bool, str]:
        if not self.enabled:
            return True, "not configured: one process"
        listener = self._socketio_listener()
        if listener is None or listener.done():
            return False, "the Socket.IO fan-out's listener task has stopped"
        if self._listener is None or self._listener.done():
            return False, "the staff channel's listener task has stopped"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await self._redis.ping()
                clients = await self._redis.client_list()
        except Exception as exc:
            return False, f"{self.where} does not answer: {exc or type(exc).__name__}"
        subscribers = {str(c.get("name")) for c in clients if int(c.get("sub", 0) or 0) > 0}
        missing = [
            name
            for name in (f"storyroom-{self.node}-socketio", f"storyroom-{self.node}-staff")
            if name not in subscribers
        ]
        if missing:
            return False, f"{self.where} answers, but not subscribed yet: {', '.join(missing)}"
        return True, f"{self.where} answers; both listeners subscribed"

    def check(self, health: Health) -> Check:
        return Check("redis", health.ok, health.detail)


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception as exc:
        # the connection is gone already; a new pubsub is made for the next attempt
        log.debug("fan-out: closing a pubsub: %s", exc)
