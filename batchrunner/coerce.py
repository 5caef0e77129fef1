"""Coerce a manifest cell to the type its model field declares.

The kinds come from the model's JSON Schema (:func:`batchrunner.schema.field_kinds`), so a new
registry entry needs no code here:

============  ===================================================================================
kind          accepted cells
============  ===================================================================================
``bool``      real bools; TRUE/FALSE, yes/no, y/n, 1/0, on/off (any case); 1.0/0.0; TRUE and
              FALSE as Excel writes them in a CSV in other languages (WAHR/FALSCH, VRAI/FAUX…)
``int``       42, "42", 42.0, "42.0", "1e3" → 42 / 1000; not "42.5", not "abc", not a bool
``float``     any finite number or numeric text
``choice``    a string enum: stripped, matched case-insensitively ("Auto" → "auto"); a number,
              alone or with its unit spelt out, matches the one choice it starts (8, "8.0" or
              "8 seconds" → "8s", 1080 → "1080p"; "5s" → "5" for a duration); a ratio
              written 16x9, 16/9 or 16 : 9, or turned by a spreadsheet into the time 16:09,
              is 16:9
``text``      stripped (except :data:`VERBATIM_FIELDS`); numbers as text, 8.0 → "8"
``list``      a list of text: a JSON list (``["a.png", "b.png"]``) or items separated by
              :data:`LIST_SEPARATOR` or line breaks (``a.png | b.png``); a JSONL list as is
``any``       passed through as read (unions, nested types, unregistered models)
============  ===================================================================================

Empty cells (None, NaN, blank text) give :data:`OMIT`: the field is left out and the model's
default applies. An Excel error value (``#DIV/0!``) is never a value, nor is a time or a date
(what Excel makes of a typed 4:3, 12:30 or 3/4) in a field of any kind but ``any``, except a
ratio choice it reads as (16:09 is 16:9): it is refused saying what to type instead, and shown
as Excel shows it (:func:`shown`: ``04:03``, not ``04:03:00``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from batchrunner.cells import CellError

VERBATIM_FIELDS = frozenset({"prompt"})  # free text kept exactly as typed (not stripped)
LIST_SEPARATOR = "|"
# Excel's TRUE and FALSE in its other languages, as a CSV it saves writes them (de, fr, es,
# it, pt, nl, sv, da, pl): the cell said TRUE on the screen of whoever made the sheet
_EXCEL_TRUE = {"wahr", "vrai", "verdadero", "vero", "verdadeiro", "waar", "sant", "sand", "prawda"}
_EXCEL_FALSE = {"falsch", "faux", "falso", "onwaar", "falskt", "falsk", "fałsz"}
_TRUE = frozenset({"true", "yes", "y", "1", "on", "1.0", *_EXCEL_TRUE})
_FALSE = frozenset({"false", "no", "n", "0", "off", "0.0", *_EXCEL_FALSE})
_BOOL_RULE = "must be TRUE or FALSE (yes/no, y/n, 1/0 and on/off work too)"
_WHOLE_DECIMAL = re.compile(r"([0-9]+)\.0*")
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")  # 0,5: as a spreadsheet writes it in Europe
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(,\d{3})+")  # 12,000
_MEASURE = re.compile(r"([0-9]+)(?:\.0*)?\s*([^\W\d_]*)\.?")  # 8, 8.0, 8s, 8 sec., 1080 P
_SECONDS = frozenset({"s", "sec", "secs", "second", "seconds"})
# 16:9 as 16x9, 16×9, 16/9, 16 : 9, or the time a spreadsheet makes of it (16:09, 16:09:00)
_RATIO = re.compile(r"([0-9]{1,2})\s*[:x×/]\s*([0-9]{1,2})(?::00)?", re.IGNORECASE)


@dataclass(frozen=True)
class FieldKind:
    name: str
    kind: str  # "bool", "int", "float", "choice", "text", "list" or "any"
    choices: tuple[str, ...] = ()
    required: bool = False

    @functools.cached_property
    def by_lower(self) -> dict[str, str]:
        """Each choice by its lower case (choices match case-insensitively)."""
        return {c.lower(): c for c in self.choices}


OMIT = object()  # an empty cell: leave the field out so the model's default applies
BAD = object()  # a cell that cannot be coerced (Coercer.column); BadCell says why


class BadCell(Exception):
    """A cell that cannot become its field's type; the message says what is allowed."""


