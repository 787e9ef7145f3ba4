"""The transcript's files in a recording's folder, the one module that writes them:
`transcript.json` (everything, words included), `transcript.vtt` (captions with the
speaker's name as a WebVTT voice) and `transcript.txt` (readable, with times).
Written under a `.part` name and renamed, so a reader never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

from storyroom.recording import layout
from storyroom.recording.layout import TRANSCRIPT_JSON, TRANSCRIPT_TXT, TRANSCRIPT_VTT
from storyroom.transcribe.contracts import Transcript, Turn

NAMES: Final = layout.TRANSCRIPT_FILES
CUE_MAX_S: Final = 7.0
"""A caption shows at most this long (a long turn is cut into several cues)."""
CUE_MAX_WORDS: Final = 16


def clock(seconds: float, vtt: bool = True) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}" if vtt else f"{h:02d}:{m:02d}:{s:02d}"


def _vtt_text(text: str) -> str:
    # WebVTT cue text: '&', '<' and '>' are markup; '-->' would end the cue timing line
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cues(turn: Turn) -> list[tuple[float, float, str]]:
    """A turn as captions: its words in groups, or its corrected text as one cue."""
    if turn.correction is not None or not turn.words:
        return [(turn.start, turn.end, turn.text)]
    cues: list[tuple[float, float, str]] = []
    group: list[str] = []
    start = turn.words[0].start
    end = start
    for word in turn.words:
        if group and (word.end - start > CUE_MAX_S or len(group) >= CUE_MAX_WORDS):
            cues.append((start, end, " ".join(group)))
            group, start = [], word.start
        group.append(word.text)
        end = word.end
    cues.append((start, end, " ".join(group)))
    return cues


def vtt(transcript: Transcript) -> str:
    lines = ["WEBVTT", "", "NOTE " + transcript.to_json()["notice"], ""]
    for turn in transcript.turns:
        for start, end, text in _cues(turn):
            name = _vtt_text(turn.name).replace("\n", " ")
            lines += [
                f"{clock(start)} --> {clock(max(end, start + 0.2))}",
                f"<v {name}>{_vtt_text(text)}",
                "",
            ]
    return "\n".join(lines)


def txt(transcript: Transcript) -> str:
    lines = [f"Transcript of recording {transcript.recording_id}", transcript.to_json()["notice"]]
    lines.append(f"Model: {transcript.model.name} {transcript.model.version}")
    lines.append("")
    for turn in transcript.turns:
        mark = " [corrected]" if turn.correction is not None else ""
        lines.append(f"[{clock(turn.start, vtt=False)}] {turn.name} ({turn.seat}){mark}:")
        lines.append(turn.text)
        lines.append("")
    return "\n".join(lines)


def write(directory: Path, transcript: Transcript) -> list[str]:
    """Write the three files into `directory`; returns their names."""
    texts = {
        TRANSCRIPT_JSON: json.dumps(transcript.to_json(), ensure_ascii=False, indent=2) + "\n",
        TRANSCRIPT_VTT: vtt(transcript),
        TRANSCRIPT_TXT: txt(transcript),
    }
    for name, text in texts.items():
        part = directory / (name + layout.PART_SUFFIX)
        part.unlink(missing_ok=True)
        with open(part, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, directory / name)
    return list(NAMES)


def read(directory: Path) -> Transcript | None:
    path = directory / TRANSCRIPT_JSON
    if not path.exists():
        return None
    return Transcript.from_json(json.loads(path.read_text(encoding="utf-8")))


def remove(directory: Path) -> None:
    for name in NAMES:
        (directory / name).unlink(missing_ok=True)
        (directory / (name + layout.PART_SUFFIX)).unlink(missing_ok=True)
