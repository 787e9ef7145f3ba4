"""BagIt export of a real finalized recording: from the staff API (a tar download) and from
`storyroom recording export-bag`, validated with bagit-python; refused without both
participants' consent to archiving."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import bagit
import pytest

from storyroom.__main__ import main
from storyroom.archive.bagit import validate_bag
from storyroom.recording import layout
from support.archive import TITLE, Finished, copy_of
from support.server import RunningServer
from support.staff import StaffBrowser

# (setting, bag-info.txt tag, value)
ORGANIZATION = [
    ("bag_source_organization", "Source-Organization", "Library of Voices"),
    ("bag_organization_address", "Organization-Address", "1 Archive Way, Springfield"),
    ("bag_contact_name", "Contact-Name", "Ada Archivist"),
    ("bag_contact_email", "Contact-Email", "ada@example.org"),
    ("bag_contact_phone", "Contact-Phone", "+1 555 0100"),
]
SETTINGS = {setting: value for setting, _, value in ORGANIZATION}


@pytest.fixture
def archive_settings() -> dict[str, Any]:
    return SETTINGS


def check_bag(bag_dir: Path, finished: Finished, files: dict[str, str]) -> bagit.Bag:
    bag = bagit.Bag(str(bag_dir))
    bag.validate()
    assert set(bag.algorithms) == {"sha256", "sha512"}
    assert (bag_dir / "manifest-sha256.txt").is_file()
    assert (bag_dir / "manifest-sha512.txt").is_file()
    assert (bag_dir / "tagmanifest-sha512.txt").is_file()
    info = bag.info
    assert {tag: info[tag] for _, tag, _ in ORGANIZATION} == {
        tag: value for _, tag, value in ORGANIZATION
    }
    assert info["External-Identifier"] == finished.recording_id
    assert info["Bag-Group-Identifier"] == finished.session_id
    assert info["External-Description"].startswith(f"{TITLE}.")
    assert "in English" in info["External-Description"]
    assert info["Bagging-Date"]
    payload = {name.removeprefix("data/") for name in bag.payload_files()}
    assert payload == {*files, "storyroom-catalogue.json"}
    for name, sha256 in files.items():
        digest = hashlib.sha256((bag_dir / "data" / name).read_bytes()).hexdigest()
        assert digest == sha256, name
    return bag


async def test_staff_export_and_download(
    staff: StaffBrowser, archive: RunningServer, finished: Finished, tmp_path: Path
) -> None:
    rec_id = finished.recording_id
    await staff.call(
        "PATCH", f"/api/recordings/{rec_id}/metadata", {"keywords": ["faith", "family"]}
    )
    export = (await staff.call("POST", f"/api/recordings/{rec_id}/exports", expect=201))["export"]
    assert export["files"] > 10 and export["url"] == f"/api/exports/{export['id']}/bag.tar"
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    assert [e["id"] for e in rec["exports"]] == [export["id"]]
    async with staff.http.get(staff.url + export["url"]) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-tar"
        body = await resp.read()
        assert len(body) == int(resp.headers["Content-Length"])
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    bag_dir = tmp_path / "out" / f"{rec_id}-bag"
    files = {f["name"]: f["sha256"] for f in rec["files"]}
    bag = check_bag(bag_dir, finished, files)
    assert "Keywords: faith, family." in bag.info["External-Description"]
    catalogue = (bag_dir / "data" / "storyroom-catalogue.json").read_text("utf-8")
    assert '"faith"' in catalogue and '"Rosa"' in catalogue and "consent_history" in catalogue
    actions = [e["action"] for e in (await staff.call("GET", "/api/audit"))["entries"]]
    assert actions[:3] == ["download", "export", "edit"]
    # a bag is a snapshot: hard links, so no second copy of the audio on the server
    master = archive.settings.data_dir / "exports" / export["id"] / rec_id / "data" / "master.wav"
    assert master.stat().st_nlink == 2


async def test_no_bag_without_both_consents_to_archiving(
    staff: StaffBrowser, archive: RunningServer, finished: Finished
) -> None:
    rec_id = finished.recording_id
    export = (await staff.call("POST", f"/api/recordings/{rec_id}/exports", expect=201))["export"]
    # Dale withdraws his archive consent: the prepared bag goes, new ones are refused
    await staff.call(
        "PUT",
        f"/api/recordings/{rec_id}/consent",
        {"seat": "b", "archive": False, "note": "letter of 2 June"},
    )
    assert not (archive.settings.data_dir / "exports" / export["id"]).exists()
    await staff.call("GET", export["url"], expect=404)
    refused = await staff.call("POST", f"/api/recordings/{rec_id}/exports", expect=409)
    assert refused["error"]["code"] == "no_archive_consent"
    assert (
        await asyncio.to_thread(
            main,
            [
                "recording",
                "export-bag",
                rec_id,
                str(archive.settings.data_dir / "x"),
                "--data-dir",
                str(archive.settings.data_dir),
            ],
        )
        == 2
    )
    listed = (await staff.call("GET", "/api/recordings?consent=archive"))["recordings"]
    assert listed == []
    rec = await staff.call("GET", f"/api/recordings/{rec_id}")
    assert rec["exports"][0]["removed_reason"] == "archive consent withdrawn"
    assert rec["exports"][0]["url"] is None


def test_export_bag_command(
    finished: Finished,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = copy_of(finished, tmp_path / "data")
    for name, value in SETTINGS.items():
        monkeypatch.setenv(f"STORYROOM_{name.upper()}", value)
    dest = tmp_path / "bags"
    dest.mkdir()
    argv = ["recording", "export-bag", finished.recording_id, str(dest), "--data-dir", str(data)]
    assert main(argv) == 0
    assert "made and validated" in capsys.readouterr().out
    bag_dir = dest / finished.recording_id
    result = json.loads((data / "recordings" / finished.recording_id / "metadata.json").read_text())
    files = {f["name"]: f["sha256"] for f in result["files"]}
    files["metadata.json"] = hashlib.sha256(
        (data / "recordings" / finished.recording_id / "metadata.json").read_bytes()
    ).hexdigest()
    files["manifest-sha256.txt"] = hashlib.sha256(
        (data / "recordings" / finished.recording_id / "manifest-sha256.txt").read_bytes()
    ).hexdigest()
    # the transcript, made after metadata.json, is in the bag too
    for name in layout.TRANSCRIPT_FILES:
        path = data / "recordings" / finished.recording_id / name
        files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    check_bag(bag_dir, finished, files)
    # the same destination again: refused, nothing overwritten
    assert main(argv) == 2
    assert (
        main(["recording", "export-bag", "rec_nope", str(tmp_path / "y"), "--data-dir", str(data)])
        == 2
    )
    # a bag that lost a byte no longer validates
    (bag_dir / "data" / "chapters.vtt").write_text("changed", encoding="utf-8")
    with pytest.raises(bagit.BagValidationError):
        validate_bag(bag_dir)
