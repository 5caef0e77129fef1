"""The manifest loader: a spreadsheet in, validated job rows out, or every problem at once.

The pipeline, one stage per step::

    read      cells.read_table     CSV/TSV/JSONL/XLSX/Parquet -> column names + raw cells per row
    columns   columns.Columns      model fields, control columns (id, output), metadata (warned)
    coerce    coerce.coerce        each cell -> the type its model field declares (bool, int, ...)
    expand    expand.variants      defaults, matrix, prompt template, takes (one row -> N jobs)
    files     images.ImageChecker  local image paths -> LocalFile (checked, hashed once)
    validate  ModelSpec.problems   schema defaults filled, JSON Schema checks; errors -> Problems
    rows      rows.RowBuilder      a ManifestRow per job: id, output name, metadata, cost;
              rows.find_duplicates then the jobs that are one request or one file

Nothing is sent anywhere: :func:`load_manifest` either returns a :class:`Manifest` or raises
:class:`~batchrunner.errors.ManifestError` listing every error (sorted by row), each naming the
row, the line (CSV/TSV/JSONL), the column, the bad value and what is allowed.

Row numbers: the header is the first non-blank record and row N is the Nth record after it.
Blank rows are skipped but keep their number, so data row N is spreadsheet row N+1 when the
header is on row 1. In JSONL (no header) row N is the Nth non-blank line.

Coercion follows the model's JSON Schema, so a new registry entry needs no code here: empty
cells are left out (the model's default applies); bools accept TRUE/FALSE, yes/no, y/n, 1/0,
on/off; whole numbers accept ``42``, ``"42.0"``; choices (string enums) are stripped and matched
case-insensitively, ``8`` reads as ``"8s"``; lists are a JSON list or items separated by ``|``;
``prompt`` is kept verbatim. A column that is a near miss of a field (case, ``-`` for ``_``, a
typo) is an error naming the field; a column like no field is metadata, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from batchrunner.cells import IN_MEMORY, Table, first_ten, read_records, read_table
from batchrunner.coerce import (
    BadCell,
    control_text,
    is_empty,
    shown,
)
from batchrunner.columns import CONTROL_COLUMNS, Columns
from batchrunner.errors import ManifestError, Problem, UsageError, counted
from batchrunner.expand import (
    MODEL,
    OUTPUT,
    Expansion,
    Rows,
    placeholders,
)
from batchrunner.images import (
    LocalFile,
    data_uri,
    materialize,
)
from batchrunner.models import ModelSpec, get_model
from batchrunner.rows import (
    Built,
    ManifestRow,
    RowBuilder,
    all_distinct,
    find_duplicates,
    job_id_for,
    unique_problems,
)

__all__ = [
    "LocalFile",
    "Manifest",
    "ManifestRow",
    "data_uri",
    "gc_paused",
    "job_id_for",
    "load_manifest",
    "materialize",
]

logger = logging.getLogger(__name__)


@dataclass
class Manifest:
    source: Path
    spec: ModelSpec  # the model a row without a ``model`` cell runs on (``--model``)
    rows: list[ManifestRow]  # one per job, after expansion
    columns: list[str]
    warnings: list[Problem] = field(default_factory=list)
    records: int = 0  # data rows in the file, before expansion (those --rows took)
    taken: str = ""  # " (--rows 1-3 of 300)" when --rows took some
    specs: dict[str, ModelSpec] = field(default_factory=dict)  # endpoint -> spec, of the rows

    def spec_of(self, row: ManifestRow) -> ModelSpec:
        """The model ``row`` runs on."""
        return self.specs.get(row.endpoint) or self.spec

    @property
    def endpoints(self) -> list[str]:
        """The models the rows run on, in the order they first appear."""
        return list(self.specs) or [self.spec.endpoint_id]


def load_manifest(
    path: str | Path | Any,
    spec: ModelSpec,
    *,
    sheet: str | int | None = None,
    expansion: Expansion | None = None,
    models: Callable[[str], ModelSpec] | None = None,
) -> Manifest:
    """Read, expand and check the manifest at ``path`` (or rows in memory: a DataFrame or a
    list of dicts, whose relative file paths are read from the current folder); raises
    ManifestError or UsageError.

    Every row runs on ``spec`` unless the manifest has a ``model`` column: a row's cell there
    names its model, looked up by ``models`` (an unknown one raises
    :class:`~batchrunner.errors.UsageError`; the registry's, strictly, by default), and its
    cells are read and checked against that model's fields."""
    with gc_paused():
        return _load(path, spec, sheet, expansion or Expansion(), models or get_model)


def _header_names(spec: ModelSpec) -> frozenset[str]:
    """Names that mark a manifest's header row (lower case): the model's fields and the
    manifest's own columns."""
    return frozenset({*(name.lower() for name in spec.fields), "prompt", *CONTROL_COLUMNS})


def _load(
    path: str | Path | Any,
    spec: ModelSpec,
    sheet: str | int | None,
    expansion: Expansion,
    models: Callable[[str], ModelSpec],
) -> Manifest:
    if isinstance(path, str | Path):
        source = Path(path).expanduser()
        table = read_table(source, sheet=sheet, columns=_header_names(spec))
        folder = source.resolve().parent
    else:
        source, table, folder = Path(IN_MEMORY), read_records(path), Path.cwd()
        path = IN_MEMORY
    taken = ""
    if expansion.rows is not None:
        total = len(table.records)
        table = _selected(table, expansion.rows)
        shown = f": {len(table.records)}" if expansion.rows.visible else ""
        taken = f" (--rows {expansion.rows}{shown} of {total})"
    groups, problems = _by_model(table, spec, models, expansion)
    if expansion.refused and groups and all(g.spec.endpoint_id == spec.endpoint_id for g in groups):
        raise UsageError(expansion.refused[0])  # every row runs on the model that refuses it
    problems += table.problems
    problems += _hidden(table)
    problems += _expansion_misfits(groups)
    if len(groups) == 1:
        ((only, group, expanded),) = groups
        rows, found = _rows_of(group, only, folder, expanded)
        problems += found
    else:
        rows, found = _rows_of_models(groups, folder)
        problems += found
    problems.sort(key=lambda p: p.row or 0)
    if table.letters:
        problems = [_in_sheet(problem, table) for problem in problems]
    if any(p.severity == "error" for p in problems):
        raise ManifestError(str(path), problems)
    specs = {group.spec.endpoint_id: group.spec for group in groups}
    problems += _takes_alike(rows, specs, spec)
    logger.debug("manifest %s: %d jobs, %d warnings", source, len(rows), len(problems))
    return Manifest(
        source,
        spec,
        rows,
        table.columns,
        warnings=problems,
        records=len(table.records),
        taken=taken,
        specs=specs,
    )


def _takes_alike(
    rows: list[ManifestRow], specs: dict[str, ModelSpec], default: ModelSpec
) -> list[Problem]:
    """A note for each model whose rows have several takes but no ``seed`` field to tell them
    apart: each take is the same request (the provider may still return another video), as
    ``retry --new-take`` says of such a model."""
    endpoints = dict.fromkeys(
        row.endpoint
        for row in rows
        if _TAKE.search(row.variant) and "seed" not in specs.get(row.endpoint, default).fields
    )
    return [
        Problem(
            f"{endpoint} has no seed field: the takes of a row (--count) repeat the same "
            "request, each bought (the provider may still return a different video)",
            severity="warning",
        )
        for endpoint in endpoints
    ]


_TAKE = re.compile(r"(?:^|~)t\d+$")


def _in_sheet(problem: Problem, table: Table) -> Problem:
    """``problem`` naming the workbook cell it is about, as Excel does ("D7"): a data row
    number is one less than the sheet's, or more when rows above the header are blank."""
    if problem.row is None or problem.column is None or problem.cell is not None:
        return problem
    cell = table.cell(problem.row, problem.column)
    return problem if cell is None else dataclasses.replace(problem, cell=cell)


def _rows_of(
    table: Table, spec: ModelSpec, folder: Path, expansion: Expansion
) -> tuple[list[ManifestRow], list[Problem]]:
    """The jobs of ``table``'s records, every one of them run on ``spec``, and the problems
    found (the table's own, of reading the file, apart)."""
    columns = Columns(table.columns, spec, expansion)
    problems = list(columns.problems if table.columns else [])
    problems += _prompts_replaced(table, expansion) + _cells_varied(table, expansion)
    builder = RowBuilder(spec, columns, folder, expansion)
    quick = builder.plain_rows(table)
    done = all_distinct(quick) if quick is not None else None
    if done is not None:  # every row one valid job (most manifests)
        return done, problems
    built: list[Built] = []
    for i, record in enumerate(table.records):
        row = quick[i] if quick else None
        if row is None:
            built += builder.build(record)
        else:  # built already: its id cell is plain text
            built.append(Built(record, control_text(record.cells.get("id")), row.output, row))
    problems += unique_problems(p for b in built for p in b.problems)
    duplicates, dropped = find_duplicates(
        built, dedupe=expansion.dedupe, matrix=bool(expansion.matrix)
    )
    problems += duplicates
    return [b.row for b in built if b.row is not None and id(b) not in dropped], problems


def _prompts_replaced(table: Table, expansion: Expansion) -> list[Problem]:
    """A ``--prompt-template`` that does not use ``{prompt}`` replaces every row's prompt:
    one error for the manifest when rows wrote one of their own (hand-written prompts would be
    dropped without a word)."""
    template = expansion.prompt_template
    if template is None or "prompt" in placeholders(template) or "prompt" not in table.columns:
        return []
    written = _rows_filling(table, "prompt")
    if not written:
        return []
    message = (
        f"--prompt-template would replace the prompt {counted(len(written), 'row')} wrote "
        f"(rows {first_ten(written)}): put {{prompt}} in the template to build on it, or "
        "empty the column (or rename it to keep it as metadata)"
    )
    return [Problem(message, column="prompt")]


def _cells_varied(table: Table, expansion: Expansion) -> list[Problem]:
    """A ``--matrix`` field that rows also fill: every variant takes the matrix's values, so
    what the rows wrote is not used (a warning for the field, naming the rows)."""
    problems = []
    for name, _ in expansion.matrix:
        if name == MODEL or name not in table.columns:
            continue
        written = _rows_filling(table, name)
        if written and name == "prompt":  # hand-written prompts are never dropped
            message = (
                f"--matrix prompt=... would drop the prompts {counted(len(written), 'row')} "
                f"wrote (rows {first_ten(written)}): empty those cells (or remove the column) "
                "to vary the prompt by --matrix, or vary another field"
            )
            problems.append(Problem(message, column=name))
        elif written:
            message = (
                f"--matrix {name}=... replaces what {counted(len(written), 'row')} wrote "
                f"(rows {first_ten(written)}): each variant takes the matrix's value"
            )
            problems.append(Problem(message, column=name, severity="warning"))
    return problems


def _rows_filling(table: Table, name: str) -> list[int]:
    """The rows whose cell in column ``name`` is not empty (a column at a time: fast)."""
    rows, _ = table.numbers()
    return [row for row, cell in zip(rows, table.cells(name), strict=True) if not is_empty(cell)]


class _Group(NamedTuple):
    """Records that run on one model, and how they expand."""

    spec: ModelSpec
    table: Table
    expansion: Expansion


def _by_model(
    table: Table, spec: ModelSpec, models: Callable[[str], ModelSpec], expansion: Expansion
) -> tuple[list[_Group], list[Problem]]:
    """``table``'s records grouped by the model each runs on, in the order the models first
    appear: its ``model`` cell (looked up once per distinct cell), else ``spec``. A cell that
    names no model is a problem of its row, whose record then joins no group.

    With ``--matrix model=a,b`` every record runs on each model (the matrix overrides the
    cell, as it does a field's): one group per model, whose matrix holds that model alone, so
    each variant's label still names it in its place (``fox~fal-ai/veo3.1~16:9``). A model id
    there that names no model raises :class:`~batchrunner.errors.UsageError`."""
    matrix = dict(expansion.matrix)
    if MODEL in matrix:
        return _each_on_every_model(table, matrix[MODEL], models, expansion), []
    if MODEL not in table.columns:
        return [_Group(spec, table, expansion)], []
    rows, lines = table.numbers()
    looked_up: dict[str, ModelSpec | str] = {}  # a cell's text -> its model, or what is wrong
    members: dict[str, list[int]] = {}
    specs: dict[str, ModelSpec] = {}
    problems: list[Problem] = []
    named = False  # some cell names a model
    for i, cell in enumerate(table.cells("model")):
        try:
            given = control_text(cell)
            text = given or spec.endpoint_id
        except BadCell as exc:
            problems.append(Problem(str(exc), rows[i], lines[i], "model", shown(cell)))
            continue
        found = looked_up.get(text)
        if found is None:
            try:
                found = looked_up[text] = models(text)
            except UsageError as exc:
                found = looked_up[text] = str(exc)
        if isinstance(found, str):
            problems.append(Problem(found, rows[i], lines[i], "model", text))
            continue
        named = named or bool(given)
        specs.setdefault(found.endpoint_id, found)
        members.setdefault(found.endpoint_id, []).append(i)
    if problems and not named and not any("/" in str(p.value) for p in problems):
        # no cell names a model, nor looks like an endpoint id (owner/app...): a column of
        # notes from before the column named the model
        example = problems[0]
        message = (
            f"no cell of the 'model' column names a model (row {example.row}: "
            f"{example.value!r}); it names the endpoint each row runs on (an empty cell: "
            "--model): rename the column to keep it as a note"
        )
        return [], [Problem(message, column=MODEL)]
    if len(members) == 1 and not problems:
        ((endpoint, _),) = members.items()
        return [_Group(specs[endpoint], table, expansion)], []
    records = table.records
    return [
        _Group(
            specs[endpoint],
            dataclasses.replace(table, records=[records[i] for i in kept]),
            expansion,
        )
        for endpoint, kept in members.items()
    ], problems


def _each_on_every_model(
    table: Table, ids: tuple[str, ...], models: Callable[[str], ModelSpec], expansion: Expansion
) -> list[_Group]:
    """A group of every record for each of ``--matrix model=``'s ``ids``."""
    groups: list[_Group] = []
    for text in ids:
        try:
            spec = models(text)
        except UsageError as exc:
            raise UsageError(f"--matrix model={text}: {exc}") from None
        if any(group.spec.endpoint_id == spec.endpoint_id for group in groups):
            raise UsageError(f"--matrix model names {spec.endpoint_id} twice; give it once")
        one = tuple(
            (name, (spec.endpoint_id,) if name == MODEL else values)
            for name, values in expansion.matrix
        )
        groups.append(_Group(spec, table, dataclasses.replace(expansion, matrix=one)))
    return groups


def _expansion_misfits(groups: list[_Group]) -> list[Problem]:
    """``--set`` and ``--matrix`` fields (and the config file's) that a row's model does not
    have (checked against ``--model`` only when every row runs on it): a
    default is then not sent (a warning; an error when no model has it: a typo); a matrix
    would make variants that are the same request, each bought (an error)."""
    problems: list[Problem] = []
    known = [group.spec for group in groups if group.spec.known]
    if groups and len(known) == len(groups):
        for name in groups[0].expansion.defaults:
            if name != OUTPUT and not any(name in spec.fields for spec in known):
                models = " or ".join(spec.endpoint_id for spec in known)
                message = f"--set {name} (or [defaults]): {models} has no such field"
                problems.append(Problem(message, column=name))
    for spec, group, expansion in groups:
        if not spec.known:
            continue
        for name, _ in expansion.matrix:
            if name != MODEL and name not in spec.fields:
                message = (
                    f"--matrix {name}: {spec.endpoint_id} has no {name!r} field, so the variants "
                    f"of {_row_list(group.numbers()[0])} would be one request bought several "
                    f"times on it; leave {name} out of the matrix, or run those rows on another "
                    "model"
                )
                problems.append(Problem(message, column="model"))
        for name in expansion.defaults:
            if name == OUTPUT:
                continue
            if any(name in other.fields for other in known) and name not in spec.fields:
                message = (
                    f"--set {name} (or [defaults]): {spec.endpoint_id} has no {name!r} field, "
                    f"so it is not sent for {_row_list(group.numbers()[0])}"
                )
                problems.append(Problem(message, column="model", severity="warning"))
    return problems


def _rows_of_models(groups: list[_Group], folder: Path) -> tuple[list[ManifestRow], list[Problem]]:
    """The jobs of a manifest whose rows run on several models, each group read as a manifest
    of its own model, then merged in row order; and the problems of all of them.

    A column is a field for the models that have it. In the rows of a model that does not,
    it is metadata, said once if one of them fills it in (it is not sent); it is no
    "unknown column" while another model of the manifest reads it. A problem of the columns
    that only some models have (a required column missing) names them and their rows."""
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    said: dict[tuple[str, str | None, str], list[str]] = {}  # column problems -> models
    somewhere = {name for group in groups if group.spec.known for name in group.spec.fields}
    for spec, group, expansion in groups:
        found, group_problems = _rows_of(group, spec, folder, expansion)
        rows += found
        numbers = group.numbers()[0]
        whose = f"{spec.endpoint_id} ({_row_list(numbers)})"
        for problem in group_problems:
            if problem.row is not None:  # named after its model: another may take the value
                message = f"for {spec.endpoint_id}: {problem.message}"
                problems.append(dataclasses.replace(problem, message=message))
            elif problem.column in somewhere and problem.column not in spec.fields:
                continue  # another model's field: see below
            else:
                key = (problem.message, problem.column, problem.severity)
                said.setdefault(key, []).append(whose)
        if not spec.known:
            continue  # every column is sent as read
        for name in sorted(somewhere - set(spec.fields) - set(CONTROL_COLUMNS)):
            filled = [
                n for n, cell in zip(numbers, group.cells(name), strict=True) if not is_empty(cell)
            ]
            if filled:
                message = (
                    f"{spec.endpoint_id} has no {name!r} field, so it is not sent for "
                    f"{_row_list(filled)} (kept as metadata)"
                )
                problems.append(Problem(message, column=name, severity="warning"))
    for (message, column, severity), whom in said.items():
        if len(whom) < len(groups):
            message = f"for {' and '.join(whom)}: {message}"
        problems.append(Problem(message, column=column, severity=severity))
    rows.sort(key=lambda row: row.row)  # stable: a row's variants keep their order
    return rows, problems + _shared_across_models(rows)


def _row_list(rows: Sequence[int], shown: int = 5) -> str:
    """``row 2``, ``rows 2, 3, 7`` or ``rows 2, 3, 7, 9, 12 and 40 more``."""
    listed = ", ".join(str(row) for row in rows[:shown])
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    return f"row {listed}" if len(rows) == 1 else f"rows {listed}{more}"


def _shared_across_models(rows: list[ManifestRow]) -> list[Problem]:
    """Ids and output names that rows of different models share (those of one model are
    :func:`find_duplicates`' to find): each is one job's and one video's."""
    problems: list[Problem] = []
    by_id: dict[str, ManifestRow] = {}
    by_output: dict[str, ManifestRow] = {}
    for row in rows:
        first = by_id.setdefault(row.job_id, row)
        if first.endpoint != row.endpoint:
            message = (
                f"the id {row.job_id!r} is also used by row {first.row}; each id must be unique"
            )
            problems.append(Problem(message, row.row, row.line, "id", row.job_id.split("~")[0]))
        if row.output is not None:
            first = by_output.setdefault(row.output.casefold(), row)
            if first.endpoint != row.endpoint:
                message = (
                    f"the output name {row.output!r} is also used by row {first.row}; "
                    "two videos cannot share a file"
                )
                problems.append(Problem(message, row.row, row.line, "output", row.output))
    return problems


def _selected(table: Table, rows: Rows) -> Table:
    """The rows ``--rows`` takes (``visible``: those a workbook does not hide), with their own
    numbers, and the problems of those rows and of the whole file (its header); a selection
    that takes no row is an error."""
    numbers, _ = table.numbers()
    if not numbers:
        return table
    hidden = set(table.hidden_rows) if rows.visible else set()
    keep = [i for i, row in enumerate(numbers) if row in rows and row not in hidden]
    if not keep:
        if hidden:
            raise UsageError(f"--rows {rows}: the sheet shows none of those rows")
        raise UsageError(
            f"--rows {rows}: the manifest has no such rows (its rows are numbered "
            f"{numbers[0]}-{numbers[-1]}, as `plan` and errors number them)"
        )
    records = [table.records[i] for i in keep]
    kept = {numbers[i] for i in keep}
    problems = [p for p in table.problems if p.row is None or p.row in kept]
    past = rows.past(numbers[-1])
    if past:
        message = f"--rows {', '.join(past)}: past the manifest's last row ({numbers[-1]})"
        problems.append(Problem(message, severity="warning"))
    if rows.visible and not table.hidden_rows:
        message = (
            "--rows visible: no row of the manifest is hidden (only a workbook's can be), so "
            "every row is taken"
        )
        problems.append(Problem(message, severity="warning"))
    return dataclasses.replace(table, records=records, problems=problems)


def _hidden(table: Table) -> list[Problem]:
    """A warning naming the rows read that the workbook hides (by hand, or a filter's rows
    filtered out): they are made like the others unless ``--rows visible`` leaves them out."""
    if not table.hidden_rows:
        return []
    read = set(table.numbers()[0])
    hidden = [table.header_row + row for row in table.hidden_rows if row in read]
    if not hidden:
        return []
    message = (
        f"{counted(len(hidden), 'row')} of the sheet {'is' if len(hidden) == 1 else 'are'} "
        "hidden (by hand or by a filter: sheet rows "
        f"{first_ten(hidden)}); they are read like the others: --rows visible takes only "
        "the rows the sheet shows (or delete the hidden ones from it)"
    )
    return [Problem(message, severity="warning")]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector paused while a manifest's rows are built, planned or recorded.

    Those make hundreds of thousands of long-lived objects and no garbage cycles: every full
    collection would only walk all of them again (a fifth of a 100,000-row load). The
    collector runs again as usual once the work is done.

    What was made meanwhile then goes straight to the oldest generation (``freeze`` and
    ``unfreeze``: two list splices), as it would after surviving two collections: re-enabled
    as it was, the collector would first walk every one of those objects in a young
    collection (0.1 s after a 100,000-row load). Garbage among them is still collected, by
    the next full collection. Skipped when the program keeps frozen objects of its own."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()
