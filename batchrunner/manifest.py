"""The manifest loader: a spreadsheet in, validated job rows out, or every problem at once.

The pipeline, one stage per step::

    read      cells.read_table     CSV/TSV/JSONL/XLSX/Parquet -> column names + raw cells per row
    columns   columns.Columns      model fields, control columns (id, output), metadata (warned)
    coerce    coerce.coerce        each cell -> the type its model field declares (bool, int, ...)
    expand    expand.variants      defaults, matrix, prompt template, takes (one row -> N jobs)
    files     images.ImageChecker  local image paths -> LocalFile (checked, hashed once)
    validate  ModelSpec.problems   schema defaults filled, JSON Schema checks; errors -> Problems
    rows      ManifestRow          job id, output name, metadata, cost; then duplicate checks

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
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from batchrunner import identity
from batchrunner.cells import IN_MEMORY, Record, Table, first_ten, read_records, read_table
from batchrunner.coerce import (
    BAD,
    OMIT,
    BadCell,
    Coercer,
    FieldKind,
    coerce,
    control_text,
    is_empty,
    plain,
    shown,
)
from batchrunner.columns import CONTROL_COLUMNS, Columns
from batchrunner.errors import ManifestError, Problem, UsageError, counted
from batchrunner.expand import (
    MAX_TAKES,
    MODEL,
    OUTPUT,
    Expansion,
    Rows,
    TemplateError,
    Variant,
    placeholders,
    render,
    take_seed,
    variants,
)
from batchrunner.frozen import assemble
from batchrunner.images import (
    NOT_FOUND,
    ImageChecker,
    LocalFile,
    data_uri,
    data_uri_problem,
    file_key,
    is_local,
    kind_of_field,
    local_path_of,
    materialize,
    misread,
    normalize_url,
    place,
    resolve,
    unfetchable,
    url_problem,
)
from batchrunner.models import ModelSpec, get_model
from batchrunner.paths import (
    check_output_name,
    check_video_suffix,
    name_part,
    safe_name,
    with_extension,
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

_COUNT = FieldKind("count", "int")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ManifestRow:
    row: int  # 1-based data row (the header is not a row)
    line: int | None  # 1-based line where the row starts (CSV/TSV/JSONL), None otherwise
    job_id: str  # the id cell (+ ~variant), else job_id_for(...)
    payload: dict[str, Any]  # validated request body; a local-file field holds its absolute path
    files: dict[str, LocalFile]  # field name -> local file, for fields that named one
    output: str | None  # the output cell, checked, with the default extension added if missing
    metadata: dict[str, Any]  # every other column, as given (dates as ISO text)
    cost_usd: float | None  # spec.cost(payload)
    variant: str = ""  # matrix values and take, e.g. "16:9~1080p~t2"; "" for a plain row
    endpoint: str = ""  # the model it runs on: its ``model`` cell, else the manifest's model


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
    logger.debug("manifest %s: %d jobs, %d warnings", source, len(rows), len(problems))
    return Manifest(
        source,
        spec,
        rows,
        table.columns,
        warnings=problems,
        records=len(table.records),
        taken=taken,
        specs={group.spec.endpoint_id: group.spec for group in groups},
    )


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
    builder = _RowBuilder(spec, columns, folder, expansion)
    quick = builder.plain_rows(table)
    done = _all_distinct(quick) if quick is not None else None
    if done is not None:  # every row one valid job (most manifests)
        return done, problems
    built: list[_Built] = []
    for i, record in enumerate(table.records):
        row = quick[i] if quick else None
        if row is None:
            built += builder.build(record)
        else:  # built already: its id cell is plain text
            built.append(_Built(record, control_text(record.cells.get("id")), row.output, row))
    problems += _unique(p for b in built for p in b.problems)
    duplicates, dropped = _duplicates(built, dedupe=expansion.dedupe, matrix=bool(expansion.matrix))
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
        if written:
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
    :func:`_duplicates`' to find): each is one job's and one video's."""
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


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    """The variants of one row share its mistakes: report each once."""
    seen: dict[tuple[Any, ...], Problem] = {}
    for p in problems:
        seen.setdefault((p.row, p.column, p.message, repr(p.value), p.severity), p)
    return list(seen.values())


