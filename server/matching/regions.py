"""US regions (states, DC, Puerto Rico): the data table in storyroom/data/regions.json
and how near two of them are for matching: the same region, nearby (a land neighbour or
the same census division) or far."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any


class Nearness(StrEnum):
    SAME = "same"
    NEARBY = "nearby"
    FAR = "far"


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    names: dict[str, str]
    division: str
    neighbours: frozenset[str]


@dataclass(frozen=True, slots=True)
class RegionTable:
    regions: dict[str, Region]

    def __contains__(self, code: object) -> bool:
        return code in self.regions

    def nearness(self, a: str, b: str) -> Nearness:
        if a == b:
            return Nearness.SAME
        ra, rb = self.regions.get(a), self.regions.get(b)
        if ra is None or rb is None:
            return Nearness.FAR
        if b in ra.neighbours or ra.division == rb.division:
            return Nearness.NEARBY
        return Nearness.FAR

    def nearby(self, code: str) -> tuple[str, ...]:
        """Regions nearby `code` (not `code` itself), in a stable order."""
        region = self.regions.get(code)
        if region is None:
            return ()
        same_division = {r.code for r in self.regions.values() if r.division == region.division}
        return tuple(sorted((region.neighbours | same_division) - {code}))

    def to_json(self) -> list[dict[str, Any]]:
        return [{"code": r.code, "name": dict(r.names)} for r in self.regions.values()]


@cache
def regions() -> RegionTable:
    """The table shipped in storyroom/data/regions.json."""
    text = resources.files("storyroom").joinpath("data/regions.json").read_text("utf-8")
    data = json.loads(text)
    return RegionTable(
        {
            code: Region(code, dict(r["name"]), r["division"], frozenset(r["neighbours"]))
            for code, r in data["regions"].items()
        }
    )
