"""A model's input, driven by its JSON Schema: field kinds, defaults, and validation.

The schema is the one fal publishes in its per-endpoint OpenAPI document (``$ref``s inlined,
OpenAPI's ``nullable`` turned into JSON Schema, see :mod:`batchrunner.openapi`). From it come:

* :func:`field_kinds`: what kind of cell each field takes (``bool``, ``int``, ``float``,
  ``choice`` for a string enum, ``text``, ``list`` for an array of strings, ``any``), so the
  manifest loader can coerce spreadsheet cells without a line of code per model;
* :class:`Checker`: the request body with the schema's defaults filled in (the job records
  exactly what will be generated, and the price can be computed from it), and every way a body
  breaks the schema, each with its field and a sentence that says what is allowed. Validation is
  `jsonschema <https://python-jsonschema.readthedocs.io>`_'s (Draft 2020-12); the words are ours.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchrunner.coerce import FieldKind, choices_text

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

FILE_SUFFIXES = ("_url", "_urls")  # fal marks file inputs only by name (MODELS.md)


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with a request body: which field, what, and the value at fault."""

    field: str | None
    message: str
    kind: str  # "missing", "enum", "maxLength", "type", ... (the JSON Schema keyword)
    value: Any = None
    path: tuple[str | int, ...] = ()


