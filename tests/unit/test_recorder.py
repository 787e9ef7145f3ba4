"""The recorder's timing-log lines, written on its worker thread."""

from __future__ import annotations

import json

import pytest

from storyroom.recording.recorder import PacketTiming, packet_line


@pytest.mark.parametrize(
    "timing",
    [
        (0, 0, 0.0, 0.0, 960, 960),
        (65536 + 7, (1 << 32) + 480, 1764800123.1234567, 12.3456789, 48_000, 480),
        (3, 4, 1764800123.0, 0.000_000_4, 1_920, 2_880),
        (1, -960, 1e-7, 2400.5, 120, 120),
    ],
)
def test_packet_line_is_the_json_list_it_replaces(timing: PacketTiming) -> None:
    seq, ts, arrival, rec_time, end, samples = timing
    expected = json.dumps([seq, ts, round(arrival, 6), round(rec_time, 6), end, samples])
    line = packet_line(timing)
    assert line == expected
    assert json.loads(line) == [seq, ts, round(arrival, 6), round(rec_time, 6), end, samples]
