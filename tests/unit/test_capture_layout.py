"""The capture index as the upload path writes it and the merge reads it."""

import json
from pathlib import Path

import pytest

from storyroom.capture import layout


def write_index(folder: Path, run: int, lines: list[object], torn: str = "") -> None:
    path = layout.run_index(folder, "p1", run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + torn)


OPEN = {"type": "open", "mime": "audio/webm;codecs=opus", "rec_start": 1.5, "server_start": 9.0}


def test_a_run_counts_contiguous_chunks_and_ignores_a_torn_tail(tmp_path: Path) -> None:
    write_index(
        tmp_path,
        1,
        [
            OPEN,
            {"type": "chunk", "seq": 0, "offset": 0, "size": 100},
            {"type": "chunk", "seq": 1, "offset": 100, "size": 50},
        ],
        torn='{"type": "chunk", "se',
    )
    run = layout.read_run(tmp_path, "p1", 1)
    assert run is not None
    assert (run.chunks, run.bytes, run.closed) == (2, 150, False)
    assert run.media == tmp_path / "capture" / "p1" / "01.webm"
    assert run.rec_start == 1.5


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], None),
        ([{"type": "open", "mime": "video/x-flv"}], None),
        ([OPEN, {"type": "chunk", "seq": 1, "offset": 0, "size": 9}], (0, 0, False)),
        ([OPEN, {"type": "chunk", "seq": 0, "offset": 5, "size": 9}], (0, 0, False)),
        ([OPEN, {"type": "close"}], (0, 0, True)),
        (["garbage", 7, OPEN], (0, 0, False)),
    ],
)
def test_bad_index_lines_are_refused_not_trusted(
    tmp_path: Path, lines: list[object], expected: tuple[int, int, bool] | None
) -> None:
    write_index(tmp_path, 1, lines)
    run = layout.read_run(tmp_path, "p1", 1)
    assert (None if run is None else (run.chunks, run.bytes, run.closed)) == expected


def test_runs_are_listed_in_order_per_seat(tmp_path: Path) -> None:
    assert layout.read_runs(tmp_path, "p1") == []
    for run in (2, 1, 10):
        write_index(tmp_path, run, [OPEN])
    assert [r.run for r in layout.read_runs(tmp_path, "p1")] == [1, 2, 10]
    assert layout.captured_seats(tmp_path) == ["p1"]
    assert layout.container_suffix("audio/mp4; codecs=opus") == ".mp4"
    with pytest.raises(ValueError, match="unsupported"):
        layout.run_media(tmp_path, "p1", 1, "text/html")
