"""Socket.IO signaling: seat tokens at connect, room events with acks, snapshots out.

Signaling knows rooms and the media plane's interface, nothing about Opus. Every
event is parsed in `protocol`, errors are translated in one place (`_answer`).

A room lives on one node, so everything sent to its seats goes to sockets of this
process: every emit and disconnect here is local (`LOCAL`), never through the client
manager's queue (Redis, when configured, carries only the staff pages' traffic).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import socketio

from storyroom.cluster.leases import Leases, NodeUnavailable, WrongNode, parse_pin
from storyroom.config import Settings
from storyroom.errors import AuthError, Busy, ProtocolError, StoryroomError, UserError
from storyroom.ids import hash_token
from storyroom.limits import FailureLimit, RateLimited
from storyroom.orgs import EVERY_ORGANISATION
from storyroom.room import protocol
from storyroom.room.rooms import CloseReason, Room, Rooms
from storyroom.seats import SeatName
from storyroom.status import LIVE_STATES
from storyroom.store import SeatRow, Store
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LEVELS_INTERVAL = 0.25
LOCAL: dict[str, Any] = {"ignore_queue": True}
"""Keyword arguments of a seat's emit or disconnect: to this process's socket only."""
CLOSE_WAIT_S = 1.0  # at shutdown, for a connection to take its close packet


class UnknownToken(AuthError, code="token_invalid"):
    """A seat token that opens no seat: a wrong or guessed link, counted against the
    client's address (`bad_tokens`)."""


@dataclass(frozen=True, slots=True)
class Conn:
    """One Socket.IO connection seated in a room."""

    sid: str
    session_id: str
    seat: str


class MediaPlane(Protocol):
    """What signaling needs from the media layer (`media.plane.MediaPlane`)."""

    async def offer(
        self, room: Room, seat: str, conn_id: str, offer: protocol.OfferIn
    ) -> dict[str, Any]: ...

    async def seat_disconnected(self, room: Room, seat: str, conn_id: str) -> None: ...

    async def seat_replaced(self, room: Room, seat: str, old_conn_id: str) -> None: ...

    def levels(self, room_id: str) -> dict[str, Any] | None: ...

    def ice_servers(self, session_id: str, seat: str) -> list[dict[str, Any]]: ...


Handler = Callable[[Conn, Room, Any], Awaitable[dict[str, Any] | None]]


