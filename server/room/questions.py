"""The question bank (data, not code) and a session's question list."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def bank() -> dict[str, Any]:
    """The default bank shipped in storyroom/data/questions.json."""
    text = resources.files("storyroom").joinpath("data/questions.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def session_questions(language: str, custom: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """Questions stored with a session: the bank (both languages) or the session's own."""
    if custom is None:
        return [
            {"id": q["id"], "theme": q["theme"], "text": dict(q["text"])}
            for q in bank()["questions"]
        ]
    return [
        {"id": f"q{n}", "theme": "custom", "text": {language: text}}
        for n, text in enumerate(custom, start=1)
    ]
