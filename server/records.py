"""Records whose JSON form is simply their fields."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class FieldsRecord:
    """A mix-in for a dataclass whose `to_json` is its fields in declaration order, nested
    records included (`dataclasses.asdict`); a record that renames, rounds, leaves out or
    adds a field writes its own `to_json`."""

    __slots__ = ()

    def to_json(self: DataclassInstance) -> dict[str, Any]:
        return dataclasses.asdict(self)
