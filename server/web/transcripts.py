"""HTTP routes of transcripts, for staff: a recording's transcript and its status, and
correcting a turn (written to the audit log). The files themselves are downloaded like
every other file of the recording; searching by words said is the recordings list's
`said` filter."""

from __future__ import annotations

from aiohttp import web

from storyroom.staff.accounts import StaffIdentity
from storyroom.store import RecordingRow
from storyroom.transcribe.protocol import parse_correction, parse_turn
from storyroom.web.middleware import read_json
from storyroom.web.recordings import RECORDING
from storyroom.web.routes import RouteGroup, Routes, lookup


class TranscriptRoutes(RouteGroup):
    async def _recording(self, request: web.Request, who: StaffIdentity) -> RecordingRow:
        return await lookup(request, who, "recording", self.services.store.get_recording)

    async def get_transcript(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        jobs = self.services.transcribe_jobs
        state = await jobs.transcripts.state(rec.id)
        transcript = await jobs.transcript(rec)
        return web.json_response(
            {
                "status": state.to_json() if state is not None else None,
                "transcript": transcript.to_json() if transcript is not None else None,
            }
        )

    async def correct_turn(self, request: web.Request, who: StaffIdentity) -> web.Response:
        rec = await self._recording(request, who)
        turn = parse_turn(request.match_info["turn"])
        change = parse_correction(await read_json(request))
        transcript = await self.services.transcribe_jobs.correct(rec, turn, change.text, who.actor)
        await self.audit(request, who, "transcript_corrected", rec.id, {"turn": turn})
        return web.json_response({"transcript": transcript.to_json()})

    def routes(self) -> Routes:
        routes = Routes()
        routes.staff("GET", f"{RECORDING}/transcript", self.get_transcript)
        routes.staff("PUT", f"{RECORDING}/transcript/turns/{{turn}}", self.correct_turn)
        return routes
