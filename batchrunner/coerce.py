"""Coerce a manifest cell to the type its model field declares.

The kinds come from the pydantic annotations of the model (:func:`field_kinds`), so a new
registry entry needs no code here:

============  ===================================================================================
kind          accepted cells
============  ===================================================================================
``bool``      real bools; TRUE/FALSE, yes/no, y/n, 1/0, on/off (any case); 1.0/0.0
``int``       42, "42", 42.0, "42.0", "1e3" → 42 / 1000; not "42.5", not "abc", not a bool
``float``     any finite number or numeric text
``choice``    a ``Literal`` of strings: stripped, matched case-insensitively ("Auto" → "auto");
              numbers as text without a spurious ".0" (8.0 → "8"; the model adds "s"/"p")
``text``      stripped (except :data:`VERBATIM_FIELDS`); numbers as text, 8.0 → "8"
``any``       passed through as read (unions, nested types, unregistered models)
============  ===================================================================================

Empty cells (None, NaN, blank text) give :data:`OMIT`: the field is left out and the model's
default applies. An Excel error value (``#DIV/0!``) is never a value.
"""

from __future__ import annotations

import contextlib
import math
import re
import types
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from batchrunner.cells import CellError

VERBATIM_FIELDS = frozenset({"prompt"})  # free text kept exactly as typed (not stripped)
_TRUE = frozenset({"true", "yes", "y", "1", "on", "1.0"})
_FALSE = frozenset({"false", "no", "n", "0", "off", "0.0"})
_BOOL_RULE = "must be TRUE or FALSE (yes/no, y/n, 1/0 and on/off work too)"
_WHOLE_DECIMAL = re.compile(r"([0-9]+)\.0*")


@dataclass(frozen=True)
class FieldKind:
    name: str
    kind: str  # "bool", "int", "float", "choice", "text" or "any"
    choices: tuple[str, ...] = ()
    required: bool = False


def _kind_of(name: str, annotation: Any, required: bool) -> FieldKind:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _kind_of(name, args[0], required) if len(args) == 1 else FieldKind(name, "any")
    if origin is Literal:
        values = get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return FieldKind(name, "choice", tuple(values), required)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return FieldKind(name, "int", (), required)
        return FieldKind(name, "any", (), required)
    kinds = {bool: "bool", int: "int", float: "float", str: "text"}
    return FieldKind(name, kinds.get(annotation, "any"), (), required)


def field_kinds(model: type[BaseModel]) -> dict[str, FieldKind]:
    """Each field of ``model`` with the kind of cell it takes."""
    return {
        name: _kind_of(name, info.annotation, info.is_required())
        for name, info in model.model_fields.items()
    }


OMIT = object()  # an empty cell: leave the field out so the model's default applies


class BadCell(Exception):
    """A cell that cannot become its field's type; the message says what is allowed."""


def is_empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _number_text(value: Any) -> Any:
    """``8.0`` → ``"8"``, ``7`` → ``"7"``, ``7.5`` → ``"7.5"``; other values unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int | float) else value


def coerce(value: Any, spec: FieldKind) -> Any:
    """The cell as its field's type, ``OMIT`` for an empty cell; raises BadCell."""
    if isinstance(value, CellError):
        raise BadCell(f"the cell shows the Excel error {value}; fix the formula or type a value")
    if is_empty(value):
        return OMIT
    kind = spec.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(_number_text(value)).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise BadCell(_BOOL_RULE)
    if kind in ("int", "float"):
        if isinstance(value, bool):
            raise BadCell("must be a whole number" if kind == "int" else "must be a number")
        if kind == "int" and isinstance(value, int | str):
            with contextlib.suppress(ValueError):  # exact, even beyond a float's precision
                return int(value)
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if kind == "float" and math.isfinite(number):
            return number
        if kind == "int" and math.isfinite(number) and number.is_integer():
            return int(number)
        raise BadCell("must be a whole number" if kind == "int" else "must be a number")
    if kind == "choice":
        text = _number_text(value)
        if not isinstance(text, str):
            return text
        text = text.strip()
        whole = _WHOLE_DECIMAL.fullmatch(text)  # "8.0" as typed in a CSV
        text = whole.group(1) if whole else text
        lowered = {c.lower(): c for c in spec.choices}
        return lowered.get(text.lower(), text)
    if kind == "text":
        text = _number_text(value)
        if isinstance(text, str) and spec.name not in VERBATIM_FIELDS:
            return text.strip()
        return text
    return value


def control_text(value: Any) -> str | None:
    """An ``id`` or ``output`` cell as stripped text, None when empty; raises BadCell."""
    if isinstance(value, CellError):
        raise BadCell(f"the cell shows the Excel error {value}; fix the formula or type a value")
    if is_empty(value):
        return None
    return str(_number_text(value)).strip()


def plain(value: Any) -> Any:
    """A metadata value fit for JSON exports: dates as ISO text, Excel errors as their code."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, CellError):
        return value.code
    return value
