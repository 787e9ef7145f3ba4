"""The browser files without a browser: catalogues agree, every string a page asks for
exists, nothing writes markup from data, nothing the CSP would block is in the pages as
served (each page's body in the shared layout), and every page has its module."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from storyroom.room.questions import bank
from storyroom.status import FinalizeStage
from storyroom.web.pages import render_page

STATIC = Path(__file__).resolve().parents[2] / "static"
JS_FILES = sorted((STATIC / "js").glob("*/*.js"))
PAGES = sorted(page.stem for page in (STATIC / "pages").glob("*.html"))
LANGS = ("en", "es")


def script_id(script: Path) -> str:
    return script.relative_to(STATIC / "js").as_posix()


def catalogue(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_catalogues_have_the_same_keys() -> None:
    en, es = catalogue("en"), catalogue("es")
    assert sorted(set(en) - set(es)) == [], "in en.json but not in es.json"
    assert sorted(set(es) - set(en)) == [], "in es.json but not in en.json"


@pytest.mark.parametrize("lang", LANGS)
def test_catalogue_strings_are_filled_and_keep_their_placeholders(lang: str) -> None:
    en, other = catalogue("en"), catalogue(lang)
    for key, text in other.items():
        assert isinstance(text, str) and text.strip(), f"{lang}:{key} is empty"
        assert placeholders(text) == placeholders(en[key]), f"{lang}:{key} placeholders differ"


def _keys_used_in_markup() -> set[str]:
    keys: set[str] = set()
    for page in PAGES:
        html = render_page(STATIC, page)
        keys |= set(re.findall(r'data-i18n="([^"]+)"', html))
        for attrs in re.findall(r'data-i18n-attr="([^"]+)"', html):
            keys |= {pair.split(":")[1].strip() for pair in attrs.split(";") if ":" in pair}
    return keys


def _keys_used_in_code() -> set[str]:
    keys: set[str] = set()
    for script in JS_FILES:
        code = script.read_text("utf-8")
        keys |= set(re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z0-9_.-]+)["']""", code))
        # keys handed around as plain strings: key: "...", actionKey: "...", button("...")
        keys |= set(re.findall(r"""["']((?:[a-z]+)\.[a-z0-9_]+)["']""", code)) & set(
            catalogue("en")
        )
    return keys


def _dynamic_keys() -> set[str]:
    """Keys the code builds from a state or code name (`rec.${state}` and the like)."""
    families = {
        # the staff list also shows a finished recording's status
        "rec": [
            *("idle", "recording", "paused", "stopped", "interrupted"),
            *("finalizing", "ready", "failed"),
        ],
        # ack error codes with words of their own (others show the server's message)
        "error": [
            "offline",
            "timeout",
            "forbidden",
            "busy",
            "internal",
            "replaced",
            "invalid_state",
            "unknown_question",
            "server_restarting",
            "wrong_node",  # a cluster node that lost the room (docs/deploy.md §12)
            # the invitation page's refusals
            "same_email",
            "invalid_email",
            "invites_closed",
            "already_confirmed",
            "link_expired",
            "link_invalid",
        ],
        "conn": [
            "idle",
            "connecting",
            "connected",
            "reconnecting",
            "refused",
            "closed",
            "left",
            "audio_connecting",
            "audio_failed",
        ],
        "audio": ["off", "connecting", "connected", "unavailable", "failed"],
        "refused": ["token_missing", "token_invalid", "token_expired"],
        "seat": ["a", "b", "facilitator"],
        "quality": ["good", "fair", "poor"],
        "console": ["consent_record", "consent_archive", "consent_public"],
        "mic": [
            *(
                f"{prefix}_{kind}"
                for prefix in ("failed", "help")
                for kind in ("denied", "missing", "busy", "ended", "unsupported", "other")
            ),
            *(f"sample_{s}" for s in ("recording", "playing", "done", "failed")),
        ],
        "check": [
            f"{name}_{suffix}"
            for name in ("secure", "webrtc", "microphone")
            for suffix in ("ok", "bad", "advice")
        ],
        "theme": [theme["id"] for theme in bank()["themes"]],
        # where the files are after stop, in each page's words, and the finalizer's stage
        "finalize": [
            *(
                f"{page}_{status}_{part}"
                for page in ("console", "room")
                for status in ("finalizing", "ready", "failed")
                for part in ("title", "body")
            ),
            *(f"stage_{stage}" for stage in ("queued", *FinalizeStage)),
        ],
    }
    return {f"{family}.{name}" for family, names in families.items() for name in names}


def test_every_string_the_pages_ask_for_exists() -> None:
    en = catalogue("en")
    wanted = _keys_used_in_markup() | _keys_used_in_code() | _dynamic_keys()
    missing = sorted(key for key in wanted if key not in en)
    assert missing == []
    assert len(wanted) > 150  # the scan found the pages' strings


def test_no_unused_strings() -> None:
    used = _keys_used_in_markup() | _keys_used_in_code() | _dynamic_keys()
    assert sorted(set(catalogue("en")) - used) == []


@pytest.mark.parametrize("script", JS_FILES, ids=script_id)
def test_no_markup_from_strings(script: Path) -> None:
    code = script.read_text("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in code, f"{script.name} uses {sink}"


def test_one_module_per_page_named_after_it() -> None:
    modules = sorted(script.stem for script in (STATIC / "js" / "pages").glob("*.js"))
    assert PAGES == modules
    assert len(PAGES) == 14


@pytest.mark.parametrize("page", PAGES)
def test_pages_hold_nothing_the_csp_blocks(page: str) -> None:
    html = render_page(STATIC, page)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html), "inline style attribute"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/' in tag, f"inline script: {tag}"
    # every page names its language and fits phones
    assert re.search(r'<html lang="(en|es)"', html)
    assert 'name="viewport"' in html


@pytest.mark.parametrize("page", PAGES)
def test_form_controls_are_labelled(page: str) -> None:
    html = render_page(STATIC, page)
    labelled = set(re.findall(r'<label[^>]*\sfor="([^"]+)"', html))
    for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
        if 'type="hidden"' in tag:
            continue
        control_id = re.search(r'\sid="([^"]+)"', tag)
        assert control_id, f"control without id in {page}: {tag}"
        assert control_id.group(1) in labelled, f"no <label for> for {tag}"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("script", JS_FILES, ids=script_id)
def test_scripts_parse(script: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    subprocess.run([node, "--check", str(script)], check=True, capture_output=True, timeout=30)