def is_empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def number_text(value: Any) -> Any:
    """``8.0`` → ``"8"``, ``7`` → ``"7"``, ``7.5`` → ``"7.5"``; other values unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int | float) else value


def coerce(value: Any, spec: FieldKind) -> Any:
    """The cell as its field's type, ``OMIT`` for an empty cell; raises BadCell."""
    if isinstance(value, CellError):
        raise BadCell(value.message)
    if is_empty(value):
        return OMIT
    kind = spec.kind
    if isinstance(value, _CLOCK) and kind != "any":
        chosen = _choice(value, spec) if kind == "choice" else None
        if chosen in spec.choices:  # Excel reads 16:9 typed in a cell as 16:09
            return chosen
        raise BadCell(_clock_rule(value, spec))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(number_text(value)).strip().lower()
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
        rule = "must be a whole number" if kind == "int" else "must be a number"
        text = value.strip() if isinstance(value, str) else ""
        if kind == "int" and _THOUSANDS.fullmatch(text):
            rule += f", written without separators: {text.replace(',', '')}"
        elif kind == "float" and _DECIMAL_COMMA.fullmatch(text):
            rule += f", written with a dot: {text.replace(',', '.')}"
        raise BadCell(rule)
    if kind == "choice":
        return _choice(value, spec)
    if kind == "list":
        return _list(value)
    if kind == "text":
        text = number_text(value)
        if isinstance(text, str) and spec.name not in VERBATIM_FIELDS:
            return text.strip()
        return text
    return value


def _choice(value: Any, spec: FieldKind) -> Any:
    """A cell of a string enum: the choice it names (see the table above), else the cell as
    text, for the schema to refuse with the list of choices."""
    if isinstance(value, time) and not (value.second or value.microsecond):
        value = f"{value.hour}:{value.minute:02}"  # Excel reads 16:9 typed in a cell as 16:09
    text = plain(number_text(value))
    if not isinstance(text, str):
        return text
    text = text.strip()
    whole = _WHOLE_DECIMAL.fullmatch(text)  # "8.0" as typed in a CSV
    text = whole.group(1) if whole else text
    choice = spec.by_lower.get(text.lower())
    if choice is not None:
        return choice
    ratio = _RATIO.fullmatch(text)
    if ratio and (choice := spec.by_lower.get(f"{int(ratio[1])}:{int(ratio[2])}")):
        return choice
    measure = _MEASURE.fullmatch(text)
    if measure:  # 8 or "8 sec" -> "8s", 1080 -> "1080p", when exactly one choice fits
        number, unit = measure[1], measure[2].lower()
        fits = [
            c
            for c in spec.choices
            if (named := _MEASURE.fullmatch(c))
            and named[1] == number
            and named[2]
            and (not unit or unit in _spellings(named[2].lower()))
        ]
        if len(fits) == 1:
            return fits[0]
        if unit in _SECONDS and spec.name == "duration" and number in spec.choices:
            return number  # "5s" for a model whose durations are "5" and "10"
    return text


_CLOCK = (datetime, date, time, timedelta)  # what Excel makes of what looks like a time or date
_TYPE_AGAIN = {  # what to type instead, in a cell Excel no longer turns into a time or date
    "bool": "type TRUE or FALSE",
    "int": "type the number alone, in a cell formatted as Number",
    "float": "type the number alone, in a cell formatted as Number",
    "text": "format the cell as Text (or start it with an apostrophe) and type it again",
    "list": "format the cell as Text (or start it with an apostrophe) and type it again",
}
_RULE = {
    "bool": "must be TRUE or FALSE",
    "int": "must be a whole number",
    "float": "must be a number",
    "text": "must be text",
    "list": "must be a list of text",
}


def _clock_rule(value: Any, spec: FieldKind) -> str:
    """Why a time or date cell is not its field's value, and what to type instead."""
    made = "a time"
    if isinstance(value, datetime):
        made = "a date" if value.time() == time() else "a date and time"
    elif isinstance(value, date):
        made = "a date"
    if spec.kind != "choice":
        return (
            f"{_RULE[spec.kind]}; Excel turned what was typed into {made}: {_TYPE_AGAIN[spec.kind]}"
        )
    rule = f"must be {choices_text(spec.choices)}"
    ratio = isinstance(value, time) and not (value.second or value.microsecond)
    if ratio and any(_RATIO.fullmatch(c) for c in spec.choices):
        typed = f"{value.hour}:{value.minute}"
        return f"{rule}; Excel turned the {typed} typed here into a time: type one of those"
    typed = "type one of those, in a cell formatted as Text"
    return f"{rule}; Excel turned what was typed into {made}: {typed}"