def job_id_for(
    endpoint_id: str,
    payload: dict[str, Any],
    files: dict[str, LocalFile],
    take: int | None = None,
) -> str:
    """``j`` + 16 hex of sha256 over the canonical request (local files by their sha256) and,
    for a row with several takes, the take number (:mod:`batchrunner.identity`)."""
    return identity.job_id(endpoint_id, payload, {k: f.sha256 for k, f in files.items()}, take)


# -- rows ---------------------------------------------------------------------------------------


@dataclass
class _Built:
    record: Record
    user_id: str | None = None
    output: str | None = None
    row: ManifestRow | None = None
    problems: list[Problem] = field(default_factory=list)


class _RowBuilder:
    def __init__(self, spec: ModelSpec, columns: Columns, base_dir: Path, expansion: Expansion):
        self.spec = spec
        self.columns = columns
        self.base_dir = base_dir
        self.expansion = expansion
        self.images = ImageChecker()
        self._checked: dict[tuple[str, int, str], LocalFile | str] = {}
        self._coercers = {name: Coercer(kind) for name, kind in columns.fields.items()}

    def plain_rows(self, table: Table) -> list[ManifestRow | None] | None:
        """Each record that is one job and plainly valid, built a column at a time; None for
        the others, which :meth:`build` makes (and reports on) one by one. None for all when
        the expansion adds anything to a row (defaults, matrix, template, takes).

        Plainly valid: no ``{`` in the prompt, no count, every file a URL, every cell coerced
        and every value within the schema. Those are :meth:`build`'s checks made a column at
        a time, with each distinct short cell coerced and checked once: the same rows come
        out, in a fraction of the time.
        """
        if not self.expansion.plain or (self.expansion.count or 1) != 1:
            return None
        records = table.records
        n = len(records)
        slow: set[int] = set()  # rows for build()
        counted = [i for i, c in enumerate(table.cells("count")) if c is not None]
        slow.update(i for i in counted if self._takes(records[i]) != 1)
        prompts = table.cells("prompt")
        slow.update(
            i for i, p in enumerate(prompts) if isinstance(p, str) and ("{" in p or "}" in p)
        )
        ids = _control_column(table.cells("id"), slow)
        if _CONTROL_CHARS.search("".join(filter(None, ids))):
            slow.update(i for i, t in enumerate(ids) if t and _CONTROL_CHARS.search(t))
        outputs = _control_column(table.cells("output"), slow)
        for i, output in enumerate(outputs):
            if output is not None and ("{" in output or "}" in output):
                slow.add(i)  # placeholders, filled row by row
            elif output is not None:
                extension = self.spec.default_extension
                named = _variant_output(output, "", extension)
                if (
                    check_output_name(output)
                    or check_output_name(named)
                    or check_video_suffix(output, extension)
                ):
                    slow.add(i)  # the row by row read says what is wrong
                else:
                    outputs[i] = named
        columns: dict[str, list[Any]] = {}
        for name, coercer in self._coercers.items():
            column = coercer.column(table.cells(name))
            for i in [i for i, value in enumerate(column) if value is BAD]:
                slow.add(i)
                column[i] = OMIT
            columns[name] = column
        for name in self.spec.file_fields:  # a URL is sent as it is; a local file is checked
            column = columns.get(name, [])
            urls: list[int] = []
            for i, value in enumerate(column):
                if type(value) is str and value.startswith(_URLS):
                    urls.append(i)
                elif value is not OMIT:
                    slow.add(i)  # a local file, a data: URI, a list: checked row by row
            slow.update(urls[k] for k in unfetchable([column[i] for i in urls]))
        checker = self.spec.checker
        if checker is not None and checker.by_field:
            slow |= checker.broken_rows(columns, n, OMIT)
        per_body = checker is not None and not checker.by_field

        every = checker.defaults if checker else {}
        payloads = _payloads(columns, {k: v for k, v in every.items() if k not in columns}, n)
        for i in _rows_with(columns.values(), OMIT):  # some fields left to their defaults
            payloads[i] = self.spec.complete(
                {k: column[i] for k, column in columns.items() if column[i] is not OMIT}
            )
        price_fields = self.spec.price.fields if self.spec.price else ()
        costs = self.spec.costs(
            {name: _with_default(columns.get(name), every.get(name), n) for name in price_fields},
            n,
        )
        metadata = self.columns.metadata
        endpoint = self.spec.endpoint_id
        rows: list[ManifestRow | None] = [None] * n
        meta_by_row = (
            zip(*(_metadata_column(table.cells(m)) for m in metadata), strict=True)
            if metadata
            else None
        )
        for i, (row, line, payload, user_id, output, cost) in enumerate(
            zip(*table.numbers(), payloads, ids, outputs, costs, strict=True)
        ):
            meta = dict(zip(metadata, next(meta_by_row), strict=True)) if meta_by_row else {}
            if i in slow:
                continue
            if per_body and self.spec.problems(payload):
                continue
            job_id = user_id or job_id_for(endpoint, payload, {})
            rows[i] = _manifest_row(row, line, job_id, payload, output, meta, cost, endpoint)
        return rows

    def build(self, record: Record) -> list[_Built]:
        """One entry per job the row expands to (or one carrying the row's problems)."""
        takes = self._takes(record)
        if isinstance(takes, Problem):  # checked as one take too: every problem of it at once
            others = [p for built in self._expanded(record, 1) for p in built.problems]
            return [_Built(record, problems=[takes, *others])]
        return self._expanded(record, takes)

    def _expanded(self, record: Record, takes: int) -> list[_Built]:
        try:
            return [self._variant(record, v) for v in variants(record.cells, takes, self.expansion)]
        except TemplateError as exc:
            if exc.column in self.columns.template_gaps:
                return [_Built(record)]  # said once, for the whole manifest
            column = exc.column if exc.column in record.cells else "prompt"
            value = shown(record.cells.get(column))
            return [
                _Built(record, problems=[Problem(str(exc), record.row, record.line, column, value)])
            ]

    def _takes(self, record: Record) -> int | Problem:
        cell = record.cells.get("count")
        default = self.expansion.count or 1
        if cell is None:  # no count column (the usual)
            return default
        try:
            takes = coerce(cell, _COUNT)
        except BadCell as exc:
            return Problem(str(exc), record.row, record.line, "count", shown(cell))
        if takes is OMIT:
            return default
        if not 1 <= takes <= MAX_TAKES:
            message = f"must be between 1 and {MAX_TAKES} takes"
            return Problem(message, record.row, record.line, "count", shown(cell))
        return int(takes)

    def _variant(self, record: Record, variant: Variant) -> _Built:
        built = _Built(record)
        cells = variant.cells

        def problem(message: str, column: str | None) -> None:
            value = shown(cells.get(column)) if column else None
            built.problems.append(Problem(message, record.row, record.line, column, value))

        try:
            built.user_id = control_text(cells.get("id"))
            if built.user_id and _CONTROL_CHARS.search(built.user_id):
                problem("an id may not contain line breaks, tabs or control characters", "id")
        except BadCell as exc:
            problem(str(exc), "id")
        try:
            output = control_text(cells.get("output"))
            if output is not None:
                output = render(output, cells, what="the output name", text=name_part)
            reason = (
                check_output_name(output) or check_video_suffix(output, self.spec.default_extension)
                if output is not None
                else None
            )
            if not reason and output is not None:
                named = _variant_output(output, variant.label, self.spec.default_extension)
                too_long = check_output_name(named)  # with the label and extension added
                if too_long:
                    added = "its extension and variant label" if variant.label else "its extension"
                    reason = f"{too_long} with {added}"
                else:
                    built.output = named
            if reason:
                problem(reason, "output")
        except TemplateError as exc:
            if exc.column in self.columns.template_gaps:
                return _Built(record)  # said once, for the whole manifest
            problem(str(exc), "output")
        except BadCell as exc:
            problem(str(exc), "output")

        values: dict[str, Any] = {}
        skip = set(self.columns.missing)  # fields whose "required" error is already reported
        for name, coerce_cell in self._coercers.items():
            try:
                value = coerce_cell(cells.get(name))
            except BadCell as exc:
                problem(str(exc), name)
                skip.add(name)
                continue
            if value is not OMIT:
                values[name] = value
        files = self._files(values, skip, problem)
        if variant.takes > 1 and "seed" in self.spec.fields and "seed" not in skip:
            basis = json.dumps({**values, "seed": None}, sort_keys=True, default=str)
            values["seed"] = take_seed(values.get("seed"), basis, variant.take)
        payload = self.spec.complete(values)
        errors = self.spec.problems(payload)
        for error in errors:
            if error.kind != "missing":
                problem(error.message, error.field)
            elif error.field not in skip:  # else: reported once, as a missing column
                problem("is required but the cell is empty", error.field)
        if built.problems or errors:
            return built  # no row; its problems (or the missing column's) are reported
        for key, file in files.items():
            place(payload, key, file.path)
        if built.user_id:
            job_id = f"{built.user_id}~{variant.label}" if variant.label else built.user_id
        else:
            take = variant.take if variant.takes > 1 else None
            job_id = job_id_for(self.spec.endpoint_id, payload, files, take)
        built.row = ManifestRow(
            row=record.row,
            line=record.line,
            job_id=job_id,
            payload=payload,
            files=files,
            output=built.output,
            metadata={name: plain(cells.get(name)) for name in self.columns.metadata},
            cost_usd=self.spec.cost(payload),
            variant=variant.label,
            endpoint=self.spec.endpoint_id,
        )
        return built

    def _files(
        self, values: dict[str, Any], skip: set[str], problem: Callable[[str, str], None]
    ) -> dict[str, LocalFile]:
        """Check the file fields (each item of a list field); a local file is swapped for a
        placeholder ``data:`` URI until the row is valid, then for its absolute path."""
        files: dict[str, LocalFile] = {}
        for name in self.spec.file_fields:
            cell = values.get(name)
            if isinstance(cell, str) and cell.startswith(_URLS) and not url_problem(cell):
                continue  # a URL is sent as it is (the most common cell by far)
            items = cell if isinstance(cell, list) else [cell]
            if not items or not all(isinstance(item, str) for item in items):
                continue  # absent, or not text: the schema says what is wrong
            sent: list[str] = []
            for index, item in enumerate(items):
                key = file_key(name, index if isinstance(cell, list) else None)
                try:
                    checked = self._file(name, item)
                except BadCell as exc:
                    where = f"item {index + 1}: " if isinstance(cell, list) else ""
                    problem(f"{where}{exc}", name)
                    skip.add(name)
                    continue
                if isinstance(checked, LocalFile):
                    files[key] = checked
                    checked = f"data:{checked.mime};base64,"
                sent.append(checked)
            if name in skip:
                values.pop(name, None)
            else:
                values[name] = sent if isinstance(cell, list) else sent[0]
        return files

    def _file(self, name: str, cell: str) -> LocalFile | str:
        """The checked local file, or the URL to send; raises BadCell saying what is wrong."""
        cell = local_path_of(cell)  # file:///Users/me/fox.png, as a browser or Finder copies it
        if not is_local(cell):
            url = normalize_url(cell)
            if url.startswith(_URLS):
                reason = url_problem(url)
                if reason:
                    raise BadCell(reason)
                return url
            if not url.startswith("data:"):
                raise BadCell("must be an http(s) URL, a data: URI or a local file")
            reason = data_uri_problem(url, self.spec.max_file_bytes(name))
            if reason:
                raise BadCell(reason)
            return url
        limit, kind = self.spec.max_file_bytes(name), kind_of_field(name)
        checked = self._checked.get((cell, limit, kind))
        if checked is None:  # a cell seen before in this load is not even stat-ed again
            checked = self.images.check(resolve(cell, self.base_dir), limit, kind)
            self._checked[(cell, limit, kind)] = checked
        if isinstance(checked, str):
            raise BadCell(checked + misread(cell) if checked.startswith(NOT_FOUND) else checked)
        return checked


