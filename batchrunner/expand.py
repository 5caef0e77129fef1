"""Row expansion: how one spreadsheet row becomes the jobs the user meant.

Applied to a row's raw cells, before coercion and validation, so every problem still names the
row it came from::

    cells ── defaults (--set, [defaults])  fill empty cells only
          ── matrix   (--matrix F=a,b)     one variant per combination; overrides the cell
          ── template (--prompt-template, or {column} inside the prompt cell)
          ── takes    (count column, --count) N takes of each variant, distinct seeds

A variant's label names its matrix values and take (``16:9~1080p~t2``); it is recorded in the
ledger beside the row, is part of the job id when a row has an ``id`` (``shot-01~16:9~t2``), and
of the file name when a row has an ``output``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrunner.coerce import is_empty, number_text
from batchrunner.errors import UsageError
from batchrunner.spelling import closest, hint

MAX_TAKES = 100
# A matrix may vary the model itself (``--matrix model=fal-ai/veo3,fal-ai/veo3.1``): every row on
# every model. The manifest loader looks the ids up; no model's fields name it.
MODEL = "model"
OUTPUT = "output"  # the control column --set may fill too: a file name (template)
VISIBLE = "visible"  # --rows visible: the rows a workbook shows
# {column} is a placeholder; {{ and }} are literal braces; any other brace is left alone.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_ .\-]*)\}")


@dataclass(frozen=True)
class Rows:
    """A selection of a manifest's rows, ``--rows 1-3,7,250-``: by the numbers ``plan`` and
    every problem give them (data rows from 1, the header not counted). To try a few rows
    before the batch, or buy one alone; the rows left out are not checked, recorded or sent."""

    spans: tuple[tuple[int, int | None], ...]  # (first, last); last None: to the end
    visible: bool = False  # only the rows a workbook shows (not hidden by hand or a filter)

    @classmethod
    def parse(cls, spec: str | int | Iterable[int]) -> Rows:
        """``"1-3,7,250-"``, ``"visible"`` (and ``"visible,1-50"``: those of 1-50 a workbook
        shows), a row number, or row numbers."""
        if isinstance(spec, bool):
            raise UsageError(f"rows takes row numbers like '1-3,7', not {spec!r}")
        if isinstance(spec, int):
            spec = [spec]
        if not isinstance(spec, str):
            numbers = sorted(set(spec))
            if not numbers or not all(isinstance(n, int) and n >= 1 for n in numbers):
                raise UsageError(f"rows takes row numbers from 1, not {spec!r}")
            return cls(tuple((n, n) for n in numbers))
        spans: list[tuple[int, int | None]] = []
        parts = [part for part in spec.split(",") if part.strip().lower() != VISIBLE]
        visible = len(parts) < len(spec.split(","))
        for part in parts:
            first, dash, last = part.strip().partition("-")
            try:
                start = int(first)
                end = (int(last) if last.strip() else None) if dash else start
            except ValueError:
                start, end = 0, 0
            if 1 <= (end or 0) < start:
                raise UsageError(
                    f"--rows {spec!r}: {part.strip()} runs backwards: write {end}-{start}"
                )
            if start < 1 or (end is not None and end < 1):
                raise UsageError(
                    f"--rows {spec!r}: write row numbers and ranges like 1-3,7,250- (rows "
                    "count from 1 after the header, as `plan` and errors number them), or "
                    "visible for the rows a workbook shows"
                )
            spans.append((start, end))
        return cls(tuple(spans), visible)

    def __contains__(self, row: object) -> bool:
        """Whether the spans take ``row`` (all rows, for ``visible`` alone; which of them are
        hidden is the sheet's to say)."""
        return isinstance(row, int) and (
            not self.spans
            or any(first <= row and (last is None or row <= last) for first, last in self.spans)
        )

    def past(self, last_row: int) -> list[str]:
        """The spans that name rows past ``last_row`` (a range to the end names none)."""
        return [
            str(Rows(((first, last),)))
            for first, last in self.spans
            if last is not None and last > last_row
        ]

    def __str__(self) -> str:
        spans = [
            str(first) if last == first else f"{first}-{'' if last is None else last}"
            for first, last in self.spans
        ]
        return ",".join([VISIBLE, *spans] if self.visible else spans)


@dataclass(frozen=True)
class Expansion:
    """What the user asked for besides the rows themselves (CLI options, ``batchrunner.toml``)."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    matrix: tuple[tuple[str, tuple[str, ...]], ...] = ()
    prompt_template: str | None = None
    count: int | None = None
    dedupe: bool = False
    strict: bool = False
    rows: Rows | None = None  # only these rows of the manifest (--rows)
    # What `--model` refuses of the defaults and matrix (a field it lacks, a value it does not
    # take), one line each: the loader's error when every row runs on that model. A `model`
    # column's rows are checked against their own models instead.
    refused: tuple[str, ...] = ()

    @functools.cached_property
    def combinations(self) -> list[dict[str, str]]:
        names = [name for name, _ in self.matrix]
        return [dict(zip(names, values, strict=True)) for values in self.product()]

    def product(self) -> Iterator[tuple[str, ...]]:
        return itertools.product(*(values for _, values in self.matrix))

    @functools.cached_property
    def plain(self) -> bool:
        """Nothing to add to a row: no defaults, matrix or prompt template."""
        return not self.defaults and not self.matrix and self.prompt_template is None

    def provided(self) -> set[str]:
        """Fields that need no column of their own: filled by defaults, matrix or template."""
        given = set(self.defaults) | {name for name, _ in self.matrix}
        return given | ({"prompt"} if self.prompt_template else set())


@dataclass(frozen=True)
class Variant:
    cells: dict[str, Any]
    label: str  # "" for the single plain variant of a row
    take: int
    takes: int


class TemplateError(Exception):
    """A placeholder that names no column, or a column empty in this row."""

    def __init__(self, message: str, column: str | None):
        super().__init__(message)
        self.column = column


def parse_matrix(
    items: tuple[str, ...] | list[str], fields: tuple[str, ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``["aspect_ratio=16:9,9:16", ...]`` → ``(("aspect_ratio", ("16:9", "9:16")), ...)``."""
    parsed: dict[str, tuple[str, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        choices = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not name or not choices:
            raise UsageError(f"--matrix {item!r}: write FIELD=value1,value2")
        check_field(name, fields, "--matrix", matrix=True)
        if name in parsed:
            raise UsageError(f"--matrix names {name!r} twice; list all its values in one")
        parsed[name] = choices
    return tuple(parsed.items())


def build(
    fields: tuple[str, ...],
    config: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    matrix: Mapping[str, Any] | None = None,
    prompt_template: str | None = None,
    count: int | None = None,
    dedupe: bool = False,
    strict: bool = False,
    rows: str | int | Iterable[int] | None = None,
    check: Callable[[str, Any], str | None] | None = None,
) -> Expansion:
    """The expansion asked for: the config file's ``[defaults]`` and ``[matrix]`` tables, with
    ``defaults`` and ``matrix`` over them field by field (the command line's ``--set`` and
    ``--matrix``, or the Python API's ``set=`` and ``matrix=``, already checked by the caller).

    Values keep their types (``generate_audio = false`` stays a boolean, for the manifest's
    coercion to read like a cell); a matrix value given as a list is one value each, commas and
    all, and one given as text is split at its commas, as ``--matrix`` is. With ``check`` (the
    model's :meth:`~batchrunner.models.ModelSpec.value_problem`), each value is checked as a
    cell of its field would be: a wrong one is one line, not a problem in every row. What
    ``fields`` and ``check`` refuse is kept in :attr:`Expansion.refused`, for the loader: the
    model is ``--model``'s, and a manifest with a ``model`` column runs rows on others."""
    refused: list[str] = []
    for values, label, each in (
        (config.get("defaults", {}), "[defaults]", False),
        (config.get("matrix", {}), "[matrix]", True),
        (defaults or {}, "--set", False),
        (matrix or {}, "--matrix", True),
    ):
        try:
            check_fields(values, fields, label, matrix=each)
            if check is not None:
                _check_values(values, check, label, each=each)
        except _Refused as exc:
            refused.append(str(exc))
    if prompt_template is not None:
        check_template(prompt_template)
    for values in (config.get("defaults", {}), defaults or {}):
        if OUTPUT in values:
            check_template(str(values[OUTPUT]), "output name", "file name")
    choices = {**config.get("matrix", {}), **(matrix or {})}
    return Expansion(
        defaults={**config.get("defaults", {}), **(defaults or {})},
        matrix=tuple((name, _choices(name, values)) for name, values in choices.items()),
        prompt_template=prompt_template,
        count=count,
        dedupe=dedupe,
        strict=strict,
        rows=None if rows is None else Rows.parse(rows),
        refused=tuple(refused),
    )


def _check_values(
    values: Mapping[str, Any], check: Callable[[str, Any], str | None], label: str, *, each: bool
) -> None:
    """Raise UsageError for a value its field refuses (``each``: a matrix's several values)."""
    for name, value in values.items():
        if each and name == MODEL:
            continue  # a model id, not a field's value: looked up by the loader
        if name == OUTPUT:
            continue  # a file name, checked row by row once its placeholders are filled
        for item in _choices(name, value) if each else (value,):
            problem = check(name, item)
            if problem is not None:
                raise _Refused(f"{label} {name}={item}: {problem}")


class _Refused(UsageError):
    """A default or matrix value, or field, that the model it was checked against refuses."""


def _choices(name: str, values: Any) -> tuple[str, ...]:
    items = values.split(",") if isinstance(values, str) else values
    if not isinstance(items, list | tuple):
        raise UsageError(f"matrix {name}: give a list of values, not {values!r}")
    found = tuple(text for item in items if (text := str(item).strip()))
    if not found:
        raise UsageError(f"matrix {name}: give at least one value")
    twice = next((value for i, value in enumerate(found) if value in found[:i]), None)
    if twice is not None:  # each value is a variant of every row: the same video bought twice
        raise UsageError(f"matrix {name} lists {twice!r} twice; give each value once")
    return found


def varies_model(matrix: Iterable[str] | Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether a matrix (``--matrix`` items, or the API's dict) or the config file's
    ``[matrix]`` varies :data:`MODEL`."""
    names = matrix if isinstance(matrix, Mapping) else (item.partition("=")[0] for item in matrix)
    return any(name.strip() == MODEL for name in names) or MODEL in config.get("matrix", {})


def parse_settings(items: tuple[str, ...] | list[str], fields: tuple[str, ...]) -> dict[str, str]:
    """``["duration=8s", ...]`` → ``{"duration": "8s"}`` for ``--set``."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--set {item!r}: write FIELD=VALUE")
        check_field(name, fields, "--set")
        if name in values and values[name] != value:  # the last silently won
            raise UsageError(
                f"--set names {name!r} twice ({values[name]!r}, then {value!r}); give it once"
            )
        values[name] = value
    return values


def check_fields(
    names: Iterable[str], fields: tuple[str, ...], option: str, *, matrix: bool = False
) -> None:
    for name in names:
        check_field(name, fields, option, matrix=matrix)


def check_field(name: str, fields: tuple[str, ...], option: str, *, matrix: bool = False) -> None:
    """Raise UsageError unless ``name`` is one of the model's ``fields`` (or, in a ``matrix``,
    :data:`MODEL`)."""
    if matrix and name == MODEL:
        return
    if not matrix and name == OUTPUT:
        return  # a file name for rows without one, placeholders and all
    if name == MODEL:  # not a field: what the rows run on
        raise _Refused(
            f"{option} model=...: the model is chosen with --model (`model=` in Python) for "
            "the rows without a model cell, a `model` column, or --matrix model=a,b for every "
            "row on each"
        )
    if fields and name not in fields:
        guess = hint(closest(name, fields))
        raise _Refused(
            f"{option}: {name!r} is not a field of the model{guess}; fields: {', '.join(fields)}"
        )


def variants(cells: Mapping[str, Any], takes: int, expansion: Expansion) -> list[Variant]:
    """Every variant of one row; raises TemplateError for a placeholder it cannot fill."""
    if takes == 1 and expansion.plain:  # the row as it is (most manifests)
        variant_cells = dict(cells)
        prompt = variant_cells.get("prompt")
        if isinstance(prompt, str):
            variant_cells["prompt"] = render(prompt, variant_cells, what="the prompt")
        return [Variant(variant_cells, "", 1, 1)]
    return list(_variants(cells, takes, expansion))


def _variants(cells: Mapping[str, Any], takes: int, expansion: Expansion) -> Iterator[Variant]:
    defaults = {n: v for n, v in expansion.defaults.items() if is_empty(cells.get(n))}
    filled = {**cells, **defaults} if defaults else cells  # each variant copies it anyway
    template = expansion.prompt_template
    for combo in expansion.combinations:
        variant_cells = {**filled, **combo}
        text = template if template is not None else variant_cells.get("prompt")
        if isinstance(text, str):
            what = "the prompt template" if template is not None else "the prompt"
            variant_cells["prompt"] = render(text, variant_cells, what=what)
        parts = list(combo.values())
        for take in range(1, takes + 1):
            label_parts = [*parts, f"t{take}"] if takes > 1 else parts
            yield Variant(variant_cells, "~".join(label_parts), take, takes)


def render(
    template: str,
    cells: Mapping[str, Any],
    *,
    what: str = "the prompt template",
    text: Callable[[str], str] = str,
) -> str:
    """Fill ``{column}`` placeholders from ``cells`` (each value as ``text`` makes it: an
    output name makes it fit in a file name); ``{{``/``}}`` are literal braces."""
    if "{" not in template and "}" not in template:
        return template  # nothing to fill (most prompts)

    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in cells:
            literal = f" (write {{{{{name}}}}} for braces in the text itself)"
            raise TemplateError(
                f"{what} uses {{{name}}}, but there is no {name!r} column"
                + (literal if what == "the prompt" else ""),
                column=name,
            )
        value = cells[name]
        if is_empty(value):
            raise TemplateError(f"{what} uses {{{name}}}, which is empty in this row", column=name)
        return text(str(number_text(value)))

    return _PLACEHOLDER.sub(fill, template)


def placeholders(template: str) -> list[str]:
    """The columns a prompt template names, in order, each once."""
    return list(dict.fromkeys(m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)))


def check_template(template: str, what: str = "prompt template", where: str = "prompt") -> None:
    """Raise UsageError for a prompt template with a brace that is neither a ``{column}``
    placeholder nor an escaped ``{{``/``}}``: a typo (``{prompt``) that :func:`render` would send
    to every job as it is."""
    stray = _PLACEHOLDER.sub("", template)
    if "{" in stray or "}" in stray:
        raise UsageError(
            f"the {what} {template!r} has a brace that is not a {{column}} placeholder; "
            f"write {{{{ or }}}} for a brace in the {where}"
        )


def take_seed(row_seed: int | None, basis: str, take: int) -> int:
    """A distinct, reproducible seed per take: the row's seed + take - 1, else from the job."""
    if row_seed is not None:
        return row_seed + take - 1
    digest = hashlib.sha256(f"{basis}#take{take}".encode()).hexdigest()
    return int(digest[:8], 16) % 2**31
