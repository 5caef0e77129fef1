"""The rows stage of the manifest loader: each record of a table made the jobs it asks for.

A :class:`RowBuilder` takes one record through coercion (each cell to its field's type),
expansion (defaults, matrix, prompt template, takes: one row can be many jobs), local files
(checked and hashed once) and the model's own checks, and makes a :class:`ManifestRow` per job:
its id, request, output name, metadata and cost, or the row's problems. :func:`find_duplicates`
then finds jobs that are one request, or one output file, across the manifest
(:mod:`batchrunner.manifest` runs the stages; :mod:`batchrunner.columns` decides what each
column feeds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrunner import identity
from batchrunner.cells import Record, Table
from batchrunner.coerce import (
    BAD,
    OMIT,
    BadCell,
    Coercer,
    FieldKind,
    coerce,
    control_text,
    plain,
    shown,
)
from batchrunner.columns import Columns
from batchrunner.errors import Problem
from batchrunner.expand import (
    MAX_TAKES,
    Expansion,
    TemplateError,
    Variant,
    render,
    take_seed,
    variants,
)
from batchrunner.frozen import assemble
from batchrunner.images import (
    NOT_FOUND,
    ImageChecker,
    LocalFile,
    as_written_here,
    data_uri_problem,
    file_key,
    is_local,
    kind_of_field,
    local_path_of,
    misread,
    normalize_url,
    place,
    resolve,
    unfetchable,
    url_problem,
)
from batchrunner.models import ModelSpec
from batchrunner.paths import (
    check_output_name,
    check_video_suffix,
    name_part,
    safe_name,
    with_extension,
)

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


def _take_of(variant: str) -> str:
    """A variant label's take (``16:9~t2`` → ``t2``; "" for a row's only take)."""
    last = variant.rpartition("~")[2]
    return last if last[:1] == "t" and last[1:].isdigit() else ""


def unique_problems(problems: Iterable[Problem]) -> list[Problem]:
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


@dataclass
class Built:
    record: Record
    user_id: str | None = None
    output: str | None = None
    row: ManifestRow | None = None
    problems: list[Problem] = field(default_factory=list)


class RowBuilder:
    def __init__(self, spec: ModelSpec, columns: Columns, base_dir: Path, expansion: Expansion):
        self.spec = spec
        self.columns = columns
        self.base_dir = base_dir
        self.expansion = expansion
        self.images = ImageChecker()
        self._checked: dict[tuple[str, int, str], LocalFile | str] = {}
        self._coercers = {name: Coercer(kind) for name, kind in columns.fields.items()}
        # a model outside the registry has no schema to say which fields take a file: its
        # ``*_url`` columns do, by fal's naming (a local path in one was sent as the text)
        self.file_fields = (
            spec.file_fields
            if spec.input_schema is not None
            else tuple(name for name in columns.fields if name.endswith("_url"))
        )

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
        for name in self.file_fields:  # a URL is sent as it is; a local file is checked
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

    def build(self, record: Record) -> list[Built]:
        """One entry per job the row expands to (or one carrying the row's problems)."""
        takes = self._takes(record)
        if isinstance(takes, Problem):  # checked as one take too: every problem of it at once
            others = [p for built in self._expanded(record, 1) for p in built.problems]
            return [Built(record, problems=[takes, *others])]
        return self._expanded(record, takes)

    def _expanded(self, record: Record, takes: int) -> list[Built]:
        try:
            return [self._variant(record, v) for v in variants(record.cells, takes, self.expansion)]
        except TemplateError as exc:
            if exc.column in self.columns.template_gaps:
                return [Built(record)]  # said once, for the whole manifest
            column = exc.column if exc.column in record.cells else "prompt"
            value = shown(record.cells.get(column))
            return [
                Built(record, problems=[Problem(str(exc), record.row, record.line, column, value)])
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

    def _variant(self, record: Record, variant: Variant) -> Built:
        built = Built(record)
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
                return Built(record)  # said once, for the whole manifest
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
        for name in self.file_fields:
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
                    checked = self._file(name, item, in_list=isinstance(cell, list))
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

    def _file(self, name: str, cell: str, *, in_list: bool = False) -> LocalFile | str:
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
        cell = as_written_here(cell, self.base_dir)  # "images\\fox.png", as Windows writes it
        limit, kind = self.spec.max_file_bytes(name), kind_of_field(name)
        checked = self._checked.get((cell, limit, kind))
        if checked is None:  # a cell seen before in this load is not even stat-ed again
            checked = self.images.check(resolve(cell, self.base_dir), limit, kind)
            self._checked[(cell, limit, kind)] = checked
        if isinstance(checked, str):
            raise BadCell(
                checked + misread(cell, in_list) if checked.startswith(NOT_FOUND) else checked
            )
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


def all_distinct(rows: list[ManifestRow | None]) -> list[ManifestRow] | None:
    """``rows`` when every row was built and no two share a job id or an output name (so
    :func:`find_duplicates` would have nothing to say); None otherwise."""
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


def find_duplicates(
    built: list[Built], *, dedupe: bool, matrix: bool
) -> tuple[list[Problem], set[int]]:
    """Duplicate ids, outputs and identical requests, each naming both rows; with a
    ``matrix``, also the variants of one row that are one request (takes differ by seed).

    With ``dedupe``, a request identical to an earlier one (both without an id, or two
    variants of a row) is dropped with a warning instead; the ids (``id()``) of dropped
    entries are returned.
    """
    problems: list[Problem] = []
    dropped: set[int] = set()
    by_output: dict[str, Built] = {}
    by_id: dict[str, Built] = {}
    by_request: dict[tuple[int, str], Built] = {}  # a row's variants, by their request
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
                elif _take_of(twin.row.variant) != _take_of(b.row.variant):  # seeds met
                    message = (
                        f"{same}: a take's seed (the row's plus the take number less one) is "
                        "another matrix value's seed; space the seeds out by --count or more, "
                        "or use --dedupe"
                    )
                    problems.append(Problem(message, record.row, record.line))
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
