"""The staff pages' live view of the rooms: Socket.IO namespace `/staff`.

A staff page connects with its session cookie (a script with `auth={"token": <staff
token>}`) and is put in its organisation's room (`org:<id>`, or `org:*` for every
organisation). After each change of a live room, its `session` summary (who is
connected, how the recording stands: the fields of `GET /api/sessions`' rows) is
emitted to those rooms. With Redis (`storyroom.fanout`) the emit reaches the staff pages
of every node; a page that (re)connects asks every node for its live rooms (`Resync`).

Room changes are queued and sent by this feed's own task, coalesced per room, so a slow
or absent Redis never holds up a room. A staff session that ends anywhere (sign-out, new
password, removed account) hangs up that session's sockets on every node (`closed`,
reason `signed_out`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import socketio

from storyroom.errors import AuthError
from storyroom.fanout import Fanout, Message, Resync
from storyroom.ids import tokens_equal
from storyroom.limits import RateLimited
from storyroom.orgs import OrgScope
from storyroom.room.rooms import Room, Rooms
from storyroom.room.signaling import environ_address
from storyroom.staff.accounts import (
    SESSION_COOKIE,
    TOKEN_ACTOR,
    Accounts,
    Revocation,
    StaffIdentity,
)
from storyroom.store import RecordingRow
from storyroom.tasks import cancel_and_wait

log = logging.getLogger(__name__)

STAFF_NAMESPACE: Final = "/staff"
EVERY_ORGANISATION_ROOM: Final = "org:*"
CONNECTED_WAIT_S: Final = 5.0


class StaffCloseReason(StrEnum):
    SIGNED_OUT = "signed_out"


def org_room(scope: OrgScope) -> str:
    """The Socket.IO room of the staff who see `scope`'s rooms."""
    return EVERY_ORGANISATION_ROOM if scope.org_id is None else f"org:{scope.org_id}"


def recording_fields(latest: RecordingRow | None) -> dict[str, Any]:
    """How a session's latest take stands, as the sessions list words it."""
    return {
        "recording": latest.public_status if latest else "idle",
        "percent": latest.finalize_percent if latest and latest.finalize_status else None,
    }


def live_status(room: Room) -> dict[str, Any]:
    """A live room's `session` summary for the staff pages."""
    return {
        "id": room.id,
        "connected": [seat for seat in room.kind.seats if room.connected(seat)],
        **recording_fields(room.recording),
    }


@dataclass(frozen=True, slots=True)
class StaffConn:
    sid: str
    who: StaffIdentity


