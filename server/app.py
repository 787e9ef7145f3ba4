"""The one app factory: `create_app(settings)`, used by the CLI, tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

from storyroom import readiness
from storyroom.archive import catalogue as archive_module
from storyroom.archive import copies as copies_module
from storyroom.archive.bagit import BagMaker
from storyroom.archive.catalogue import Archive
from storyroom.archive.clips import Clipper
from storyroom.archive.copies import Copies
from storyroom.archive.delivery import CopyDelivery
from storyroom.archive.waveforms import WaveformLevels
from storyroom.capture.service import Captures
from storyroom.cluster import store as cluster_module
from storyroom.cluster.leases import Leases, SingleNode
from storyroom.cluster.node import ClusterNode
from storyroom.cluster.store import ClusterStore, Reaped
from storyroom.config import Settings
from storyroom.database import open_database
from storyroom.fanout import Fanout, Message, client_manager
from storyroom.finalize import mp3_encoder
from storyroom.finalize import queue as finalize_queue
from storyroom.finalize.jobs import FinalizeJobs
from storyroom.finalize.mp3_encoder import Mp3Encoder
from storyroom.finalize.queue import FinalizeQueue
from storyroom.matching import partner_invites
from storyroom.matching.outbox import Outbox, mailer
from storyroom.matching.store import TABLES as APPLICATION_TABLES
from storyroom.matching.store import ApplicationStore
from storyroom.media.plane import MediaPlane
from storyroom.recording.recorder import Recorder, mark_interrupted_on_disk
from storyroom.room.rooms import CloseReason, Rooms
from storyroom.room.signaling import Signaling
from storyroom.room.staff_feed import StaffFeed
from storyroom.services import SERVICES, Services
from storyroom.staff import accounts as accounts_module
from storyroom.staff import audit as audit_module
from storyroom.staff.accounts import Accounts, Revocation, SigninFailure
from storyroom.staff.audit import Audit
from storyroom.staff.tokens import TOKEN_FILE, load_or_create_staff_token
from storyroom.status import StopReason
from storyroom.storage.objects import open_s3
from storyroom.storage.recordings import RecordingStorage
from storyroom.storage.shipper import Shipper
from storyroom.store import RecordingRow, Store
from storyroom.transcribe import store as transcripts_module
from storyroom.transcribe.jobs import TranscribeJobs
from storyroom.transcribe.store import TranscriptStore
from storyroom.web.edge import add_http_edge

log = logging.getLogger(__name__)

# Every module's own tables, in the order they are brought up to date.
STORE_MODULES = (
    APPLICATION_TABLES,
    accounts_module.TABLES,
    audit_module.TABLES,
    archive_module.TABLES,
    copies_module.TABLES,
    readiness.TABLES,
    transcripts_module.TABLES,
    partner_invites.TABLES,
    cluster_module.TABLES,
    finalize_queue.MIGRATIONS,
)


def queue_of(settings: Settings) -> FinalizeQueue | None:
    """The PostgreSQL job queue, when finalization is queued there (`queue` setting)."""
    if settings.queue != "postgres":
        return None
    return FinalizeQueue(
        settings.database_url, settings.queue_heartbeat_s, settings.queue_stalled_s
    )


def create_app(settings: Settings) -> web.Application:
    """Build the aiohttp app with Socket.IO attached; services start in cleanup_ctx."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    # this process among the nodes sharing Redis (its connections' names there)
    socket_node = uuid.uuid4().hex[:12]
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=client_manager(settings, socket_node),
        cors_allowed_origins=[settings.base_url],
        # Above this engine.io drops the connection; below it, protocol.check_size answers
        # oversize events with a "too_large" ack and the connection stays.
        max_http_buffer_size=1024 * 1024,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    add_http_edge(app, settings)

    async def services(app: web.Application) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # the shared storage's client, when configured: opened first, closed last
        storage = contextlib.AsyncExitStack()
        shared: RecordingStorage | None = None
        shipper: Shipper | None = None
        if settings.shared_storage:
            objects = await storage.enter_async_context(open_s3(settings))
            shared = RecordingStorage(
                objects, prefix=settings.s3_prefix, url_ttl_s=settings.s3_url_ttl_s
            )
        staff_token, created = load_or_create_staff_token(settings.data_dir, settings.staff_token)
        if created:
            # where it is, never the token itself: logs are kept and shared
            log.warning("generated a staff token, saved in %s", settings.data_dir / TOKEN_FILE)
        store = await Store.open(settings.database, modules=STORE_MODULES)
        jobs_queue = queue_of(settings)
        if jobs_queue is not None:
            # before the first status change: each stop writes its job with it
            store.job_writer = jobs_queue.write_job
        accounts = Accounts(store, settings)
        await accounts.load()
        copies = Copies(store, settings)
        bags = BagMaker()
        node: ClusterNode | None = None
        if settings.database_url:
            # a cluster: the node's own connection, so that its heartbeats and leases
            # never wait behind (or land inside) the store's transactions
            node = ClusterNode(
                settings,
                ClusterStore(
                    await open_database(settings.database_url),
                    jobs_queue.write_job if jobs_queue is not None else None,
                ),
                on_reaped=lambda reaped: reaped_elsewhere(reaped),
                on_lost=lambda lost: lost_rooms(lost),
            )
            # only what this node id left running: other nodes' takes are theirs
            interrupted = await node.rejoin()
        else:
            interrupted = await store.mark_running_interrupted(now=_now())
        leases: Leases = node if node is not None else SingleNode()
        for rec_id in interrupted:
            log.warning(
                "recording %s was running when the server stopped: marked interrupted", rec_id
            )
            mark_interrupted_on_disk(settings.recordings_dir, rec_id)
        _say_mp3_encoder()
        rooms = Rooms(settings, store)
        recorder = Recorder(settings.recordings_dir)
        if shared is not None:
            shipper = Shipper(
                shared.objects,
                settings.recordings_dir,
                lambda: {*recorder.writing(), *captures.receiving()},
                prefix=settings.s3_prefix,
                interval=settings.s3_ship_interval_s,
            )
        media = MediaPlane(settings, subscribers=[recorder])
        sender = mailer(settings)
        delivery = CopyDelivery(store, settings, copies, sender)
        transcribe_jobs = TranscribeJobs(
            store,
            TranscriptStore(store.db),
            settings.recordings_dir,
            settings.data_dir / "models",
            rooms.transcript_updated,
        )

        async def recording_updated(rec: RecordingRow) -> None:
            # transcription queued before the room hears `ready`: whoever sees it also
            # sees the job
            await transcribe_jobs.finalize_updated(rec)
            await rooms.recording_updated(rec)
            await delivery.recording_updated(rec)  # a ready recording's copies go out

        finalize_jobs = FinalizeJobs(
            store,
            settings.recordings_dir,
            recording_updated,
            shared,
            settings.capture_wait_s,
            queue=jobs_queue,
            work=settings.queue_worker,
        )

        async def lost_rooms(session_ids: list[str]) -> None:
            # declared dead while running: the takes are interrupted in the database
            # already; stop writing them, then drop the rooms' connections
            for session_id in session_ids:
                await recorder.let_go(session_id)
            await signaling.let_go(session_ids)

        async def reaped_elsewhere(reaped: Reaped) -> None:
            # a dead node's takes: finalized from shared storage (its disk is gone)
            for session_id in reaped.freed:
                await rooms.forget(session_id, CloseReason.NODE_LOST)
            for rec_id in reaped.interrupted:
                await finalize_jobs.enqueue(rec_id)

        rooms.follow(recorder)
        rooms.follow(finalize_jobs)  # after the recorder: stems are closed first
        signaling = Signaling(sio, settings, store, rooms, media, accounts.tokens, leases)
        fanout = Fanout(settings, sio, socket_node)
        accounts.on_revoked(fanout.publish)  # every node forgets it and hangs up

        async def elsewhere(failure: SigninFailure) -> None:
            await fanout.publish(failure, here=False)  # counted here already

        accounts.on_signin_failure(elsewhere)

        async def staff_message(message: Message) -> None:
            if isinstance(message, Revocation):
                accounts.forget(message)
            elif isinstance(message, SigninFailure):
                accounts.count_failure(message)

        fanout.on_message(staff_message)
        staff_feed = StaffFeed(sio, rooms, accounts, staff_token, fanout)
        captures = Captures(store, settings.recordings_dir)
        captures.on_progress(signaling.capture_progress)
        rooms.on_change(captures.room_changed)  # after signaling: the snapshot goes first
        # a run that completes after its take was finalized: finalized again with it
        captures.on_run_closed(finalize_jobs.capture_arrived)
        app[SERVICES] = Services(
            settings=settings,
            sio=sio,
            store=store,
            rooms=rooms,
            signaling=signaling,
            staff_token=staff_token,
            media=media,
            recorder=recorder,
            finalize_jobs=finalize_jobs,
            accounts=accounts,
            audit=Audit(store),
            copies=copies,
            archive=Archive(store, settings, copies, transcribe_jobs),
            transcribe_jobs=transcribe_jobs,
            bags=bags,
            applications=ApplicationStore(store.db),
            outbox=Outbox(settings.outbox_dir),
            mailer=sender,
            delivery=delivery,
            clipper=Clipper(),
            waveforms=WaveformLevels(settings.recordings_dir),
            captures=captures,
            shared=shared,
            shipper=shipper,
            fanout=fanout,
            staff_feed=staff_feed,
        )
        recorder.start()
        if shipper is not None:
            for rec_id in interrupted:
                # its last seconds (and the `interrupted` line) are only on this disk
                await shipper.resume(rec_id)
            shipper.start()
        media.start()
        signaling.start()
        fanout.start()
        staff_feed.start()
        await delivery.start()
        await finalize_jobs.start()
        await transcribe_jobs.start()
        if node is not None:
            node.start()
        try:
            yield
        finally:
            await transcribe_jobs.close()
            await finalize_jobs.close()
            await delivery.close()
            await asyncio.to_thread(bags.close)
            await signaling.close()
            await staff_feed.close()
            await fanout.close()
            await media.close()
            await recorder.close()
            if shipper is not None:
                await shipper.close()  # after the recorder: its last bytes are on disk
            await rooms.close(CloseReason.SERVER_SHUTDOWN)
            if node is not None:
                await node.close()  # after the rooms: their leases go last
                await node.store.close()
            await store.close()
            await storage.aclose()

    async def on_shutdown(app: web.Application) -> None:
        # SIGTERM (or any orderly stop): live takes end cleanly and every seat hears why,
        # then the connections close, all before the services go away.
        services = app[SERVICES]
        await end_live_takes(services)
        await services.signaling.disconnect_all()
        await sio.shutdown()

    app.cleanup_ctx.append(services)
    app.on_shutdown.append(on_shutdown)
    return app


