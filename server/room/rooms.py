"""Rooms: the live state of a session, shared with its three seats.

A `Room` owns presence, consent, question agreement, cues, markers, the timer and the
recording state machine `idle -> recording <-> paused -> stopped`. It knows nothing
about Socket.IO or Opus: signaling calls its methods, and it tells listeners about
changes through callbacks. Every change is persisted before it is announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from storyroom.clock import steady
from storyroom.config import Settings
from storyroom.errors import Forbidden, InvalidInput, InvalidState, NotFound, PreconditionFailed
from storyroom.ids import new_id
from storyroom.orgs import EVERY_ORGANISATION, Organisation
from storyroom.room.permissions import Action, require
from storyroom.room.protocol import ChooseIn, ConsentIn
from storyroom.seats import PARTICIPANT_SEATS, SEATS, SeatName, SessionKind
from storyroom.status import LIVE_STATES, RecordingState, StopReason
from storyroom.store import (
    Consent,
    CueRow,
    MarkerRow,
    NoteRow,
    RecordingRow,
    SeatRow,
    SessionRow,
    Store,
)
from storyroom.tasks import cancel_and_wait
from storyroom.transcribe.store import TranscriptState

log = logging.getLogger(__name__)


class CloseReason(StrEnum):
    """Why a seat's connection or a room was closed."""

    CLIENT_LEFT = "client_left"
    REPLACED = "replaced"
    LINK_REISSUED = "link_reissued"
    SERVER_SHUTDOWN = "server_shutdown"
    GRACE_EXPIRED = "grace_expired"
    EMPTY = "empty"
    """Everyone left and no take runs: a cluster node lets the room go."""
    NODE_LOST = "node_lost"
    """The cluster declared this node dead: another node may run the room now."""


class RoomListener(Protocol):
    """Something that follows a room's recording state (the recorder, the finalizer)."""

    async def on_recording_state(self, room: Room, previous: RecordingState) -> None: ...


@dataclass(slots=True)
class Presence:
    sid: str | None = None
    connected_at: float | None = None
    connections: int = 0
    replaced_at: float | None = None
    left_at: float | None = None


