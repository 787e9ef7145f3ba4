"""A finalized set replaced as a whole: a finalization run again (a browser capture that
arrived late) that crashes while moving its new files into place leaves a journal, and
the next run's first step completes the new set; a journal that is not ours is refused
and moves nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from storyroom.finalize import outputs
from storyroom.finalize.contracts import FinalizeError
from storyroom.recording import layout

OLD = {"master.wav": b"old master", "stems/a.flac": b"old a", "stems/c.flac": b"old c"}
NEW = {"master.wav": b"new master", "stems/a.flac": b"new a", "stems/b.flac": b"new b"}


def folder_with_old_set(root: Path) -> dict[str, Path]:
    """`root` holding the old set and its manifest, and the new set as `.part` files."""
    (root / layout.STEMS).mkdir(parents=True)
    old = [_write(root, name, data) for name, data in OLD.items()]
    outputs.write_manifest(root, old)
    temp = {}
    for name, data in NEW.items():
        temp[name] = root / (name + layout.PART_SUFFIX)
        temp[name].write_bytes(data)
    return temp


def _write(root: Path, name: str, data: bytes) -> outputs.FinalizedFile:
    (root / name).write_bytes(data)
    return outputs.file_entry(root, name)


def manifest(root: Path) -> dict[str, str]:
    lines = (root / layout.MANIFEST).read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


def assert_new_set(root: Path) -> None:
    for name, data in NEW.items():
        assert (root / name).read_bytes() == data, name
        assert not (root / (name + layout.PART_SUFFIX)).exists()
    assert not (root / "stems/c.flac").exists()  # a stale stem of the old set
    assert manifest(root) == {name: hashlib.sha256(d).hexdigest() for name, d in NEW.items()}
    assert not (root / outputs.PUBLISHING).exists()


def test_publish_replaces_the_set(tmp_path: Path) -> None:
    temp = folder_with_old_set(tmp_path)
    files = [outputs.file_entry(tmp_path, name, path) for name, path in temp.items()]
    entry = outputs.publish(tmp_path, temp, files)
    assert entry.name == layout.MANIFEST
    assert_new_set(tmp_path)
    assert outputs.finish_publishing(tmp_path) is False  # nothing left to do


@pytest.mark.parametrize("moves_done", [0, 1, 2, 3])
def test_a_crash_while_moving_leaves_a_journal_the_next_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moves_done: int
) -> None:
    temp = folder_with_old_set(tmp_path)
    files = [outputs.file_entry(tmp_path, name, path) for name, path in temp.items()]
    real_replace = os.replace
    done = 0

    def crashing_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        nonlocal done
        if Path(dst).name != outputs.PUBLISHING:
            if done == moves_done:
                raise OSError("the process died here")
            done += 1
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="died"):
        outputs.publish(tmp_path, temp, files)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / outputs.PUBLISHING).exists()
    # a mix of the two versions until the next run's first step
    assert outputs.finish_publishing(tmp_path) is True
    assert_new_set(tmp_path)


@pytest.mark.parametrize(
    ("journal", "message"),
    [
        ("{not json", "cannot be read"),
        ("[]", "cannot be read"),
        (json.dumps({"moves": {}, "stale": []}), "cannot be read"),
        (
            json.dumps({"moves": {"../outside": "x.part"}, "stale": [], "manifest": ""}),
            "outside the recording",
        ),
        (
            json.dumps({"moves": {"master.wav": "/etc/passwd"}, "stale": [], "manifest": ""}),
            "outside the recording",
        ),
        (
            json.dumps({"moves": {}, "stale": ["stems/../../x"], "manifest": ""}),
            "outside the recording",
        ),
    ],
)
def test_a_journal_that_is_not_ours_is_refused_and_moves_nothing(
    tmp_path: Path, journal: str, message: str
) -> None:
    folder_with_old_set(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / outputs.PUBLISHING).write_text(journal)
    with pytest.raises(FinalizeError, match=message):
        outputs.finish_publishing(tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    del after[tmp_path / outputs.PUBLISHING]
    assert after == before