class Signaling:
    """Owns the Socket.IO handlers and the welcome task."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: Settings,
        store: Store,
        rooms: Rooms,
        media: MediaPlane,
        bad_tokens: FailureLimit,
        leases: Leases,
    ) -> None:
        self.sio = sio
        self.settings = settings
        self.store = store
        self.rooms = rooms
        self.media = media
        self.bad_tokens = bad_tokens
        self.leases = leases
        """Who runs which room: a connection is seated only where its room's lease is."""
        self.conns: dict[str, Conn] = {}
        self._releases: dict[str, asyncio.Task[None]] = {}
        """Rooms left empty, let go after `reconnect_grace_s` unless someone comes back."""
        self.closing = False
        """Set when the server shuts down: room events are refused from then on."""
        self._welcome: asyncio.Queue[str] = asyncio.Queue()
        self._welcome_task: asyncio.Task[None] | None = None
        self._levels_task: asyncio.Task[None] | None = None
        self._events: dict[str, Handler] = {
            "consent": self._consent,
            "questions:choose": self._choose,
            "question:cue": self._cue,
            "recording:start": self._start,
            "recording:pause": self._pause,
            "recording:resume": self._resume,
            "recording:stop": self._stop,
            "marker": self._marker,
            "note": self._note,
            "rtc:offer": self._rtc_offer,
        }
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        for name in self._events:
            sio.on(name, self._dispatcher(name))
        sio.on("*", self._on_unknown)
        rooms.on_change(self.broadcast)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._welcome_task = asyncio.create_task(self._welcome_loop(), name="signaling-welcome")
        self._levels_task = asyncio.create_task(self._levels_loop(), name="signaling-levels")

    async def close(self) -> None:
        tasks = [self._welcome_task, self._levels_task, *self._releases.values()]
        self._welcome_task = self._levels_task = None
        self._releases = {}
        for task in tasks:
            await cancel_and_wait(task)

    def refuse_events(self) -> None:
        """Server shutdown: every room event from now on gets `server_restarting`."""
        self.closing = True

    async def disconnect_all(self) -> None:
        """Server shutdown: hang up on every connection; the pages reconnect by
        themselves once the server is up again.

        Each engine.io socket is sent its close packet, then its TCP connection is
        closed (asyncio writes what is buffered first): by now aiohttp reads nothing
        more from its connections, so a websocket's closing handshake could not finish,
        and the server would wait for each client to give up."""
        self.refuse_events()
        requests = [environ.get("aiohttp.request") for environ in list(self.sio.environ.values())]
        # one task each: a socket whose client has gone never takes its close packet
        closing = [
            asyncio.create_task(self.sio.eio.disconnect(sid), name="close-connection")
            for sid in list(self.sio.eio.sockets)
        ]
        if closing:
            _, late = await asyncio.wait(closing, timeout=CLOSE_WAIT_S)
            for task in late:
                await cancel_and_wait(task)
        for request in requests:
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.close()

    async def close_seat(self, session_id: str, seat: str) -> int:
        """A seat's link was reissued: whoever is in the room on the old one is told and
        disconnected now (the old token would not seat them again); how many were."""
        gone = [
            sid
            for sid, conn in list(self.conns.items())
            if conn.session_id == session_id and conn.seat == seat
        ]
        for sid in gone:
            await self._close(
                sid, CloseReason.LINK_REISSUED, "This link was replaced by a new one.", seat
            )
        return len(gone)

    async def _close(self, sid: str, reason: CloseReason, message: str, seat: str) -> None:
        """Tell connection `sid` why it is closed (`closed`), then disconnect it."""
        try:
            await self.sio.emit(
                "closed", {"reason": reason.value, "message": message}, to=sid, **LOCAL
            )
            await self.sio.disconnect(sid, **LOCAL)
        except Exception:
            # the window may already be gone; closing it is all that was wanted
            log.warning("seat %s: could not close %s", seat, sid, exc_info=True)

    async def _levels_loop(self) -> None:
        """About four times a second, each live room's levels and link stats, to its facilitator."""
        while True:
            await asyncio.sleep(LEVELS_INTERVAL)
            for room in self.rooms.all():
                levels = self.media.levels(room.id)
                if levels is None:
                    continue
                # the facilitator's console shows them; participants' pages do not
                sid = room.presence[SeatName.FACILITATOR.value].sid
                if sid is None:
                    continue
                try:
                    await self.sio.emit("media:levels", levels, to=sid, **LOCAL)
                except Exception:
                    # levels are advisory and sent again in a quarter second: a console
                    # that cannot take them now must not end the loop for every room
                    log.warning("room %s: levels not sent to %s", room.id, sid, exc_info=True)

    async def capture_progress(self, session_id: str, progress: dict[str, Any]) -> None:
        """How much of each seat's browser capture has arrived, to the session's
        facilitator (`capture:progress`), after every chunk, run opened and run closed."""
        room = self.rooms.live(session_id)
        sid = room.presence[SeatName.FACILITATOR.value].sid if room is not None else None
        if sid is not None:
            await self.sio.emit("capture:progress", progress, to=sid, **LOCAL)

    async def broadcast(self, room: Room) -> None:
        """Send the room snapshot to every seat connected to it (after each change)."""
        snapshot = room.snapshot()
        snapshot["ice_transport_policy"] = self.settings.ice_transport_policy
        for seat, presence in room.presence.items():
            if presence.sid is not None:
                # each seat's own TURN credentials, minted afresh for each snapshot
                ice_servers = self.media.ice_servers(room.id, seat)
                await self.sio.emit(
                    "room",
                    {
                        **snapshot,
                        **room.private_view(seat),
                        "ice_servers": ice_servers,
                        "you": seat,
                    },
                    to=presence.sid,
                    **LOCAL,
                )

    # -- connect / disconnect --------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Seat a connection whose token opens a seat; refuse it otherwise. Wrong tokens
        are counted per client address, and an address with too many is refused."""
        address = environ_address(environ)
        try:
            self.bad_tokens.check(address)
            parse_pin(environ)  # its form only: the lease decides where the room runs
            seat_row = await self._seat_for(sid, auth)
            async with self.leases.guard(seat_row.session_id):
                await self.leases.claim(seat_row.session_id)
                self.conns[sid] = Conn(sid, seat_row.session_id, seat_row.seat)
                await cancel_and_wait(self._releases.pop(seat_row.session_id, None))
        except RateLimited as exc:
            log.warning("refused connect %s from %s: too many wrong tokens", sid, address)
            raise socketio.exceptions.ConnectionRefusedError(
                "Too many wrong links from this connection. Please wait a few minutes.",
                {"code": exc.code, "retry_after": exc.retry_after},
            ) from None
        except AuthError as exc:
            if isinstance(exc, UnknownToken):
                self.bad_tokens.fail(address)
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        except (WrongNode, NodeUnavailable) as exc:
            # the client reconnects, pinned to the node named (`node`), or a bit later
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {k: v for k, v in exc.to_json().items() if k != "message"}
            ) from None
        # The snapshot goes out after the CONNECT packet, from the welcome task.
        self._welcome.put_nowait(sid)

    async def _seat_for(self, sid: str, auth: Any) -> SeatRow:
        """The seat a connect's token opens, else `AuthError` saying why not."""
        token = protocol.parse_token(auth)
        if token is None:
            raise AuthError(
                "This link is missing its key. Please open the full link you were sent.",
                code="token_missing",
            )
        seat_row = await self.store.seat_by_token_hash(hash_token(token))
        if seat_row is None:
            log.info("refused connect %s: unknown token", sid)
            raise UnknownToken(
                "This link is not valid. Please check you opened the full link you were sent."
            )
        if seat_row.token_expires_at < time.time():
            log.info(
                "refused connect %s: expired token for %s/%s",
                sid,
                seat_row.session_id,
                seat_row.seat,
            )
            raise AuthError(
                "This link has expired. Please ask the organisers for a new one.",
                code="token_expired",
            )
        # the seat token chose the session; its organisation is the session's own
        session = await self.store.get_session(seat_row.session_id, EVERY_ORGANISATION)
        if session is None or seat_row.seat not in session.kind.seats:
            # a seat the session's kind does not have (a facilitator's row left in a
            # self-guided session) never opens its room
            log.warning(
                "refused connect %s: %s/%s is not a seat of that room",
                sid,
                seat_row.session_id,
                seat_row.seat,
            )
            raise AuthError(
                "This link does not open a seat in this conversation.", code="seat_not_in_room"
            )
        return seat_row

    async def _welcome_loop(self) -> None:
        while True:
            sid = await self._welcome.get()
            try:
                await self._seat(sid)
            except Exception:
                log.exception("could not seat connection %s", sid)

    async def _seat(self, sid: str) -> None:
        deadline = time.monotonic() + 5
        while not self.sio.manager.is_connected(sid, "/"):
            if sid not in self.conns or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)
        conn = self.conns.get(sid)
        if conn is None:
            return
        room = await self.rooms.get(conn.session_id)
        old = await room.join(conn.seat, sid)
        if old is not None and old != sid:
            log.info("seat %s/%s: connection %s replaced by %s", room.id, conn.seat, old, sid)
            self.conns.pop(old, None)
            await self.media.seat_replaced(room, conn.seat, old)
            await self._close(
                old, CloseReason.REPLACED, "You joined from another window.", conn.seat
            )

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        room = self.rooms.live(conn.session_id)
        if room is None:
            return
        if await room.leave(conn.seat, sid):
            await self.media.seat_disconnected(room, conn.seat, sid)
        if (
            self.leases.releases_rooms
            and conn.session_id not in self._releases
            and not any(c.session_id == conn.session_id for c in self.conns.values())
        ):
            self._releases[conn.session_id] = asyncio.create_task(
                self._release_later(conn.session_id), name="release-room"
            )

    async def _release_later(self, session_id: str) -> None:
        """In a cluster, a room nobody is in and no take runs in is closed here and its
        lease freed, once nobody came back within `reconnect_grace_s` (a page reload
        keeps its room where it is): the next seat may land on another node. A connect
        in between cancels this (owner: `_releases`)."""
        try:
            await asyncio.sleep(self.settings.reconnect_grace_s)
            async with self.leases.guard(session_id):
                if any(c.session_id == session_id for c in self.conns.values()):
                    return
                room = self.rooms.live(session_id)
                if room is not None and room.state in LIVE_STATES:
                    return
                await self.rooms.forget(session_id, CloseReason.EMPTY)
                await self.leases.release(session_id)
        except Exception:
            # the lease stays this node's: its next seat is seated here, the room loaded
            # afresh; if the node dies, the reaper frees it
            log.warning("room %s: lease not released", session_id, exc_info=True)
        finally:
            if self._releases.get(session_id) is asyncio.current_task():
                del self._releases[session_id]

    async def let_go(self, session_ids: list[str]) -> None:
        """This node may no longer run these rooms (the cluster declared it dead): their
        connections are dropped, and the pages reconnect through the proxy to the room's
        node."""
        for session_id in session_ids:
            async with self.leases.guard(session_id):
                room = self.rooms.live(session_id)
                gone = [c for c in list(self.conns.values()) if c.session_id == session_id]
                for conn in gone:
                    self.conns.pop(conn.sid, None)
                    if room is not None:
                        await self.media.seat_disconnected(room, conn.seat, conn.sid)
                    await self.sio.disconnect(conn.sid)
                await self.rooms.forget(session_id, CloseReason.NODE_LOST)

    # -- events ------------------------------------------------------------------------

    def _dispatcher(self, name: str) -> Callable[[str, Any], Awaitable[dict[str, Any]]]:
        handler = self._events[name]

        async def dispatch(sid: str, payload: Any = None) -> dict[str, Any]:
            return await self._answer(sid, name, handler, payload)

        return dispatch

    async def _answer(self, sid: str, name: str, handler: Handler, payload: Any) -> dict[str, Any]:
        """The one place errors become acks (UserError) or closed connections."""
        try:
            conn = self.conns.get(sid)
            if conn is None:
                raise AuthError("this connection is not seated in a room")
            if not self.leases.holds(conn.session_id):
                # this node lost the room (declared dead by the cluster): nothing more
                # is done in it here; the page reconnects to where the room is now
                raise AuthError("This conversation moved to another server.", code="wrong_node")
            if self.closing:
                raise Busy(
                    "The server is restarting. Please wait a moment.", code="server_restarting"
                )
            protocol.check_size(payload)
            room = await self.rooms.get(conn.session_id)
            if room.presence[conn.seat].sid != sid and room.presence[conn.seat].sid is not None:
                raise UserError(
                    "this window was replaced by a newer one", code="replaced", status=409
                )
            result = await handler(conn, room, payload)
            return {"ok": True, **(result or {})}
        except UserError as exc:
            log.info("%s from %s refused: %s (%s)", name, sid, exc.code, exc.message)
            return {"ok": False, "error": exc.to_json()}
        except (ProtocolError, AuthError) as exc:
            log.warning("%s from %s: closing connection: %s", name, sid, exc.message)
            await self.sio.disconnect(sid, **LOCAL)
            return {"ok": False, "error": exc.to_json()}
        except StoryroomError as exc:
            return {"ok": False, "error": exc.to_json()}
        except Exception:
            log.exception("%s from %s failed", name, sid)
            return {
                "ok": False,
                "error": {"code": "internal", "message": "Something went wrong on our side."},
            }

    async def _on_unknown(self, event: str, sid: str, *args: Any) -> None:
        log.info("ignored unknown event %r from %s", event[:64], sid)

    async def _consent(self, conn: Conn, room: Room, payload: Any) -> None:
        await room.set_consent(conn.seat, protocol.parse_consent(payload))

    async def _choose(self, conn: Conn, room: Room, payload: Any) -> None:
        await room.choose(conn.seat, protocol.parse_choose(payload))

    async def _cue(self, conn: Conn, room: Room, payload: Any) -> dict[str, Any]:
        cue = await room.cue(conn.seat, protocol.parse_cue(payload).id)
        return {"cue": {"seq": cue.id, "question_id": cue.question_id, "rec_time": cue.rec_time}}

    async def _start(self, conn: Conn, room: Room, payload: Any) -> dict[str, Any]:
        protocol.parse_empty(payload)
        rec = await room.start(conn.seat)
        return {"recording": {"id": rec.id, "take": rec.take}}

    async def _pause(self, conn: Conn, room: Room, payload: Any) -> None:
        protocol.parse_empty(payload)
        await room.pause(conn.seat)

    async def _resume(self, conn: Conn, room: Room, payload: Any) -> None:
        protocol.parse_empty(payload)
        await room.resume(conn.seat)

    async def _stop(self, conn: Conn, room: Room, payload: Any) -> None:
        protocol.parse_empty(payload)
        await room.stop(conn.seat)

    async def _marker(self, conn: Conn, room: Room, payload: Any) -> dict[str, Any]:
        marker = await room.marker(conn.seat, protocol.parse_marker(payload).label)
        return {"marker": {"seq": marker.id, "rec_time": marker.rec_time}}

    async def _note(self, conn: Conn, room: Room, payload: Any) -> dict[str, Any]:
        note = await room.note(conn.seat, protocol.parse_note(payload).text)
        return {"note": {"seq": note.id, "at": note.at, "rec_time": note.rec_time}}

    async def _rtc_offer(self, conn: Conn, room: Room, payload: Any) -> dict[str, Any]:
        return await self.media.offer(room, conn.seat, conn.sid, protocol.parse_offer(payload))


def environ_address(environ: dict[str, Any]) -> str:
    """The client address of a Socket.IO connection (engine.io's REMOTE_ADDR is fixed)."""
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return str(remote or environ.get("REMOTE_ADDR") or "unknown")
