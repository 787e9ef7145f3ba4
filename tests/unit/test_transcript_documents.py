"""Turns from voices, and the transcript's files: merging by time, captions, text."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from storyroom.transcribe import documents
from storyroom.transcribe.contracts import (
    Correction,
    ModelInfo,
    Transcript,
    VoiceTranscript,
    Word,
)
from storyroom.transcribe.turns import PAUSE_S, merge

NAMES = {"a": "Rosa", "b": "Dale", "facilitator": "Sam"}


def said(seat: str, *timed: tuple[float, str]) -> VoiceTranscript:
    return VoiceTranscript(
        seat, tuple(Word(t, t + 0.3, text, 0.9) for t, text in timed), cpu_s=0.0, speech_s=0.0
    )


def test_voices_merge_into_turns_by_time_with_first_names() -> None:
    turns = merge(
        [
            said("a", (0.0, "hello"), (0.4, "there"), (5.0, "and"), (5.4, "you")),
            said("b", (1.5, "hi"), (1.9, "Rosa")),
            said("facilitator"),
        ],
        NAMES,
    )
    assert [(t.seat, t.name, t.machine_text) for t in turns] == [
        ("a", "Rosa", "hello there"),
        ("b", "Dale", "hi Rosa"),
        ("a", "Rosa", "and you"),
    ]
    assert [t.index for t in turns] == [0, 1, 2]
    assert (turns[0].start, turns[0].end) == (0.0, 0.7)


def test_a_pause_alone_does_not_split_a_turn() -> None:
    turns = merge([said("a", (0.0, "one"), (0.3 + PAUSE_S + 1, "two"))], NAMES)
    assert [t.machine_text for t in turns] == ["one two"]


def transcript() -> Transcript:
    turns = merge([said("a", (0.0, "a<b>&c"), (61.0, "later")), said("b", (2.0, "yes"))], NAMES)
    return Transcript("rec_1", "en", ModelInfo("whisper-base", "1", "x"), turns, 0.0, NAMES)


def test_captions_name_the_speaker_and_escape_markup() -> None:
    vtt = documents.vtt(transcript())
    assert vtt.startswith("WEBVTT\n")
    assert "00:00:00.000 --> 00:00:00.300\n<v Rosa>a&lt;b&gt;&amp;c" in vtt
    assert "00:00:02.000 --> 00:00:02.300\n<v Dale>yes" in vtt
    assert "00:01:01.000 --> 00:01:01.300\n<v Rosa>later" in vtt


def test_files_round_trip_with_a_correction(tmp_path: Path) -> None:
    base = transcript()
    fixed = replace(base.turns[1], correction=Correction("Yes.", "ana@example.org", 5.0))
    corrected = Transcript(
        base.recording_id, "en", base.model, (base.turns[0], fixed, *base.turns[2:]), 0.0, NAMES
    )
    assert documents.write(tmp_path, corrected) == list(documents.NAMES)
    back = documents.read(tmp_path)
    assert back == corrected
    text = (tmp_path / "transcript.txt").read_text()
    assert "[00:00:02] Dale (b) [corrected]:\nYes." in text
    assert back.to_json()["notice"] == "machine transcript, corrected by staff where marked"
    documents.remove(tmp_path)
    assert documents.read(tmp_path) is None and not list(tmp_path.iterdir())