def properties(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The schema's properties in fal's display order (``x-fal-order-properties``)."""
    props: dict[str, dict[str, Any]] = dict(schema.get("properties") or {})
    order = [n for n in schema.get("x-fal-order-properties") or [] if n in props]
    return {name: props[name] for name in [*order, *(n for n in props if n not in order)]}


def _concrete(prop: Mapping[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` → X (merged with the property's own keys); others unchanged."""
    variants = prop.get("anyOf") or prop.get("oneOf")
    if variants:
        real = [v for v in variants if v.get("type") != "null"]
        if len(real) == 1:
            rest = {k: v for k, v in prop.items() if k not in ("anyOf", "oneOf")}
            return _concrete({**rest, **real[0]})
    types = prop.get("type")
    if isinstance(types, list):
        real_types = [t for t in types if t != "null"]
        if len(real_types) == 1:
            return {**prop, "type": real_types[0]}
    return dict(prop)


def kind_of(name: str, prop: Mapping[str, Any], required: bool) -> FieldKind:
    prop = _concrete(prop)
    kind = {"boolean": "bool", "integer": "int", "number": "float", "string": "text"}
    enum = prop.get("enum")
    if enum and all(isinstance(v, str) for v in enum):
        return FieldKind(name, "choice", tuple(enum), required)
    if prop.get("type") == "array":
        items = _concrete(prop.get("items") or {})
        return FieldKind(name, "list" if items.get("type") == "string" else "any", (), required)
    return FieldKind(name, kind.get(str(prop.get("type")), "any"), (), required)


def field_kinds(schema: Mapping[str, Any]) -> dict[str, FieldKind]:
    """Each field with the kind of cell it takes, in display order."""
    required = set(schema.get("required") or ())
    return {name: kind_of(name, p, name in required) for name, p in properties(schema).items()}


def file_fields(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Fields that take a file: ``*_url`` strings and ``*_urls`` lists of strings."""
    return tuple(
        name
        for name, kind in field_kinds(schema).items()
        if name.endswith(FILE_SUFFIXES) and kind.kind in ("text", "list")
    )


@functools.lru_cache(maxsize=256)
def _validator(text: str) -> Validator:
    from jsonschema import Draft202012Validator  # imported when a body is first checked

    return Draft202012Validator(json.loads(text))


def validator(schema: Mapping[str, Any]) -> Validator:
    return _validator(json.dumps(schema, sort_keys=True))


# A schema that is only properties and required fields can be checked field by field.
_FIELD_BY_FIELD = {"type", "properties", "required", "title", "description", "examples"}
_MEMO_LIMIT = 20_000
_ABSENT = object()


@dataclass(frozen=True)
class _Plain:
    """A property of one plain type with at most a string enum and limits, like most of fal's.

    A value that plainly meets it needs no jsonschema (nor its import, a tenth of a second);
    any other value goes to jsonschema, which says what is wrong (or that it is fine after all).
    """

    types: tuple[type, ...]  # exact Python types: True is not an integer, as in JSON Schema
    enum: frozenset[str] | None
    low: float  # minLength for text, minimum for numbers
    high: float  # maxLength, maximum

    @classmethod
    def of(cls, prop: Mapping[str, Any]) -> _Plain | None:
        kind = prop.get("type")
        types = _PLAIN_TYPES.get(kind) if isinstance(kind, str) else None
        if types is None:
            return None
        text = kind == "string"
        low_key, high_key = ("minLength", "maxLength") if text else ("minimum", "maximum")
        allowed = {"type", low_key, high_key, *_ANNOTATIONS, *(["enum"] if text else [])}
        if any(key not in allowed and not key.startswith("x-") for key in prop):
            return None
        enum = prop.get("enum")
        if enum is not None and not all(isinstance(v, str) for v in enum):
            return None
        low, high = prop.get(low_key, -math.inf), prop.get(high_key, math.inf)
        if type(low) not in (int, float) or type(high) not in (int, float):
            return None
        return cls(types, frozenset(enum) if enum is not None else None, low, high)

    def fits(self, value: Any) -> bool:
        if type(value) not in self.types or (self.enum is not None and value not in self.enum):
            return False
        return bool(self.low <= (len(value) if type(value) is str else value) <= self.high)

    def fits_each(self, values: Sequence[Any]) -> list[bool]:
        """:meth:`fits` for each value, in one pass."""
        types, enum, low, high = self.types, self.enum, self.low, self.high
        if types != (str,):
            return [type(v) in types and low <= v <= high for v in values]
        if enum is None:
            return [type(v) is str and low <= len(v) <= high for v in values]
        return [type(v) is str and v in enum and low <= len(v) <= high for v in values]


_PLAIN_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
_ANNOTATIONS = {"title", "description", "examples", "default"}  # jsonschema checks none of them


class Checker:
    """Checks bodies against one schema, field by field where the schema allows it.

    A batch repeats the same durations, resolutions and flags thousands of times and only the
    prompt differs, so each field's verdict on a short value is remembered: a 100,000-row
    manifest pays jsonschema once per distinct value, not once per cell. A value that plainly
    fits a plain property (:class:`_Plain`: a prompt within its length, a choice among its
    enum, a flag) is not even shown to jsonschema.
    """

    def __init__(self, schema: Mapping[str, Any]):
        self.schema = schema
        self.props = properties(schema)
        self.order = list(self.props)
        self.required = tuple(schema.get("required") or ())
        self.defaults = {
            n: p["default"] for n, p in self.props.items() if p.get("default") is not None
        }
        keys = {k for k in schema if not k.startswith("x-")}
        self.by_field = keys <= _FIELD_BY_FIELD and schema.get("type", "object") == "object"
        self._memo: dict[tuple[str, type, Any], list[InputProblem]] = {}
        self._plain = {name: plain for name, p in self.props.items() if (plain := _Plain.of(p))}

    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(values)
        for name, default in self.defaults.items():
            body.setdefault(name, default)
        return body

    def problems(self, body: Mapping[str, Any]) -> list[InputProblem]:
        found = [InputProblem(n, "is required", "missing") for n in self.required if n not in body]
        if not self.by_field:
            errors = [e for e in validator(self.schema).iter_errors(dict(body))]
            rank = {name: i for i, name in enumerate(self.order)}
            errors.sort(key=lambda e: rank.get(e.path[0], len(rank)) if e.path else len(rank))
            return found + [
                _problem(tuple(e.path), e, body) for e in errors if e.validator != "required"
            ]
        defaults, checked = self.defaults, self._checked_defaults
        for name in self.order:
            if name not in body:
                continue
            value = body[name]
            if value is defaults.get(name, _ABSENT):  # filled in by complete()
                found += checked[name]
            else:
                found += self._field(name, value)
        return found

    def broken_rows(
        self, columns: Mapping[str, Sequence[Any]], rows: int, absent: object
    ) -> set[int]:
        """The rows whose bodies would have a problem, checked a column at a time.

        ``columns`` holds, per field, one value per row (``absent`` where the row leaves the
        field out, so its default applies); each body is :meth:`complete` of its row. Only for
        a schema checked field by field (:attr:`by_field`): :meth:`problems` of a broken row
        says what is wrong with it."""
        assert self.by_field
        broken: set[int] = set()
        for name in self.required:
            column = columns.get(name)
            if name in self.defaults:
                continue  # complete() fills it in
            if column is None:
                return set(range(rows))
            broken.update(i for i, value in enumerate(column) if value is absent)
        for name in self.order:
            column = columns.get(name)
            bad_default = name in self.defaults and bool(self._checked_defaults[name])
            if column is None:
                if bad_default:
                    return set(range(rows))
                continue
            if bad_default:
                broken.update(i for i, value in enumerate(column) if value is absent)
            plain = self._plain.get(name)
            fits = plain.fits_each(column) if plain else [False] * len(column)
            broken.update(
                i
                for i in [i for i, fine in enumerate(fits) if not fine]
                if column[i] is not absent and self._field(name, column[i])
            )
        return broken

    @functools.cached_property
    def _checked_defaults(self) -> dict[str, list[InputProblem]]:
        """Each default's verdict: most fields of most bodies are their default."""
        return {name: self._field(name, value) for name, value in self.defaults.items()}

    def _field(self, name: str, value: Any) -> list[InputProblem]:
        plain = self._plain.get(name)
        if plain is not None and plain.fits(value):
            return []  # a prompt: too many to remember, too simple to need jsonschema
        key = _memo_key(name, value)
        remembered = self._memo.get(key) if key is not None else None
        if remembered is not None:
            return remembered
        check = validator(self.props[name])
        verdict = [_problem((name, *e.path), e, {name: value}) for e in check.iter_errors(value)]
        if key is not None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = verdict
        return verdict


def _memo_key(name: str, value: Any) -> tuple[str, type, Any] | None:
    """A key for a short scalar or a small list; None for long text (prompts are unique:
    remembering them would only cost memory)."""
    if type(value) is str:  # the most common: a choice such as "8s" or "720p"
        return (name, str, value) if len(value) <= 256 else None
    if value is None or isinstance(value, bool | int | float):
        return (name, type(value), value)
    if isinstance(value, str):
        return (name, str, value) if len(value) <= 256 else None
    text = json.dumps(value, sort_keys=True, default=str)
    return (name, list, text) if len(text) <= 256 else None


def _problem(path: tuple[Any, ...], error: Any, body: Mapping[str, Any]) -> InputProblem:
    name = str(path[0]) if path else None
    message = _message(str(error.validator), error.validator_value, error.instance)
    if len(path) > 1 and isinstance(path[1], int):
        message = f"item {path[1] + 1}: {message}"
    return InputProblem(name, message, str(error.validator), body.get(name) if name else None, path)


_TYPES = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "TRUE or FALSE",
    "string": "text",
    "array": "a list",
    "object": "an object",
}


def _message(keyword: str, expected: Any, got: Any) -> str:
    if keyword == "enum":
        return f"must be {choices_text(expected)}"
    if keyword == "maxLength":
        return f"must be at most {expected} characters (this one has {len(got)})"
    if keyword == "minLength":
        return "must not be empty" if expected == 1 else f"must be at least {expected} characters"
    if keyword == "maximum":
        return f"must be at most {expected}"
    if keyword == "minimum":
        return f"must be at least {expected}"
    if keyword == "exclusiveMaximum":
        return f"must be less than {expected}"
    if keyword == "exclusiveMinimum":
        return f"must be more than {expected}"
    if keyword == "maxItems":
        return f"takes at most {expected} items (this one has {len(got)})"
    if keyword == "minItems":
        return f"needs at least {expected} items (this one has {len(got)})"
    if keyword == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(_TYPES.get(t, str(t)) for t in wanted if t != "null")
    if keyword == "const":
        return f"must be {expected!r}"
    if keyword == "pattern":
        return f"must match the pattern {expected}"
    return f"is not allowed here ({keyword} {expected!r})"
