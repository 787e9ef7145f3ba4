"""Merging the voices into one conversation: each voice's words are cut into stretches
at its pauses, the stretches of all voices are put in time order, and neighbours by the
same speaker join into one turn. No speaker guessing: every voice had its own track."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from storyroom.transcribe.contracts import Turn, VoiceTranscript, Word

PAUSE_S: Final = 1.5
"""A voice silent this long ends its stretch (another voice may come in between)."""


def _stretches(voice: VoiceTranscript) -> list[tuple[str, tuple[Word, ...]]]:
    out: list[tuple[str, tuple[Word, ...]]] = []
    current: list[Word] = []
    for word in voice.words:
        if current and word.start - current[-1].end > PAUSE_S:
            out.append((voice.seat, tuple(current)))
            current = []
        current.append(word)
    if current:
        out.append((voice.seat, tuple(current)))
    return out


def merge(voices: Iterable[VoiceTranscript], names: Mapping[str, str]) -> tuple[Turn, ...]:
    """The conversation's turns in time order, each labelled with the seat's first name."""
    stretches = sorted(
        (s for voice in voices for s in _stretches(voice)), key=lambda s: (s[1][0].start, s[0])
    )
    merged: list[tuple[str, list[Word]]] = []
    for seat, words in stretches:
        if merged and merged[-1][0] == seat:
            merged[-1][1].extend(words)
        else:
            merged.append((seat, list(words)))
    return tuple(
        Turn(
            index=i,
            seat=seat,
            name=names.get(seat, seat),
            start=words[0].start,
            end=max(w.end for w in words),
            words=tuple(words),
        )
        for i, (seat, words) in enumerate(merged)
    )
