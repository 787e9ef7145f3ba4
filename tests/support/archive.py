"""Finished recordings for the staff-archive tests.

One real recording is made per test run (three aiortc peers sending tones, two cued
questions, a few seconds of audio, finalized by the server's worker) in a thread with
its own event loop; each test gets a copy of that data directory and its own server, so
tests may delete, withdraw and export without disturbing one another. The fixtures
`finished`, `archive` and `staff` in conftest.py hand them out.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from support.media import tone_room
from support.polling import wait_for, wait_until
from support.server import DATABASES, RunningServer, create_session, give_consent, serving
from support.staff import StaffBrowser, add_staff

ALL_CONSENT = {"record": True, "archive": True, "public": True}
TITLE = "Porch light conversation"


@dataclass(frozen=True)
class Finished:
    """A data directory holding one finalized recording."""

    data_dir: Path
    recording_id: str
    session_id: str
    seat_tokens: dict[str, str]
    question_ids: list[str]
    recorded_s: tuple[float, float]
    """Bounds of the recording's length: from just after the start's ack to just before
    the stop was sent, and from just before the start to just after the stop's ack."""
    finalized: dict[str, Any]
    """The facilitator's last snapshot of the recording: `ready`, with its progress."""


async def record_and_finalize(data_dir: Path, seconds: float = 3.0) -> Finished:
    async with serving(data_dir) as server:
        created = await create_session(server.url, title=TITLE)
        async with tone_room(server.url, created) as (clients, peers):
            await give_consent(clients, ALL_CONSENT)
            f = clients["facilitator"]
            questions = [q["id"] for q in f.last["questions"][:2]]
            before_start = time.monotonic()
            start = await f.call("recording:start")
            assert start["ok"], start
            begun = time.monotonic()
            assert (await f.call("question:cue", {"id": questions[0]}))["ok"]
            await wait_until(begun + seconds / 2)
            assert (await f.call("question:cue", {"id": questions[1]}))["ok"]
            await wait_until(begun + seconds)
            before_stop = time.monotonic()
            assert (await f.call("recording:stop"))["ok"]
            recorded = (before_stop - begun, time.monotonic() - before_start)
            for peer in peers.values():  # the seats hang up; the facilitator's page stays
                await peer.close()
            # and sees finalization through to its end
            last = await f.wait(
                lambda s: (s["recording"]["finalize"] or {}).get("status") in ("ready", "failed"),
                "finalization to end",
                timeout=120,
            )
            assert last["recording"]["status"] == "ready", last["recording"]
        # and its transcript is made here once, not by every server on a copy of it
        transcripts = server.services.transcribe_jobs.transcripts

        async def transcribed() -> bool:
            state = await transcripts.state(start["recording"]["id"])
            return state is not None and state.status not in ("queued", "transcribing")

        await wait_for(transcribed, timeout=180, what="transcription")
    return Finished(
        data_dir,
        start["recording"]["id"],
        created["id"],
        {seat: created["seats"][seat]["token"] for seat in created["seats"]},
        questions,
        recorded,
        last["recording"],
    )


_made: dict[str, Finished] = {}
_lock = threading.Lock()


def finished_recording(root: Path) -> Finished:
    """The one finalized recording of this test run (made on first use, in a thread with
    its own event loop so it never touches the tests' loops)."""
    with _lock:
        if "one" not in _made:
            box: list[Finished | BaseException] = []

            def run() -> None:
                try:
                    box.append(asyncio.run(record_and_finalize(root / "data")))
                except BaseException as exc:
                    box.append(exc)

            thread = threading.Thread(target=run, name="make-recording")
            thread.start()
            thread.join(300)
            if not box:
                raise AssertionError("making the shared recording did not finish")
            if isinstance(box[0], BaseException):
                raise box[0]
            _made["one"] = box[0]
        return _made["one"]


def copy_of(finished: Finished, target: Path) -> Path:
    """A private copy of the finished data directory for one test."""
    # not the assembled speech model (~140 MB): a server puts it together when it needs it
    shutil.copytree(finished.data_dir, target, ignore=shutil.ignore_patterns("models"))
    DATABASES.copy(finished.data_dir, target)  # in the PostgreSQL pass
    return target


@asynccontextmanager
async def archive_server(
    finished: Finished, tmp_path: Path, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A server on a private copy of `finished`, with the staff member of `add_staff`."""
    async with serving(copy_of(finished, tmp_path / "data"), **overrides) as server:
        await add_staff(server)
        yield server


async def issue_copy_links(staff: StaffBrowser, recording_id: str) -> list[dict[str, Any]]:
    """Both participants agree to copies, and staff issue their links; each link with
    the `token` its URL carries."""
    path = f"/api/recordings/{recording_id}"
    for seat in ("a", "b"):
        await staff.call("PUT", f"{path}/consent", {"seat": seat, "copies": True, "note": "yes"})
    links: list[dict[str, Any]] = (await staff.call("POST", f"{path}/copies", expect=201))["links"]
    return [
        {**link, "token": urlsplit(link["url"]).fragment.removeprefix("token=")} for link in links
    ]
