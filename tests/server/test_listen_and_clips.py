"""Listening in public and clips to share, over HTTP on a real finalized recording: the
public list, audio and waveform only while both participants agree (withdrawal takes it
away at once) and nothing else about the people; clips with the right length and fades,
measured on the decoded audio; bad ranges, non-public recordings and wrong people
refused."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from storyroom.archive.clips import FADE_S
from support.archive import Finished, issue_copy_links
from support.server import RunningServer, bio
from support.staff import StaffBrowser, cookie_session


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float samples of an encoded clip, and its rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        frames = [
            f.to_ndarray().reshape(len(f.layout.channels), -1) for f in container.decode(stream)
        ]
    samples = np.concatenate(frames, axis=1).astype(np.float64)
    return samples.mean(axis=0), rate


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


async def public_state(http: aiohttp.ClientSession, url: str, rec_id: str) -> tuple[Any, int, int]:
    listed = await (await http.get(f"{url}/api/public/recordings")).json()
    statuses = []
    for what in ("audio", "waveform"):
        # read to the end, so the connection goes back to the pool (not to the collector)
        async with http.get(f"{url}/api/public/recordings/{rec_id}/{what}") as resp:
            await resp.read()
            statuses.append(resp.status)
    return listed["recordings"], statuses[0], statuses[1]


async def test_public_only_while_both_agree(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rec_id = finished.recording_id
    await staff.call(
        "PUT",
        f"/api/sessions/{finished.session_id}/contacts/a",
        {"email": "rosa.private@example.org", "language": "es"},
    )
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    access = next(f for f in rec["files"] if f["kind"] == "access")
    async with aiohttp.ClientSession() as http:
        listed, audio, waveform = await public_state(http, archive.url, rec_id)
        assert (audio, waveform) == (200, 200)
        [shown] = listed
        assert shown["people"] == [
            {"name": "Rosa", "bio": bio("a")},
            {"name": "Dale", "bio": bio("b")},
        ]
        assert [c["title"] for c in shown["chapters"]]  # the cued questions
        text = json.dumps(shown)
        for private in ("rosa.private@example.org", finished.session_id, "facilitator"):
            assert private not in text
        resp = await http.get(f"{archive.url}{shown['audio_url']}", headers={"Range": "bytes=0-99"})
        assert resp.status == 206 and len(await resp.read()) == 100
        resp = await http.get(f"{archive.url}{shown['audio_url']}")
        assert len(await resp.read()) == access["bytes"]
        levels = await (await http.get(f"{archive.url}{shown['waveform_url']}")).json()
        assert levels["version"] == 1 and len(levels["levels"]) == 1000
        assert 0 < max(levels["levels"]) <= 100
        assert abs(levels["duration_s"] - shown["duration_s"]) < 0.01

        # Dale withdraws: gone at once, list, audio and waveform
        body = {"seat": "b", "public": False, "note": "changed his mind"}
        await staff.call("PUT", f"/api/recordings/{rec_id}/consent", body)
        assert await public_state(http, archive.url, rec_id) == ([], 404, 404)
        # and agrees again: back
        body = {"seat": "b", "public": True, "note": "agreed again"}
        await staff.call("PUT", f"/api/recordings/{rec_id}/consent", body)
        listed, audio, waveform = await public_state(http, archive.url, rec_id)
        assert [r["id"] for r in listed] == [rec_id] and (audio, waveform) == (200, 200)
        resp = await http.get(f"{archive.url}/api/public/recordings/rec_nope/audio")
        assert resp.status == 404


async def test_a_clip_has_the_length_and_fades_asked_for(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rec_id = finished.recording_id
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    start, end = 0.6, min(2.6, rec["duration_s"] - 0.2)
    resp = await staff.http.post(
        f"{archive.url}/api/recordings/{rec_id}/clip",
        json={"start_s": start, "end_s": end},
        headers=staff.headers(),
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "audio/mpeg"
    assert "attachment" in resp.headers["Content-Disposition"]
    samples, rate = decode(await resp.read())
    assert abs(len(samples) / rate - (end - start)) < 0.03
    fade = int(FADE_S * rate)
    steady = rms(samples[fade : len(samples) - fade])
    assert steady > 0.01  # the tones are there
    edge = int(0.02 * rate)
    assert rms(samples[:edge]) < 0.1 * steady
    assert rms(samples[-edge:]) < 0.1 * steady
    # a linear ramp: half way through each fade, about half the level
    mid_in = samples[fade // 2 - edge // 2 : fade // 2 + edge // 2]
    mid_out = samples[len(samples) - fade // 2 - edge // 2 : len(samples) - fade // 2 + edge // 2]
    assert 0.3 < rms(mid_in) / steady < 0.7
    assert 0.3 < rms(mid_out) / steady < 0.7
    entry = (await staff.call("GET", "/api/audit"))["entries"][0]
    assert entry["action"] == "clip" and entry["target"] == rec_id


async def test_a_participant_clips_only_a_public_conversation(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rosa, _ = await issue_copy_links(staff, finished.recording_id)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {rosa['token']}"}
        clip = {"start_s": 0.5, "end_s": 2.0}
        resp = await http.post(f"{archive.url}/api/copy/clip", json=clip, headers=headers)
        assert resp.status == 200
        samples, rate = decode(await resp.read())
        assert abs(len(samples) / rate - 1.5) < 0.03
        body = {"seat": "a", "public": False, "note": "no"}
        await staff.call("PUT", f"/api/recordings/{finished.recording_id}/consent", body)
        resp = await http.post(f"{archive.url}/api/copy/clip", json=clip, headers=headers)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "not_public"


BAD_RANGES: list[tuple[Any, int, str]] = [
    ({"start_s": -1, "end_s": 1}, 400, "out_of_range"),
    ({"start_s": 0.5, "end_s": 60}, 400, "out_of_range"),
    ({"start_s": 0, "end_s": 181}, 400, "clip_too_long"),
    ({"start_s": 2, "end_s": 1}, 400, "invalid_range"),
    ({"start_s": 1, "end_s": 1}, 400, "invalid_range"),
    ({"start_s": 0, "end_s": 0.5}, 400, "clip_too_short"),
    ({"start_s": "0", "end_s": 1.5}, 400, "invalid_type"),
    ({"start_s": 0, "end_s": "two"}, 400, "invalid_type"),
    ({"start_s": True, "end_s": 1.5}, 400, "invalid_type"),
    ({"start_s": None, "end_s": 1.5}, 400, "invalid_type"),
    ({"start_s": 0}, 400, "missing_field"),
    ({"start_s": 0, "end_s": 1.5, "fade_s": 3}, 400, "unknown_field"),
    ([0, 1.5], 400, "invalid_type"),
    ("NaN", 400, "invalid_value"),
]


def _raw(body: Any) -> bytes:
    if body == "NaN":
        return b'{"start_s": NaN, "end_s": 1.5}'
    return json.dumps(body).encode()


@pytest.mark.parametrize(("body", "status", "code"), BAD_RANGES)
async def test_bad_clip_ranges_are_refused(
    archive: RunningServer,
    staff: StaffBrowser,
    finished: Finished,
    body: Any,
    status: int,
    code: str,
) -> None:
    rosa, _ = await issue_copy_links(staff, finished.recording_id)
    json_type = {"Content-Type": "application/json"}
    targets = [
        (f"/api/recordings/{finished.recording_id}/clip", staff.headers()),
        ("/api/copy/clip", {"Authorization": f"Bearer {rosa['token']}"}),
    ]
    for path, headers in targets:
        resp = await staff.http.post(
            archive.url + path, data=_raw(body), headers={**headers, **json_type}
        )
        assert resp.status == status, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == code, path


async def test_clips_from_the_wrong_person_are_refused(
    archive: RunningServer, staff: StaffBrowser, finished: Finished
) -> None:
    rosa, dale = await issue_copy_links(staff, finished.recording_id)
    await staff.call("POST", f"/api/copies/{dale['id']}/revoke")
    clip = {"start_s": 0.5, "end_s": 2.0}
    cases: list[tuple[str, dict[str, str], int, str | None]] = [
        ("/api/copy/clip", {}, 401, "link_missing"),
        ("/api/copy/clip", {"Authorization": "Bearer " + "x" * 32}, 401, "link_invalid"),
        ("/api/copy/clip", {"Authorization": f"Bearer {dale['token']}"}, 401, "link_revoked"),
        ("/api/copy/clip", {"Authorization": "Basic " + rosa["token"]}, 401, "link_missing"),
        # a participant's link is not a staff credential
        (
            f"/api/recordings/{finished.recording_id}/clip",
            {"Authorization": f"Bearer {rosa['token']}"},
            401,
            None,
        ),
        (f"/api/recordings/{finished.recording_id}/clip", {}, 401, None),
    ]
    async with cookie_session() as http:
        for path, headers, status, code in cases:
            resp = await http.post(archive.url + path, json=clip, headers=headers)
            assert resp.status == status, (path, headers)
            if code is not None:
                assert (await resp.json())["error"]["code"] == code
        # the copy cookie reads, but cannot cut or change anything
        await http.get(
            f"{archive.url}/api/copy", headers={"Authorization": f"Bearer {rosa['token']}"}
        )
        async with http.get(f"{archive.url}/api/copy/waveform") as resp:
            assert resp.status == 200 and (await resp.json())["version"] == 1
        resp = await http.post(f"{archive.url}/api/copy/clip", json=clip)
        assert resp.status == 401
    missing = await staff.call("POST", "/api/recordings/rec_nope/clip", clip, expect=404)
    assert missing["error"]["code"] == "not_found"