@dataclass(slots=True)
class Room:
    """Live state of one session. Mutations take `lock`; owner: `Rooms`."""

    settings: Settings
    store: Store
    session: SessionRow
    seats: dict[str, SeatRow]
    consent: dict[str, Consent]
    choices: dict[str, list[str]]
    cues: list[CueRow]
    markers: list[MarkerRow]
    notes: list[NoteRow]
    recording: RecordingRow | None
    on_change: Callable[[Room], Awaitable[None]]
    organisation: Organisation | None = None
    """Whose programme this is: its name and contact line are shown to the seats."""
    presence: dict[str, Presence] = field(default_factory=lambda: {s: Presence() for s in SEATS})
    notice: dict[str, Any] | None = None
    transcript: TranscriptState | None = None
    """The latest recording's transcription, once finalization handed it over."""
    listeners: list[RoomListener] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    run_started: float | None = None  # steady clock when the current run began
    _warning_task: asyncio.Task[None] | None = None
    _closed: bool = False

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def kind(self) -> SessionKind:
        return self.session.kind

    @property
    def limit_s(self) -> float | None:
        """The hard limit on recorded seconds (pauses excluded), self-guided rooms only:
        nobody is there to end a conversation that runs on."""
        if self.kind is SessionKind.SELF_GUIDED:
            return self.settings.self_guided_limit_minutes * 60.0
        return None

    @property
    def state(self) -> RecordingState:
        if self.recording is None:
            return RecordingState.IDLE
        try:
            return RecordingState(self.recording.status)
        except ValueError:
            # finalizing / ready / failed belong to a stopped recording
            return RecordingState.STOPPED

    @property
    def open_for_take(self) -> bool:
        """No take is running and a new one may start: before the first, after an
        interruption, and after a take the server stopped for a restart."""
        state = self.state
        return state in (RecordingState.IDLE, RecordingState.INTERRUPTED) or (
            state is RecordingState.STOPPED and self.stop_reason == StopReason.SERVER_RESTART
        )

    def elapsed(self, at: float | None = None) -> float:
        """Recorded seconds, excluding pauses: the room's recording clock, at steady-clock
        time `at` (now by default). The stored `run_started_at` is a wall-clock label;
        the clock itself runs on `clock.steady()` so a stepped wall clock cannot move it."""
        rec = self.recording
        if rec is None:
            return 0.0
        if rec.run_started_at is not None and self.run_started is not None:
            now = steady() if at is None else at
            return rec.elapsed_before + max(0.0, now - self.run_started)
        return rec.elapsed_before

    def connected(self, seat: str) -> bool:
        return self.presence[seat].sid is not None

    # -- snapshot -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The full room state every seat sees (no tokens, no last names).

        `server_time` is the steady clock: clients sync their timers to it, so it must
        not jump when the host's wall clock is stepped."""
        now = steady()
        seats: dict[str, Any] = {}
        for name in self.kind.seats:
            row = self.seats[name]
            p = self.presence[name]
            entry: dict[str, Any] = {
                "name": row.name,
                "bio": row.bio,
                "connected": p.sid is not None,
                "connections": p.connections,
                "replaced_at": p.replaced_at,
            }
            if name in PARTICIPANT_SEATS:
                c = self.consent.get(name)
                entry["consent"] = c.to_json() if c else None
                entry["chosen"] = self.choices.get(name, [])
            seats[name] = entry
        current = self.cues[-1] if self.cues else None
        return {
            "session": {
                "id": self.session.id,
                "kind": self.kind.value,
                "title": self.session.title,
                "language": self.session.language,
                "target_minutes": self.session.target_minutes,
                "organisation": self.organisation.public_json() if self.organisation else None,
            },
            "seats": seats,
            "questions": self.session.questions,
            "agreed": self.session.agreed,
            "cue": _cue_json(current) if current else None,
            "cues": [_cue_json(c) for c in self.cues],
            "markers": [_marker_json(m) for m in self.markers],
            "recording": {
                "state": self.state.value,
                "id": self.recording.id if self.recording else None,
                "take": self.recording.take if self.recording else 0,
                "status": self.recording.public_status if self.recording else "idle",
                "stop_reason": self.stop_reason,
                "finalize": (
                    {
                        "status": self.recording.finalize_status,
                        "percent": self.recording.finalize_percent,
                        "reason": self.recording.finalize_reason,
                        "stage": self.recording.finalize_stage,
                    }
                    if self.recording and self.recording.finalize_status
                    else None
                ),
                "transcript": (
                    self.transcript.to_json()
                    if self.transcript is not None
                    and self.recording is not None
                    and self.transcript.recording_id == self.recording.id
                    else None
                ),
            },
            "timer": self.timer(now),
            "notice": self.notice,
            "server_time": now,
        }

    @property
    def stop_reason(self) -> str | None:
        """Why the server stopped the recording by itself (e.g. `disk_full`), else None."""
        rec = self.recording
        if rec is None or self.state is not RecordingState.STOPPED:
            return None
        return rec.status_reason

    def timer(self, now: float) -> dict[str, Any]:
        """The timer at steady-clock time `now`."""
        elapsed = self.elapsed(now)
        target = self.session.target_minutes * 60.0
        remaining = target - elapsed
        warning = None
        for minutes in self.settings.warning_minutes:  # sorted, largest first
            if remaining <= minutes * 60:
                warning = minutes
        return {
            "running": self.state is RecordingState.RECORDING,
            "elapsed_s": round(elapsed, 3),
            "server_time": now,
            "target_s": target,
            "remaining_s": round(remaining, 3),
            "warnings_min": list(self.settings.warning_minutes),
            "warning_min": warning,
            "overtime": remaining < 0,
            "limit_s": self.limit_s,
        }

    # -- presence -------------------------------------------------------------------

    async def join(self, seat: str, sid: str) -> str | None:
        """Seat `sid` in `seat`; returns the sid it replaced (a reconnect), if any."""
        async with self.lock:
            p = self.presence[seat]
            old = p.sid
            p.sid = sid
            p.connected_at = time.time()
            p.connections += 1
            if old is not None:
                p.replaced_at = p.connected_at
                self.notice = {"type": "seat_replaced", "seat": seat, "at": p.connected_at}
            else:
                self.notice = {"type": "seat_joined", "seat": seat, "at": p.connected_at}
        await self._changed()
        return old

    async def leave(self, seat: str, sid: str) -> bool:
        """Mark `seat` empty if `sid` still holds it; False when it was already replaced."""
        async with self.lock:
            p = self.presence[seat]
            if p.sid != sid:
                return False
            p.sid = None
            p.left_at = time.time()
            self.notice = {"type": "seat_left", "seat": seat, "at": p.left_at}
        await self._changed()
        return True

    # -- consent and questions ------------------------------------------------------------

    async def set_consent(self, seat: str, consent: ConsentIn) -> None:
        if seat not in PARTICIPANT_SEATS:
            raise Forbidden("only participants give consent")
        async with self.lock:
            if not self.open_for_take:
                raise InvalidState("consent cannot change once recording has started")
            row = Consent(consent.record, consent.archive, consent.public, time.time())
            await self.store.add_consent(self.id, seat, row)
            self.consent[seat] = row
            self.notice = {"type": "consent", "seat": seat, "at": row.at}
        await self._changed()

    def _question_ids(self) -> set[str]:
        return {q["id"] for q in self.session.questions}

    async def choose(self, seat: str, chosen: ChooseIn) -> None:
        """Participants mark questions they would like; the facilitator sets the final order."""
        unknown = [i for i in chosen.ids if i not in self._question_ids()]
        if unknown:
            raise InvalidInput(f"unknown question id {unknown[0]!r}", code="unknown_question")
        async with self.lock:
            if self.state is RecordingState.STOPPED and not self.open_for_take:
                raise InvalidState("the conversation has ended")
            if seat == SeatName.FACILITATOR.value:
                await self.store.set_agreed(self.id, chosen.ids)
                self.session = replace(self.session, agreed=list(chosen.ids))
                self.notice = {"type": "agreed", "seat": seat, "at": time.time()}
            else:
                await self.store.set_choices(self.id, seat, chosen.ids)
                self.choices[seat] = list(chosen.ids)
                self.notice = {"type": "chosen", "seat": seat, "at": time.time()}
        await self._changed()

    def _recording_moment(self, refusal: str) -> tuple[str, float, float]:
        """Under `lock`: the running recording's id, the wall time and the recording clock
        now; `InvalidState` with `refusal` unless it is recording or paused."""
        if self.state not in (RecordingState.RECORDING, RecordingState.PAUSED):
            raise InvalidState(refusal)
        assert self.recording is not None
        return self.recording.id, time.time(), self.elapsed()

    async def cue(self, seat: str, question_id: str) -> CueRow:
        require(self.kind, seat, Action.CUE)
        if question_id not in self._question_ids():
            raise InvalidInput(f"unknown question id {question_id!r}", code="unknown_question")
        async with self.lock:
            recording_id, now, rec_time = self._recording_moment(
                "questions are cued while recording; start the recording first"
            )
            cue_id = await self.store.add_cue(self.id, recording_id, question_id, now, rec_time)
            row = CueRow(cue_id, question_id, now, rec_time, recording_id)
            self.cues.append(row)
            self.notice = {"type": "cue", "seat": seat, "at": now}
        await self._changed()
        return row

    async def marker(self, seat: str, label: str) -> MarkerRow:
        require(self.kind, seat, Action.MARKER)
        async with self.lock:
            recording_id, now, rec_time = self._recording_moment(
                "markers are placed while recording"
            )
            marker_id = await self.store.add_marker(
                self.id, recording_id, seat, label, now, rec_time
            )
            row = MarkerRow(marker_id, seat, label, now, rec_time, recording_id)
            self.markers.append(row)
            self.notice = {"type": "marker", "seat": seat, "at": now}
        await self._changed()
        return row

    async def note(self, seat: str, text: str) -> NoteRow:
        """A private note of the facilitator's, kept with its time (seen by them only)."""
        require(self.kind, seat, Action.NOTE)
        async with self.lock:
            now = time.time()
            live = self.state in (RecordingState.RECORDING, RecordingState.PAUSED)
            rec_time = self.elapsed() if live else None
            recording_id = self.recording.id if live and self.recording else None
            note_id = await self.store.add_note(self.id, recording_id, seat, text, now, rec_time)
            row = NoteRow(note_id, text, now, rec_time)
            self.notes.append(row)
            self.notice = {"type": "note", "seat": seat, "at": now}
        await self._changed()
        return row

    def private_view(self, seat: str) -> dict[str, Any]:
        """What only `seat` sees, added to its snapshot."""
        if seat != SeatName.FACILITATOR.value:
            return {}
        return {
            "notes": [
                {"seq": n.id, "text": n.text, "at": n.at, "rec_time": n.rec_time}
                for n in self.notes
            ]
        }

    # -- recording state machine -----------------------------------------------------------

    async def start(self, seat: str) -> RecordingRow:
        require(self.kind, seat, Action.START)
        async with self.lock:
            previous = self.state
            if not self.open_for_take:
                raise InvalidState(f"recording cannot start: it is {previous.value}")
            missing = [s for s in self.kind.seats if not self.connected(s)]
            if missing:
                names = ", ".join(self.seats[s].name for s in missing)
                raise PreconditionFailed(f"everyone must be in the room first; waiting for {names}")
            no_consent = [
                s for s in PARTICIPANT_SEATS if not (self.consent.get(s) and self.consent[s].record)
            ]
            if no_consent:
                names = ", ".join(self.seats[s].name for s in no_consent)
                raise PreconditionFailed(
                    f"both participants must agree to recording; waiting for {names}"
                )
            now = time.time()
            rec = RecordingRow(
                id=new_id("rec"),
                session_id=self.id,
                take=(self.recording.take + 1) if self.recording else 1,
                status=RecordingState.RECORDING.value,
                started_at=now,
                stopped_at=None,
                elapsed_before=0.0,
                run_started_at=now,
                status_reason=None,
            )
            await self.store.insert_recording(rec)
            self.recording = rec
            self.run_started = steady()
            self.notice = {"type": "recording", "state": "recording", "at": now}
            await self._notify_listeners(previous)
        self._schedule_warning()
        await self._changed()
        return rec

    async def pause(self, seat: str) -> None:
        require(self.kind, seat, Action.PAUSE)
        await self._transition(RecordingState.RECORDING, RecordingState.PAUSED, "pause")

    async def resume(self, seat: str) -> None:
        require(self.kind, seat, Action.RESUME)
        await self._transition(RecordingState.PAUSED, RecordingState.RECORDING, "resume")

    async def stop(self, seat: str) -> None:
        require(self.kind, seat, Action.STOP)
        await self._transition(None, RecordingState.STOPPED, "stop")

    async def _transition(
        self, source: RecordingState | None, target: RecordingState, event: str
    ) -> None:
        async with self.lock:
            previous = self.state
            allowed = (source,) if source else (RecordingState.RECORDING, RecordingState.PAUSED)
            if previous not in allowed:
                raise InvalidState(f"cannot {event}: the recording is {previous.value}")
            await self._move(previous, target, event, None)
        self._schedule_warning()
        await self._changed()

    async def stop_for(self, reason: str, recording_id: str) -> bool:
        """The server stops the recording by itself (e.g. `disk_full`): the room is told
        why in `recording.stop_reason` and a notice. False when that recording is no
        longer running. Persisting is best effort: on a full disk the database may not
        take the write either, and the room must stop all the same (a restart then finds
        the recording interrupted)."""
        async with self.lock:
            previous = self.state
            if (
                previous not in (RecordingState.RECORDING, RecordingState.PAUSED)
                or self.recording is None
                or self.recording.id != recording_id
            ):
                return False
            await self._move(previous, RecordingState.STOPPED, "stop", reason)
        self._schedule_warning()
        await self._changed()
        return True

    async def _move(
        self, previous: RecordingState, target: RecordingState, event: str, reason: str | None
    ) -> None:
        """Under `lock`: persist the transition, then tell listeners."""
        assert self.recording is not None
        now = time.time()  # labels only; the recording clock runs on steady()
        rec_time = self.elapsed()
        running = target is RecordingState.RECORDING
        rec = replace(
            self.recording,
            status=target.value,
            elapsed_before=rec_time,
            run_started_at=now if running else None,
            stopped_at=now if target is RecordingState.STOPPED else None,
            status_reason=reason if reason is not None else self.recording.status_reason,
        )
        if reason is None:
            await self.store.update_recording(rec, event, now, rec_time)
        else:
            try:
                await self.store.update_recording(rec, event, now, rec_time)
            except Exception:
                log.exception("room %s: could not persist the stop (%s)", self.id, reason)
        self.recording = rec
        self.run_started = steady() if running else None
        await self._notify_listeners(previous)
        # after the listeners (the finalizer announces "queued"): the snapshot that
        # follows carries the transition and its reason
        self.notice = {"type": "recording", "state": target.value, "at": now}
        if reason is not None:
            self.notice["reason"] = reason

    async def _notify_listeners(self, previous: RecordingState) -> None:
        # The transition is already persisted: a failing listener is logged, never undone.
        for listener in self.listeners:
            try:
                await listener.on_recording_state(self, previous)
            except Exception:
                log.exception(
                    "room %s: %s failed on %s", self.id, type(listener).__name__, self.state.value
                )

    async def recording_updated(self, rec: RecordingRow) -> None:
        """Finalization progress for this room's latest recording (no lock: status only)."""
        if self.recording is not None and self.recording.id == rec.id:
            self.recording = rec
            self.notice = {"type": "finalize", "status": rec.finalize_status, "at": time.time()}
            await self._changed()

    async def transcript_updated(self, state: TranscriptState) -> None:
        """Transcription progress for this room's latest recording."""
        if self.recording is not None and self.recording.id == state.recording_id:
            self.transcript = state
            await self._changed()

    # -- timer warnings --------------------------------------------------------------------

    def _schedule_warning(self) -> None:
        """Push a snapshot when the next timer warning is due, and stop the recording at
        the hard limit of a self-guided room (owner: this room)."""
        if self._warning_task is not None:
            self._warning_task.cancel()
            self._warning_task = None
        if self.state is not RecordingState.RECORDING or self._closed:
            return
        elapsed = self.elapsed()
        remaining = self.session.target_minutes * 60.0 - elapsed
        due = [remaining - m * 60 for m in self.settings.warning_minutes] + [remaining]
        if self.limit_s is not None:
            due.append(self.limit_s - elapsed)
        upcoming = [d for d in due if d > 0]
        if self.limit_s is not None and elapsed >= self.limit_s:
            upcoming = [0.0]  # resumed at or past the limit: stop at once
        if upcoming:
            self._warning_task = asyncio.create_task(self._warn_after(min(upcoming)))

    async def _warn_after(self, delay: float) -> None:
        await asyncio.sleep(delay + 0.05)
        self._warning_task = None  # this task ends here: nothing below may cancel it
        rec = self.recording
        if self.limit_s is not None and rec is not None and self.elapsed() >= self.limit_s:
            log.info("room %s: take %s reached the %.0f s limit", self.id, rec.id, self.limit_s)
            await self.stop_for(StopReason.TIME_LIMIT, rec.id)
            return
        self.notice = {"type": "timer", "at": time.time()}
        self._schedule_warning()
        await self._changed()

    async def _changed(self) -> None:
        if not self._closed:
            await self.on_change(self)

    async def close(self, reason: CloseReason) -> None:
        """Idempotent: stop timers; seats' connections are closed by their owners."""
        if self._closed:
            return
        self._closed = True
        log.info("room %s closed: %s", self.id, reason.value)
        task, self._warning_task = self._warning_task, None
        await cancel_and_wait(task)


