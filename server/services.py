"""The app-wide services, created once in the app's cleanup context (owner: app.py).

Every route, page and guard reaches a service through `request.app[SERVICES]`; no
service has an app key of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from aiohttp import web

from storyroom.archive.bagit import BagMaker
from storyroom.archive.catalogue import Archive
from storyroom.archive.clips import Clipper
from storyroom.archive.copies import Copies
from storyroom.archive.delivery import CopyDelivery
from storyroom.archive.waveforms import WaveformLevels
from storyroom.capture.service import Captures
from storyroom.config import Settings
from storyroom.fanout import Fanout
from storyroom.finalize.jobs import FinalizeJobs
from storyroom.matching.outbox import Mailer, Outbox
from storyroom.matching.store import ApplicationStore
from storyroom.media.plane import MediaPlane
from storyroom.recording.recorder import Recorder
from storyroom.room.rooms import Rooms
from storyroom.room.signaling import Signaling
from storyroom.room.staff_feed import StaffFeed
from storyroom.staff.accounts import Accounts
from storyroom.staff.audit import Audit
from storyroom.storage.recordings import RecordingStorage
from storyroom.storage.shipper import Shipper
from storyroom.store import Store
from storyroom.transcribe.jobs import TranscribeJobs


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
    transcribe_jobs: TranscribeJobs
    accounts: Accounts
    audit: Audit
    copies: Copies
    archive: Archive
    bags: BagMaker
    applications: ApplicationStore
    outbox: Outbox
    """The outbox folder, read by staff; `mailer` is what sends (it may be the outbox)."""
    mailer: Mailer
    delivery: CopyDelivery
    """Sends participants their copy links by themselves once they are due."""
    clipper: Clipper
    waveforms: WaveformLevels
    """The players' waveform levels, made from the access copy for older recordings."""
    captures: Captures
    """The browsers' own recordings of their microphones, uploaded as they go."""
    shared: RecordingStorage | None = None
    """Shared storage (an S3 bucket), when configured; None: local files only."""
    shipper: Shipper | None = None
    """Ships live recordings to `shared` while they are written."""
    fanout: Fanout | None = None
    """Redis between nodes (when configured), else the same messages in this process."""
    staff_feed: StaffFeed | None = None
    """The staff pages' live view of the rooms (Socket.IO namespace /staff)."""


SERVICES = web.AppKey("services", Services)