def _control_column(values: list[Any], slow: set[int]) -> list[str | None]:
    """:func:`control_text` of each cell; a row whose cell is not text goes to ``slow``."""
    texts: list[Any] = [(v.strip() or None) if type(v) is str else v for v in values]
    for i in [i for i, text in enumerate(texts) if text is not None and type(text) is not str]:
        try:
            texts[i] = control_text(texts[i])
        except BadCell:
            texts[i] = None
            slow.add(i)
    return texts


def _payloads(
    columns: dict[str, list[Any]], defaults: dict[str, Any], rows: int
) -> list[dict[str, Any]]:
    """Each row's body: its value in each of ``columns``, then ``defaults``. A row with an
    :data:`OMIT` gets one too, in the wrong order: :func:`_rows_with` finds those to redo.

    Made a column at a time from copies of one dict whose keys are already in place: for
    100,000 rows of 3 columns + 5 defaults, 0.05 s instead of 0.15 s for ``dict(zip(...))``
    per row (a copy of a dict clones its table; a store to a key it has is no insert)."""
    template = dict.fromkeys(columns) | defaults
    payloads = [template.copy() for _ in range(rows)]
    for name, column in columns.items():
        for payload, value in zip(payloads, column, strict=True):
            payload[name] = value
    return payloads


