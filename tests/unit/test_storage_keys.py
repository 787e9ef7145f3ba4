"""Object names of shared storage, and which raw objects give a file back: every range
is read once, overlaps (an upload repeated after a lost answer) are taken once, and a
file stops at the first hole."""

from __future__ import annotations

import pytest

from storyroom.storage.keys import RawRange, final_key, parse_raw_key, raw_key
from storyroom.storage.recordings import contiguous_ranges

REC = "r_0123456789abcdef"


@pytest.mark.parametrize("prefix", ["", "storyroom/", "a/b-c_d./"])
@pytest.mark.parametrize("file", ["recording.jsonl", "stems/a-01.opus", "stems/b-12.timing.jsonl"])
def test_raw_keys_round_trip_and_sort_in_byte_order(prefix: str, file: str) -> None:
    parts = [RawRange(file, 0, 9), RawRange(file, 9, 10), RawRange(file, 10, 123_456_789)]
    keys = [raw_key(prefix, REC, p) for p in parts]
    assert sorted(keys) == keys  # listing order is byte order
    assert [parse_raw_key(prefix, REC, k) for k in keys] == parts
    assert keys[0] == f"{prefix}recordings/{REC}/raw/{file}/000000000000-000000000009"


@pytest.mark.parametrize(
    "key",
    [
        f"recordings/{REC}/raw/stems/a-01.opus",  # no range
        f"recordings/{REC}/raw/stems/a-01.opus/12-34",  # not zero-padded
        f"recordings/{REC}/raw/stems/a-01.opus/000000000009-000000000009",  # empty
        f"recordings/{REC}/raw/stems/a-01.opus/000000000010-000000000009",  # backwards
        f"recordings/{REC}/raw/../x/000000000000-000000000009",  # climbs out
        f"recordings/{REC}/raw/000000000000-000000000009",  # no file
        "recordings/other/raw/stems/a-01.opus/000000000000-000000000009",  # other recording
        f"recordings/{REC}/final/master.wav",
    ],
)
def test_keys_that_are_not_raw_ranges_are_refused(key: str) -> None:
    assert parse_raw_key("", REC, key) is None


def test_final_key() -> None:
    assert final_key("p/", REC, "stems/a.flac") == f"p/recordings/{REC}/final/stems/a.flac"


def _r(first: int, end: int) -> RawRange:
    return RawRange("f", first, end)


@pytest.mark.parametrize(
    ("parts", "chosen", "holes"),
    [
        ([], [], 0),
        ([_r(0, 5)], [(0, 5)], 0),
        ([_r(5, 9), _r(0, 5)], [(0, 5), (5, 9)], 0),  # any listing order
        ([_r(0, 5), _r(0, 8), _r(5, 9)], [(0, 8), (5, 9)], 0),  # a repeated upload, longer
        ([_r(0, 5), _r(0, 5), _r(5, 6)], [(0, 5), (5, 6)], 0),  # the same range twice
        ([_r(0, 5), _r(3, 7), _r(7, 9)], [(0, 5), (3, 7), (7, 9)], 0),  # overlapping
        ([_r(0, 5), _r(6, 9)], [(0, 5)], 1),  # a range never shipped: stop there
        ([_r(1, 5)], [], 1),  # the start is missing
    ],
)
def test_the_objects_that_give_a_file_back(
    parts: list[RawRange], chosen: list[tuple[int, int]], holes: int
) -> None:
    found, found_holes = contiguous_ranges(parts)
    assert [(p.first, p.end) for p in found] == chosen
    assert found_holes == holes
