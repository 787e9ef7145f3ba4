"""The app-wide services, created in the app's cleanup context (owner: app.py)."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from aiohttp import web

from storyroom.config import Settings
from storyroom.finalize.jobs import FinalizeJobs
from storyroom.media.plane import MediaPlane
from storyroom.recording.recorder import Recorder
from storyroom.room.rooms import Rooms
from storyroom.room.signaling import Signaling
from storyroom.store import Store


@dataclass(slots=True)
class Services:
    settings: Settings
    sio: socketio.AsyncServer
    store: Store
    rooms: Rooms
    signaling: Signaling
    staff_token: str
    media: MediaPlane
    recorder: Recorder
    finalize_jobs: FinalizeJobs


SERVICES = web.AppKey("services", Services)