def _cue_json(c: CueRow) -> dict[str, Any]:
    return {"seq": c.id, "question_id": c.question_id, "at": c.at, "rec_time": c.rec_time}


def _marker_json(m: MarkerRow) -> dict[str, Any]:
    return {"seq": m.id, "seat": m.seat, "label": m.label, "at": m.at, "rec_time": m.rec_time}


class Rooms:
    """Registry of live rooms, loaded on demand from the store. Owner: the app.

    Whoever follows rooms registers here: `on_change` for every change (signaling sends
    the snapshots), `follow` for recording transitions (the recorder, the finalizer)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self._rooms: dict[str, Room] = {}
        self._loading = asyncio.Lock()
        self._change_listeners: list[Callable[[Room], Awaitable[None]]] = []
        # shared with every room, so a listener registered later follows live rooms too
        self._recording_listeners: list[RoomListener] = []

    def on_change(self, listener: Callable[[Room], Awaitable[None]]) -> None:
        """Call `listener` with the room after each of its changes."""
        self._change_listeners.append(listener)

    def follow(self, listener: RoomListener) -> None:
        """Tell `listener` of every recording transition, after the listeners before it."""
        self._recording_listeners.append(listener)

    async def _announce(self, room: Room) -> None:
        for listener in self._change_listeners:
            await listener(room)

    async def recording_updated(self, rec: RecordingRow) -> None:
        """Finalization progress reaches the recording's room, when it is live."""
        room = self._rooms.get(rec.session_id)
        if room is not None:
            await room.recording_updated(rec)

    async def transcript_updated(self, recording_id: str, state: TranscriptState) -> None:
        """Transcription progress reaches the recording's room, when it is live."""
        for room in self._rooms.values():
            await room.transcript_updated(state)

    def live(self, session_id: str) -> Room | None:
        return self._rooms.get(session_id)

    def all(self) -> list[Room]:
        return list(self._rooms.values())

    async def get(self, session_id: str) -> Room:
        room = self._rooms.get(session_id)
        if room is not None:
            return room
        async with self._loading:
            room = self._rooms.get(session_id)
            if room is not None:
                return room
            session = await self._store.get_session(session_id, EVERY_ORGANISATION)
            if session is None:
                raise NotFound("no such session")
            seats = {s.seat: s for s in await self._store.seats(session_id)}
            recordings = await self._store.recordings_for(session_id)
            recording = recordings[-1] if recordings else None
            run_started = None
            if recording is not None and recording.run_started_at is not None:
                # the stored start is a wall-clock label; carry it onto the steady clock once
                run_started = steady() - max(0.0, time.time() - recording.run_started_at)
            room = Room(
                settings=self._settings,
                store=self._store,
                session=session,
                seats=seats,
                consent=await self._store.current_consent(session_id),
                choices=await self._store.choices(session_id),
                cues=await self._store.cues(session_id),
                markers=await self._store.markers(session_id),
                notes=await self._store.notes(session_id),
                recording=recording,
                on_change=self._announce,
                organisation=await self._store.session_organisation(session_id),
                listeners=self._recording_listeners,
                run_started=run_started,
            )
            self._rooms[session_id] = room
            return room

    async def end_live_takes(self, reason: StopReason) -> list[str]:
        """Stop every running or paused take for `reason` (the server is shutting down):
        each is persisted as `stopped`, its stems are closed and flushed, its
        finalization is queued and its seats get the snapshot saying why. Returns the
        recording ids stopped."""
        stopped = []
        for room in list(self._rooms.values()):
            rec = room.recording
            if rec is not None and room.state in LIVE_STATES:
                if await room.stop_for(reason, rec.id):
                    log.info("room %s: take %s stopped (%s)", room.id, rec.id, reason.value)
                    stopped.append(rec.id)
        return stopped

    async def forget(self, session_id: str, reason: CloseReason) -> None:
        """Close the room and drop it: the next `get` loads it afresh from the store
        (in a cluster, another node may have run it in between)."""
        room = self._rooms.pop(session_id, None)
        if room is not None:
            await room.close(reason)

    async def close(self, reason: CloseReason) -> None:
        rooms, self._rooms = list(self._rooms.values()), {}
        for room in rooms:
            await room.close(reason)
