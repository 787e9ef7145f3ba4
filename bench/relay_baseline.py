"""The transcoding relay that storyroom's media plane is measured against.

A minimal server speaking the same seat contract as storyroom (Socket.IO with
``auth={"token": ...}``, ``rtc:offer`` answered by an ack with ``answer`` and
``mids``; an offer has the microphone first and two receive-only audio lines), but
relaying audio the way aiortc's examples do: each seat's received track goes through
``aiortc.contrib.media.MediaRelay`` into the other seats' peer connections, so aiortc
decodes every received stream and encodes it again for every receiver.

It does not record: ``consent`` and ``recording:*`` are acknowledged and ignored.
A token is ``"<room>:<seat>"``; there are no sessions, no database, no snapshots.

    python bench/relay_baseline.py --host 127.0.0.1 --port 8090
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from storyroom.media.aiortc_internals import restrict_host_addresses

log = logging.getLogger("relay_baseline")

SEATS = ("a", "b", "facilitator")


@dataclass
class SeatPeer:
    """One seat's peer connection: what it sends us, and a sender per other seat."""

    sid: str
    pc: RTCPeerConnection
    voice: MediaStreamTrack
    """The seat's microphone as aiortc decodes it."""
    senders: dict[str, RTCRtpSender]
    """Other seat → the sender on the transceiver the answer gave that seat."""


class Relay:
    """Rooms of up to three seats, each hearing the others through MediaRelay."""

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.rooms: dict[str, dict[str, SeatPeer]] = {}
        self.conns: dict[str, tuple[str, str]] = {}

    async def offer(self, sid: str, payload: Any) -> dict[str, Any]:
        room_id, seat = self.conns[sid]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=str(payload["sdp"]), type="offer")
            )
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if len(audio) != 3:
                raise ValueError("the offer must have three audio lines")
            mic, *receive = audio
            mic.direction = "recvonly"
            others = [s for s in SEATS if s != seat]
            for transceiver in receive:
                transceiver.direction = "sendonly"
            peer = SeatPeer(
                sid,
                pc,
                mic.receiver.track,
                {o: t.sender for o, t in zip(others, receive, strict=True)},
            )
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await pc.close()
            raise
        room = self.rooms.setdefault(room_id, {})
        previous = room.get(seat)
        room[seat] = peer
        if previous is not None:
            await previous.pc.close()
        # Every pair hears each other through a decode → re-encode relay.
        for other, other_peer in room.items():
            if other != seat:
                peer.senders[other].replaceTrack(self.relay.subscribe(other_peer.voice))
                other_peer.senders[seat].replaceTrack(self.relay.subscribe(peer.voice))
        assert pc.localDescription is not None
        mids = {t.mid: o for o, t in zip(others, receive, strict=True) if t.mid is not None}
        return {
            "ok": True,
            "answer": {"sdp": pc.localDescription.sdp, "type": "answer"},
            "mids": mids,
        }

    async def leave(self, sid: str) -> None:
        room_id, seat = self.conns.pop(sid, ("", ""))
        room = self.rooms.get(room_id, {})
        peer = room.get(seat)
        if peer is not None and peer.sid == sid:
            del room[seat]
            for other_peer in room.values():
                other_peer.senders[seat].replaceTrack(None)
            await peer.pc.close()

    async def close(self) -> None:
        for room in self.rooms.values():
            for peer in room.values():
                await peer.pc.close()
        self.rooms.clear()


def create_app() -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[])
    app = web.Application()
    sio.attach(app)
    relay = Relay()

    @sio.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        room_id, _, seat = str(token or "").partition(":")
        if not room_id or seat not in SEATS:
            raise socketio.exceptions.ConnectionRefusedError("token must be <room>:<seat>")
        relay.conns[sid] = (room_id, seat)

    @sio.on("disconnect")
    async def disconnect(sid: str, reason: Any = None) -> None:
        await relay.leave(sid)

    @sio.on("rtc:offer")
    async def rtc_offer(sid: str, payload: Any = None) -> dict[str, Any]:
        try:
            return await relay.offer(sid, payload)
        except Exception as exc:
            log.warning("offer from %s refused: %s", sid, exc)
            return {"ok": False, "error": {"code": "sdp_invalid", "message": str(exc)}}

    async def acknowledged(sid: str, payload: Any = None) -> dict[str, Any]:
        return {"ok": True, "recording": None}  # no recording in the baseline

    for event in ("consent", "recording:start", "recording:stop"):
        sio.on(event, acknowledged)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)

    async def on_shutdown(app: web.Application) -> None:
        await relay.close()
        with contextlib.suppress(Exception):
            await sio.shutdown()

    app.on_shutdown.append(on_shutdown)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    print(f"relay-baseline: serving on http://{args.host}:{args.port}", flush=True)
    restrict_host_addresses(["127.0.0.1"])
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
