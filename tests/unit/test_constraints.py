"""constraints.txt, the exact versions CI tested, against pyproject.toml's ranges: every
dependency is pinned, every pin is inside its range, and the packages whose internals
storyroom reaches into have an upper bound."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# storyroom.media.aiortc_internals patches or reads their private parts; finalization
# builds PyAV packets, chapters and side data.
INTERNALS_USED = ("aiortc", "aioice", "av")


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt: not name==version: {line!r}"
        key = canonicalize_name(name)
        assert key not in found, f"constraints.txt pins {name} twice"
        found[key] = Version(version)
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    listed = [
        *project["dependencies"],
        *extras["test"],
        *extras["transcribe"],
        *extras["cluster"],
    ]
    return [Requirement(text) for text in listed]


def test_constraints_pin_every_dependency_inside_its_range() -> None:
    pinned = pins()
    assert "storyroom" not in pinned, "the project itself is not a constraint"
    for requirement in requirements():
        key = canonicalize_name(requirement.name)
        assert key in pinned, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[key], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pinned[key]}, outside {requirement}"
        )


@pytest.mark.parametrize("name", INTERNALS_USED)
def test_packages_whose_internals_we_use_are_bounded_above(name: str) -> None:
    (requirement,) = [r for r in requirements() if canonicalize_name(r.name) == name]
    uppers = [s for s in requirement.specifier if s.operator in ("<", "<=", "==", "~=")]
    assert uppers, f"{requirement}: no upper bound"


def test_every_wing_is_a_listed_package() -> None:
    """A non-editable install (the image) holds only the listed packages: a new wing
    folder missing from pyproject.toml would be missing from it."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        "storyroom" + "".join(f".{part}" for part in init.parent.relative_to(ROOT / "server").parts)
        for init in (ROOT / "server").rglob("__init__.py")
    }
    assert folders == listed