def choices_text(values: list[Any] | tuple[Any, ...]) -> str:
    """``['a', 'b', 'c']`` → ``"'a', 'b' or 'c'"``."""
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _spellings(unit: str) -> frozenset[str]:
    """How a cell may write the unit a choice ends in: ``s`` as sec or seconds too."""
    return _SECONDS if unit == "s" else frozenset({unit})


class Coercer:
    """:func:`coerce` for one field, remembering what each short text cell became.

    A column repeats a few values (durations, resolutions, flags, one image URL) thousands of
    times: each is coerced once. Lists (a new one per cell) and verbatim text (nothing to
    coerce, and prompts are unique) are coerced every time.
    """

    def __init__(self, spec: FieldKind):
        self.spec = spec
        self._remember = spec.kind != "list" and spec.name not in VERBATIM_FIELDS
        self._seen: dict[str, tuple[Any, str | None]] = {}  # cell -> (value, or why not)

    def __call__(self, value: Any) -> Any:
        if not self._remember or type(value) is not str or len(value) > _REMEMBERED_LENGTH:
            return coerce(value, self.spec)
        outcome = self._seen.get(value)
        if outcome is None:
            try:
                outcome = (coerce(value, self.spec), None)
            except BadCell as exc:
                outcome = (None, str(exc))
            if len(self._seen) < _REMEMBERED_CELLS:
                self._seen[value] = outcome
        coerced, error = outcome
        if error is not None:
            raise BadCell(error)
        return coerced

    def column(self, cells: list[Any]) -> list[Any]:
        """Each cell of a column coerced, :data:`BAD` for one that cannot be (call the coercer
        on it for the reason). Text cells are handled inline and each distinct short cell is
        coerced once: a column costs a pass over a list, not a call per cell."""
        one = self._or_bad
        if self.spec.kind == "text":  # prompts, URLs: unique per row, nothing to look up
            if self.spec.name in VERBATIM_FIELDS:
                return [
                    (OMIT if not c or c.isspace() else c) if type(c) is str else one(c)
                    for c in cells
                ]
            return [(c.strip() or OMIT) if type(c) is str else one(c) for c in cells]
        if not self._remember:
            return [one(c) for c in cells]
        distinct = {c: one(c) for c in {c for c in cells if type(c) is str}}
        return [distinct[c] if type(c) is str else one(c) for c in cells]

    def _or_bad(self, cell: Any) -> Any:
        try:
            return self(cell)
        except BadCell:
            return BAD


_REMEMBERED_LENGTH = 256  # longer text is rarely repeated
_REMEMBERED_CELLS = 20_000  # per field


def _list(value: Any) -> Any:
    """A list cell: a JSON list, or items split on ``|`` and line breaks; items stripped."""
    if isinstance(value, list | tuple):
        items = list(value)
    else:
        text = str(number_text(value)).strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise BadCell(
                    'starts with \'[\' but is not a JSON list; write ["a.png", "b.png"] or '
                    f"separate the items with {LIST_SEPARATOR!r}"
                ) from None
            if not isinstance(items, list):
                raise BadCell("must be a list")
        else:
            items = re.split(r"[|\r\n]", text)
    cleaned = [number_text(i).strip() if isinstance(i, str) else i for i in items]
    cleaned = [i for i in cleaned if not is_empty(i)]
    if not cleaned:
        return OMIT
    return cleaned


def control_text(value: Any) -> str | None:
    """An ``id`` or ``output`` cell as stripped text, None when empty; raises BadCell."""
    if isinstance(value, CellError):
        raise BadCell(value.message)
    if is_empty(value):
        return None
    return str(number_text(value)).strip()


def shown(value: Any) -> Any:
    """A cell as a spreadsheet shows it, for messages: a time as ``04:03`` (``12:30:15`` with
    its seconds), a date as ``2024-03-04``, both as ``2024-03-04 10:05``, a duration as
    ``26:30``; anything else as :func:`plain` gives it."""
    if isinstance(value, timedelta):
        minutes, seconds = divmod(round(value.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02}" + (f":{seconds:02}" if seconds else "")
    if isinstance(value, datetime):
        if value.time() == time():
            return value.date().isoformat()
        return f"{value.date().isoformat()} {shown(value.time())}"
    if isinstance(value, time):
        return value.strftime("%H:%M:%S" if value.second else "%H:%M")
    return plain(value)


def plain(value: Any) -> Any:
    """A metadata value fit for JSON exports: dates as ISO text, Excel errors as their code."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, CellError):
        return value.code
    return value
