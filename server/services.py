"""The app-wide services, created in the app's cleanup context (owner: app.py)."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from aiohttp import web

from .config import Settings
from .finalizer import Finalizer
from .media import MediaPlane
from .recorder import Recorder
from .rooms import Rooms
from .signaling import Signaling
from .store import Store


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
    finalizer: Finalizer


SERVICES = web.AppKey("services", Services)