class StaffFeed:
    """Owns the `/staff` namespace's handlers and the task that sends room summaries."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        rooms: Rooms,
        accounts: Accounts,
        staff_token: str,
        fanout: Fanout,
    ) -> None:
        self.sio = sio
        self.rooms = rooms
        self.accounts = accounts
        self.staff_token = staff_token
        self.fanout = fanout
        self.conns: dict[str, StaffConn] = {}
        self.sent = 0
        # room id -> (its organisation, its latest summary), sent by the task
        self._pending: dict[str, tuple[int, dict[str, Any]]] = {}
        self._welcome: list[StaffConn] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        sio.on("connect", self._on_connect, namespace=STAFF_NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=STAFF_NAMESPACE)
        sio.on("*", self._on_unknown, namespace=STAFF_NAMESPACE)
        rooms.on_change(self.room_changed)
        fanout.on_message(self._message)

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_loop(), name="staff-feed")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def room_changed(self, room: Room) -> None:
        """After each change of a live room (runs in the room's path: never waits)."""
        self._pending[room.id] = (room.session.org_id, live_status(room))
        self._wake.set()

    # -- connect / disconnect --------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            who = await self._identify(environ, auth)
        except RateLimited as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code, "retry_after": exc.retry_after}
            ) from None
        except AuthError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        conn = StaffConn(sid, who)
        self.conns[sid] = conn
        await self.sio.enter_room(sid, org_room(who.scope), namespace=STAFF_NAMESPACE)
        # every node's live rooms, once the CONNECT packet is out (from the task)
        self._welcome.append(conn)
        self._wake.set()

    async def _identify(self, environ: dict[str, Any], auth: Any) -> StaffIdentity:
        """The staff the connection is for: the operator's token in `auth`, else the
        session cookie; `AuthError` otherwise."""
        if auth not in (None, {}):
            token = auth.get("token") if isinstance(auth, dict) and len(auth) == 1 else None
            if not isinstance(token, str) or not token or len(token) > 256:
                raise AuthError(
                    'auth must be {"token": <staff token>} or left out (the session cookie)',
                    code="bad_auth",
                )
            address = environ_address(environ)
            self.accounts.tokens.check(address)
            if not tokens_equal(token, self.staff_token):
                self.accounts.tokens.fail(address)
                raise AuthError("staff credentials are not valid")
            return StaffIdentity(TOKEN_ACTOR)
        request = environ.get("aiohttp.request")
        cookie = request.cookies.get(SESSION_COOKIE) if request is not None else None
        session = await self.accounts.session_for(cookie)
        if session is None:
            raise AuthError("staff credentials are required: please sign in")
        return StaffIdentity(session.email, session)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.conns.pop(sid, None)

    async def _on_unknown(self, event: str, sid: str, *args: Any) -> None:
        log.info("staff feed: ignored event %r from %s", event[:64], sid)

    # -- the task ---------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            welcome, self._welcome = self._welcome, []
            pending, self._pending = self._pending, {}
            for conn in welcome:
                await self._resync(conn)
            for org_id, summary in pending.values():
                await self._emit(summary, [f"org:{org_id}", EVERY_ORGANISATION_ROOM])

    async def _resync(self, conn: StaffConn) -> None:
        deadline = time.monotonic() + CONNECTED_WAIT_S
        while not self.sio.manager.is_connected(conn.sid, STAFF_NAMESPACE):
            if conn.sid not in self.conns or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)
        await self.fanout.publish(Resync(conn.sid, conn.who.scope.org_id))

    async def _emit(self, summary: dict[str, Any], to: str | list[str]) -> None:
        try:
            # through the client manager: with Redis, every node's staff sockets
            await self.sio.emit("session", summary, to=to, namespace=STAFF_NAMESPACE)
            self.sent += 1
        except Exception:
            # a summary is sent again at the room's next change and at each resync
            log.warning("staff feed: session %s not sent", summary.get("id"), exc_info=True)

    # -- messages from every node -----------------------------------------------------------

    async def _message(self, message: Message) -> None:
        if isinstance(message, Resync):
            scope = OrgScope(message.org_id)
            for room in self.rooms.all():
                if scope.sees(room.session.org_id):
                    await self._emit(live_status(room), message.sid)
        elif isinstance(message, Revocation):
            await self._hang_up(message)

    async def _hang_up(self, revocation: Revocation) -> None:
        """This node's staff sockets of the sessions `revocation` ended are told why and
        disconnected."""
        for sid, conn in list(self.conns.items()):
            session = conn.who.session
            if session is None or not revocation.ends(session):
                continue
            self.conns.pop(sid, None)
            try:
                await self.sio.emit(
                    "closed",
                    {"reason": StaffCloseReason.SIGNED_OUT.value, "message": "Signed out."},
                    to=sid,
                    namespace=STAFF_NAMESPACE,
                    ignore_queue=True,
                )
                await self.sio.disconnect(sid, namespace=STAFF_NAMESPACE, ignore_queue=True)
            except Exception:
                # the page may be gone already; disconnecting it is all that was wanted
                log.warning("staff feed: could not close %s", sid, exc_info=True)
            log.info("staff feed: %s signed out, socket %s closed", session.email, sid)