def _rows_with(columns: Iterable[list[Any]], marker: object) -> list[int]:
    """The rows (in order, once each) where some column holds ``marker``."""
    found: set[int] = set()
    for column in columns:
        if marker in column:  # most columns have none: one pass in C, not in Python
            found.update(i for i, value in enumerate(column) if value is marker)
    return sorted(found)


def _with_default(column: list[Any] | None, default: Any, rows: int) -> list[Any]:
    """A field's value in each body: its cell's, else its default (None: absent)."""
    if column is None:
        return [default] * rows
    return [default if value is OMIT else value for value in column] if OMIT in column else column


def _metadata_column(cells: list[Any]) -> list[Any]:
    return [v if type(v) is str else plain(v) for v in cells]


_URLS = ("http://", "https://")


def _manifest_row(
    row: int,
    line: int | None,
    job_id: str,
    payload: dict[str, Any],
    output: str | None,
    metadata: dict[str, Any],
    cost_usd: float | None,
    endpoint: str,
) -> ManifestRow:
    """``ManifestRow(row, line, job_id, payload, {}, output, metadata, cost_usd, "",
    endpoint)`` for a plain row, made by :func:`~batchrunner.frozen.assemble` (its
    ``__init__`` was a tenth of a 100,000-row load)."""
    return assemble(
        ManifestRow,
        {
            "row": row,
            "line": line,
            "job_id": job_id,
            "payload": payload,
            "files": {},
            "output": output,
            "metadata": metadata,
            "cost_usd": cost_usd,
            "variant": "",
            "endpoint": endpoint,
        },
    )


