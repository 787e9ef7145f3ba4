"""The production image's Dockerfile and the default question bank shipped in the package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
QUESTIONS = ROOT / "server" / "data" / "questions.json"

THEMES = (
    "warmup",
    "upbringing",
    "shaped-views",
    "kindness",
    "admire-other-side",
    "misunderstood",
    "disagree-respect",
    "future",
    "closing",
)
LANGUAGES = {"en", "es"}
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def _args(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"{hadolint} is missing: install the test extra (pip install -e '.[test]')")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_and_runs_the_project() -> None:
    stage = _final_stage()

    assert _args(stage, "FROM")[0].startswith("python:3.11-slim"), _args(stage, "FROM")

    installs = [run for run in _args(stage, "RUN") if "pip install" in run]
    assert installs, "the image must install the project with pip install"
    # the project itself, with the transcription extra
    project = r"pip install (?:--?\S+ )*(?:\.|'\.\[[a-z,]+\]')(?:\s|$)"
    assert any(re.search(project, run) for run in installs), installs

    users = _args(stage, "USER")
    assert users, "the image must drop root with USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    creates = [run for run in _args(stage, "RUN") if "useradd" in run and "storyroom" in run]
    assert creates, "the storyroom user must be created"
    assert user == "storyroom" or f"--uid {user}" in creates[0] or f"-u {user}" in creates[0]

    healthchecks = _args(stage, "HEALTHCHECK")
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0], healthchecks

    volumes = " ".join(_args(stage, "VOLUME"))
    assert "/data" in volumes, volumes
    env = " ".join(_args(stage, "ENV"))
    assert "STORYROOM_DATA_DIR=/data" in env, env
    assert "STORYROOM_HOST=0.0.0.0" in env, env
    assert "8080" in _args(stage, "EXPOSE"), _args(stage, "EXPOSE")

    cmds = _args(stage, "CMD")
    assert cmds and json.loads(cmds[-1]) == ["storyroom", "serve"], cmds


def test_readme_installs_and_runs_like_the_dockerfile() -> None:
    if not README.exists():
        pytest.skip("README.md is not written yet; cannot compare its install steps")
    readme = README.read_text(encoding="utf-8")
    assert "pip install" in readme, "the README installs with pip, as the Dockerfile does"
    assert "storyroom serve" in readme, "the README starts the server as the Dockerfile does"


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = {key for key in keys if keys.count(key) > 1}
    assert not duplicates, f"duplicate JSON keys: {sorted(duplicates)}"
    return dict(pairs)


def _check_texts(texts: Any, where: str) -> None:
    assert isinstance(texts, dict) and set(texts) == LANGUAGES, f"{where}: {texts!r}"
    for language, text in texts.items():
        assert isinstance(text, str) and text.strip() == text and text, f"{where}.{language}"
    assert texts["en"] != texts["es"], f"{where}: Spanish text is an untranslated copy"


def test_question_bank_is_valid() -> None:
    bank = json.loads(QUESTIONS.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    assert set(bank) == {"version", "themes", "questions"}
    assert bank["version"] == 1

    themes = bank["themes"]
    assert isinstance(themes, list)
    for theme in themes:
        assert set(theme) == {"id", "title"}, theme
        _check_texts(theme["title"], f"theme {theme['id']}.title")
    theme_ids = [theme["id"] for theme in themes]
    assert tuple(theme_ids) == THEMES, "themes missing, unexpected or out of conversation order"

    questions = bank["questions"]
    assert isinstance(questions, list) and 15 <= len(questions) <= 30, len(questions)
    ids = [question["id"] for question in questions]
    assert len(ids) == len(set(ids)), "question ids must be unique"
    for question in questions:
        assert set(question) == {"id", "theme", "text"}, question
        assert isinstance(question["id"], str) and SLUG.match(question["id"]), question["id"]
        assert question["theme"] in THEMES, question
        _check_texts(question["text"], f"question {question['id']}.text")

    # Recommended conversation order: grouped by theme, themes in their listed order.
    used = [question["theme"] for question in questions]
    assert used == sorted(used, key=THEMES.index), "questions are not in conversation order"
    for theme_id in THEMES:
        assert 2 <= used.count(theme_id) <= 3, f"theme {theme_id} has {used.count(theme_id)}"


def test_question_bank_ships_in_the_package() -> None:
    packaged = resources.files("storyroom").joinpath("data/questions.json")
    assert packaged.read_bytes() == QUESTIONS.read_bytes()