def _say_mp3_encoder() -> None:
    """At start-up: which encoder will make access copies; a warning for the slower
    fallback, an error when there is none (finalization would fail; /readyz says so)."""
    encoder = mp3_encoder.available()
    if encoder is Mp3Encoder.LAME:
        log.info("MP3 encoder: %s", mp3_encoder.describe(encoder))
    elif encoder is Mp3Encoder.PYAV:
        log.warning("MP3 encoder: %s", mp3_encoder.describe(encoder))
    else:
        log.error("%s: recordings cannot be finalized", mp3_encoder.describe(encoder))


async def end_live_takes(services: Services) -> None:
    """Stop every live take for a restart within `shutdown_grace_s`: stems flushed and
    closed, the take `stopped` with reason `server_restart`, its finalization queued
    (and run at the next start if this process ends first), every seat told. Room events
    are refused from here on. A take that could not be stopped in time is found
    `interrupted` at the next start, as after a crash."""
    services.signaling.refuse_events()
    grace = services.settings.shutdown_grace_s
    try:
        async with asyncio.timeout(grace):
            stopped = await services.rooms.end_live_takes(StopReason.SERVER_RESTART)
    except TimeoutError:
        log.error("shutting down: live takes were not all stopped within %.1f s", grace)
        return
    if stopped:
        log.info("shutting down: %d live take(s) stopped cleanly: %s", len(stopped), stopped)


def _now() -> float:
    import time

    return time.time()