def _all_distinct(rows: list[ManifestRow | None]) -> list[ManifestRow] | None:
    """``rows`` when every row was built and no two share a job id or an output name (so
    :func:`_duplicates` would have nothing to say); None otherwise."""
    done = [row for row in rows if row is not None]
    if len(done) < len(rows):
        return None
    outputs = [row.output.casefold() for row in done if row.output is not None]
    if len({row.job_id for row in done}) < len(done) or len(set(outputs)) < len(outputs):
        return None
    return done


def _variant_output(name: str, label: str, extension: str) -> str:
    """``clip.mp4`` for the variant ``16:9~t2`` becomes ``clip~16_9~t2.mp4``."""
    name = with_extension(name, extension)
    if not label:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}~{safe_name(label)}{dot}{suffix}"


def relabelled_output(output: str | None, old: str, new: str, extension: str) -> str | None:
    """The output name of a row's variant ``old`` (``clip~t1.mp4``) as variant ``new`` would
    have it (``clip.mp4``)."""
    if output is None:
        return None
    stem, dot, suffix = output.rpartition(".")
    mark = f"~{safe_name(old)}"
    if old and stem.endswith(mark):
        output = f"{stem[: -len(mark)]}{dot}{suffix}"
    return _variant_output(output, new, extension)


def _duplicates(
    built: list[_Built], *, dedupe: bool, matrix: bool
) -> tuple[list[Problem], set[int]]:
    """Duplicate ids, outputs and identical requests, each naming both rows; with a
    ``matrix``, also the variants of one row that are one request (takes differ by seed).

    With ``dedupe``, a request identical to an earlier one (both without an id, or two
    variants of a row) is dropped with a warning instead; the ids (``id()``) of dropped
    entries are returned.
    """
    problems: list[Problem] = []
    dropped: set[int] = set()
    by_output: dict[str, _Built] = {}
    by_id: dict[str, _Built] = {}
    by_request: dict[tuple[int, str], _Built] = {}  # a row's variants, by their request
    for b in built:
        record = b.record
        if matrix and b.row is not None:  # matrix values that mean the same (8s and 8)
            request = json.dumps(b.row.payload, sort_keys=True, default=str)
            twin = by_request.setdefault((id(record), request), b)
            if twin is not b:
                assert twin.row is not None
                same = (
                    f"its variants {twin.row.variant!r} and {b.row.variant!r} are the same request"
                )
                if dedupe:
                    dropped.add(id(b))
                    message = f"row {record.row}: {same}; kept once (--dedupe)"
                    problems.append(Problem(message, record.row, record.line, severity="warning"))
                else:
                    message = (
                        f"{same}: two matrix values mean the same; give it once, or use --dedupe"
                    )
                    problems.append(Problem(message, record.row, record.line))
                continue
        if b.output is not None:
            first = by_output.setdefault(b.output.casefold(), b)
            if first is not b:
                message = (
                    f"the output name {b.output!r} is also used by row {first.record.row}; "
                    "two videos cannot share a file"
                )
                cell = record.cells.get("output")
                problems.append(Problem(message, record.row, record.line, "output", cell))
        job_id = b.row.job_id if b.row else b.user_id  # per variant: "shot-01~16:9~t2"
        if job_id is None:
            continue
        first = by_id.setdefault(job_id, b)
        if first is b:
            continue
        if first.record is record:
            if b.row is not None and first.row is not None:  # labels run together: a~b + c
                message = f"two of its variants are both named {job_id!r}; a matrix value has a '~'"
                problems.append(Problem(message, record.row, record.line))
            continue  # else a variant that failed: named by its row's id, and reported already
        other = first.record.row
        if b.user_id and first.user_id:
            message = f"the id {b.user_id!r} is also used by row {other}; each id must be unique"
            problems.append(Problem(message, record.row, record.line, "id", b.user_id))
        elif not b.user_id and not first.user_id and dedupe:
            dropped.add(id(b))
            message = f"row {record.row} is identical to row {other}; kept once (--dedupe)"
            problems.append(Problem(message, record.row, record.line, severity="warning"))
        elif not b.user_id and not first.user_id:
            message = (
                f"row {record.row} is identical to row {other}; "
                "give each an id column value if you really want both, or use --dedupe"
            )
            problems.append(Problem(message, record.row, record.line))
        else:
            message = f"the id {job_id!r} is also the computed id of row {other}; choose another"
            problems.append(Problem(message, record.row, record.line, "id", b.user_id))
    return problems, dropped
