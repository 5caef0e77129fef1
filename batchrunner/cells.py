"""Read a manifest file into cells: the first stage of :mod:`batchrunner.manifest`.

Every format ends up as one :class:`Table`: cleaned column names, and one :class:`Record` per
non-blank data row holding the raw cell values (strings for CSV/TSV, JSON values for JSONL,
Excel values for XLSX, Arrow values for Parquet). Nothing here knows about models; problems found
while reading (encoding, ragged rows, bad JSON lines, duplicate headers) are returned with the
table so the loader can report them together with everything else.

Row numbers: the header is the first non-blank record; row N is the Nth record after it. Blank
records (every cell empty) are skipped but still use up their number, so in a spreadsheet data
row N sits on sheet row N+1 when the header is on row 1. JSONL has no header and no spreadsheet
view: row N is its Nth non-blank line. Line numbers (CSV/TSV/JSONL) are where a record starts,
correct even when a quoted cell spans several lines.

The line-based formats are read with the standard library rather than pandas: it gives line
numbers and lets a ragged row be one problem instead of an abort. XLSX is read with openpyxl
directly (pandas turns an error cell such as ``#DIV/0!`` into an empty cell, which would
silently apply a default), Parquet with pyarrow (nulls stay ``None``, integers stay integers).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import html
import io
import itertools
import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from batchrunner.errors import Problem, UsageError, counted

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",  # a workbook with macros: its cells read alike, its macros never run
    ".parquet": "parquet",
}
_SAVE_AS = {  # what to do with a file of another kind, by its suffix
    ".xls": "save it as .xlsx",
    ".ods": "save it as .xlsx",
    ".numbers": "export it from Numbers as CSV or Excel",
    ".txt": 'save it as CSV UTF-8 (Excel\'s "Unicode Text" .txt is not read)',
}
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # a data: URI of an 8 MB image is ~11 MB of text


@dataclass(frozen=True)
class CellError:
    """An Excel error value (``#DIV/0!``, ``#REF!``, ...) shown in a cell instead of a value,
    or a formula whose value no spreadsheet app ever saved (``unsaved``: read as empty, it
    would apply a default unseen)."""

    code: str  # the error's code; for a formula with no saved value, the formula
    unsaved: bool = False

    def __str__(self) -> str:
        return self.code

    @property
    def message(self) -> str:
        """What is wrong with the cell, and what to do."""
        if self.unsaved:
            return (
                "the cell holds a formula whose value was never saved (a workbook written by a "
                "program, not saved by a spreadsheet app); open and save it in Excel or "
                "LibreOffice, or write the value"
            )
        return f"the cell shows the Excel error {self.code}; fix the formula or type a value"


@dataclass(slots=True)  # not frozen: that is an object.__setattr__ per field, per row
class Record:
    row: int  # 1-based data row (see the module docstring)
    line: int | None  # 1-based line where the record starts; None for XLSX/Parquet
    cells: dict[str, Any]  # column name -> raw value


@dataclass
class Table:
    columns: list[str] = field(default_factory=list)
    records: Sequence[Record] = field(default_factory=list)  # a list, or a _Grid
    problems: list[Problem] = field(default_factory=list)  # errors and warnings
    hidden_rows: list[int] = field(default_factory=list)  # a workbook's, as data rows
    header_row: int = 1  # the sheet row of the header (sheet row = header_row + data row)
    letters: dict[str, str] = field(default_factory=dict)  # a workbook's: column → "D"

    def cell(self, row: int, column: str) -> str | None:
        """Where a data row's cell is in the workbook, as Excel names it ("D7"); None for
        other formats (and a column the sheet does not have)."""
        letter = self.letters.get(column)
        return None if letter is None else f"{letter}{self.header_row + row}"

    def cells(self, name: str) -> list[Any]:
        """Each record's cell in the column ``name``, None where it has none."""
        if isinstance(self.records, _Grid):
            return self.records.column(name)
        return [record.cells.get(name) for record in self.records]

    def numbers(self) -> tuple[Sequence[int], Sequence[int | None]]:
        """Each record's row and line."""
        if isinstance(self.records, _Grid):
            return self.records.numbers()
        return [r.row for r in self.records], [r.line for r in self.records]


class _Grid(Sequence[Record]):
    """The records of a file read whole (:func:`_full_rows`: every record one line, every
    column named, every row full), kept as the values the CSV reader gave; a :class:`Record`
    is made only when one is asked for. The loader reads a plain table a column at a time
    (:meth:`Table.cells`): making every record up front, each with its dict of cells, was
    0.14 s of a 100,000-row load (and 30 MB), for records it never looked at."""

    def __init__(self, names: list[str], body: list[list[str]], first_line: int):
        self._names = names
        self._body = body  # row k's values are body[k - 1]; row k starts on line first_line + k
        self._first_line = first_line

    def __len__(self) -> int:
        return len(self._body)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        row = range(1, len(self) + 1)[index]  # raises IndexError as a list would
        cells = dict(zip(self._names, self._body[row - 1], strict=True))
        return Record(row, self._first_line + row, cells)

    def __iter__(self) -> Iterator[Record]:
        return map(self.__getitem__, range(len(self)))

    def column(self, name: str) -> list[Any]:
        if name not in self._names:
            return [None] * len(self)
        index = self._names.index(name)
        return [values[index] for values in self._body]

    def numbers(self) -> tuple[range, range]:
        rows = len(self)
        return range(1, rows + 1), range(self._first_line + 1, self._first_line + rows + 1)


def read_table(
    path: Path, *, sheet: str | int | None = None, columns: Collection[str] = ()
) -> Table:
    """The cells of the manifest at ``path``; raises UsageError when it cannot be opened.

    ``columns`` (lower case) are names a header may hold: when the first non-blank row names
    none of them and one of the next rows does, that row is the header, and the rows above it
    (a title, a note: sheets made for people have them) are skipped with a warning."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        said = _SAVE_AS.get(path.suffix.lower())
        hint = f" ({said})" if said else ""
        allowed = ", ".join(FORMATS)
        raise UsageError(f"{path}: unknown manifest format{hint}; use one of {allowed}")
    if not path.exists():
        raise UsageError(f"manifest not found: {path}")
    if not path.is_file():
        raise UsageError(f"the manifest is not a file: {path}")
    if sheet is not None and kind != "xlsx":
        raise UsageError(f"{path}: a sheet can only be chosen in an .xlsx workbook")
    if kind == "xlsx":
        return _read_xlsx(path, sheet, columns)
    if kind == "parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    text, problem = decode(data, kind)
    if problem is not None:
        return Table(problems=[problem])
    assert text is not None
    if not text.strip():
        return Table(problems=[Problem("the manifest is empty")])
    if kind == "jsonl":
        return _read_jsonl(text)
    if kind == "json":
        return _read_json(text)
    delimiter = "\t" if kind == "tsv" else sniff_delimiter(text)
    text, skipped = _below_title(text, delimiter, columns)
    table = _read_delimited(text, delimiter)
    table.problems[:0] = skipped
    return table


HEADER_SEARCH = 20  # rows looked at for a header below a title
HEADER_SEARCH_CHARS = 1 << 16  # ... within the first characters of a text file


def _header_index(rows: Sequence[Sequence[Any]], columns: Collection[str]) -> int | None:
    """The index of the header in ``rows`` when it is not the first non-blank row: the first
    row naming one of ``columns``, when the first non-blank row names none. None otherwise
    (the first non-blank row is the header, as always)."""
    first = True
    for index, values in enumerate(rows[:HEADER_SEARCH]):
        if _blank(values):
            continue
        if any(_clean_name(value).lower() in columns for value in values):
            return None if first else index
        first = False
    return None


def _skipped_above(rows: Sequence[Sequence[Any]], header: Sequence[Any]) -> list[Problem]:
    """The warning for the rows above a header found below them."""
    shown = "; ".join(
        ", ".join(repr(_clean_name(v)) for v in values if _clean_name(v))
        for values in rows
        if not _blank(values)
    )
    named = ", ".join(repr(n) for n in map(_clean_name, header) if n)
    message = (
        f"the header is the first row naming columns ({_short(named)}); "
        f"the rows above it were skipped: {_short(shown)}"
    )
    return [Problem(message, severity="warning")]


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _below_title(text: str, delimiter: str, columns: Collection[str]) -> tuple[str, list[Problem]]:
    """``text`` with the lines above its header blanked (line numbers kept), when the header is
    below a title (:func:`_header_index`); the text as it is otherwise."""
    if not columns:
        return text, []
    head_text = text[:HEADER_SEARCH_CHARS]  # not a copy of a 100,000-row file to read 20 rows
    reader = csv.reader(io.StringIO(head_text, newline=""), delimiter=delimiter)
    head: list[list[str]] = []
    ends: list[int] = []
    try:
        for values in reader:
            head.append(values)
            ends.append(reader.line_num)
            if len(head) >= HEADER_SEARCH:
                break
    except csv.Error:
        return text, []  # the whole read says where
    index = _header_index(head, columns)
    if index is None:
        return text, []
    lines = list(io.StringIO(text, newline=""))
    above = ends[index - 1]  # the lines before the header's first
    blanked = [line[len(line.rstrip("\r\n")) :] for line in lines[:above]]
    return "".join([*blanked, *lines[above:]]), _skipped_above(head[:index], head[index])


def decode(data: bytes, kind: str) -> tuple[str | None, Problem | None]:
    """A text file's bytes as text (UTF-8, with or without a BOM), or the problem with them: a
    workbook, UTF-16, or another encoding (with the line it shows on)."""
    save_as = "save it as 'CSV UTF-8' in Excel" if kind == "csv" else "save it as UTF-8"
    if data.startswith(b"PK\x03\x04"):
        return None, Problem("this is a zip file, probably an Excel workbook: name it .xlsx")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None, Problem(f"the file is UTF-16 (Excel's 'Unicode Text'), not UTF-8; {save_as}")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start : exc.start + 1].hex().upper()
        try:
            data.decode("cp1252")
            guess = "it looks like Latin-1/Windows-1252"
        except UnicodeDecodeError:
            guess = "its encoding is unknown"
        message = f"the file is not UTF-8 (byte 0x{byte} on this line); {guess} — {save_as}"
        return None, Problem(message, line=line)


def sniff_delimiter(text: str) -> str:
    """``,`` unless the header uses ``;`` (Excel's CSV in many European locales) or tabs (a
    sheet copied out of a spreadsheet, saved as ``.csv``) and no ``,``."""
    first = _first_line(text.lstrip(" \r\n"))  # blank lines: the header's line is the first
    if "," in first:
        return ","
    return "\t" if "\t" in first else ";" if ";" in first else ","


def _first_line(text: str) -> str:
    """``text.splitlines()[0]`` without splitting all of a large file."""
    size = 4096
    while True:
        lines = text[:size].splitlines()
        if len(lines) > 1 or size >= len(text):
            return lines[0] if lines else ""
        size *= 16


def _blank(values: Iterable[Any]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _clean_name(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().strip("\ufeff").strip()


class _Header:
    """Column names from a header row: stripped, unnamed ones kept only if they hold values."""

    def __init__(self, raw: Sequence[Any]):
        self.names = [_clean_name(v) for v in raw]
        self.problems: list[Problem] = []
        self.keep: list[tuple[int, str]] = []  # (position, name) of columns read into records
        first_seen: dict[str, int] = {}
        for index, name in enumerate(self.names):
            if not name:
                name = self.names[index] = f"column_{index + 1}"
            if name in first_seen:
                self.problems.append(
                    Problem(
                        f"column {name!r} appears twice (columns {first_seen[name] + 1} and "
                        f"{index + 1}); rename or delete one",
                    )
                )
                continue
            first_seen[name] = index
            self.keep.append((index, name))
        self._unnamed = {i for i, v in enumerate(raw) if not _clean_name(v)}
        self._used_unnamed: set[int] = set()
        # every column named, once: a row's cells are its values in order
        self.plain = not self._unnamed and len(self.keep) == len(self.names)

    def record(self, row: int, line: int | None, values: Sequence[Any]) -> Record:
        if self.plain and len(values) >= len(self.names):
            return Record(row, line, dict(zip(self.names, values, strict=False)))  # extras: blank
        cells = {}
        for index, name in self.keep:
            value = values[index] if index < len(values) else None
            if index in self._unnamed:
                if _blank([value]):
                    continue
                self._used_unnamed.add(index)
            cells[name] = value
        return Record(row, line, cells)

    def finish(self, records: Sequence[Record], *, unread: bool = False) -> Table:
        columns = [n for i, n in self.keep if i not in self._unnamed or i in self._used_unnamed]
        problems = list(self.problems)
        for index in sorted(self._used_unnamed):
            name = self.names[index]
            message = (
                f"column {index + 1} has no name in the header; its cells are kept as {name!r}"
            )
            problems.append(Problem(message, column=name, severity="warning"))
        if not records and not unread:
            problems.append(Problem("the manifest has a header but no rows"))
        return Table(columns, records, problems)


def _read_delimited(text: str, delimiter: str) -> Table:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    # strict: a cell's quotes must pair up. Otherwise a stray quote at the start of a cell
    # (or a file cut off while being written) makes that cell run on through the rows after it,
    # which vanish into one prompt
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        parsed = list(reader)
    except csv.Error:  # read again record by record, to say where
        parsed = None
    ended = text.endswith(("\n", "\r"))  # the last row whole, or cut off while being written?
    if parsed is None or reader.line_num != len(parsed):  # or a quoted line break somewhere
        again = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        return _read_records(again, text, delimiter, ended=ended)
    return _full_rows(parsed) or _read_records(_OneLineEach(parsed), ended=ended)


def _full_rows(parsed: list[list[str]]) -> Table | None:
    """The table in one pass when every record is one line, every column is named and every
    row is full (no blank or ragged row); None otherwise."""
    first = next((k for k, values in enumerate(parsed) if not _blank(values)), None)
    if first is None:
        return None
    header = _Header(parsed[first])
    width = len(header.names)
    body = parsed[first + 1 :]
    if not header.plain or any(
        len(values) != width or (not values[0].strip() and not "".join(values).strip())
        for values in body
    ):
        return None
    return header.finish(_Grid(header.names, body, first + 1))


class _OneLineEach:
    """Records already read, record k on line k + 1: a ``csv.reader`` for :func:`_read_records`."""

    def __init__(self, records: list[list[str]]):
        self.records = records
        self.line_num = 0

    def __iter__(self) -> Iterator[list[str]]:
        for number, values in enumerate(self.records, 1):
            self.line_num = number
            yield values


def _read_records(
    reader: Any, text: str = "", delimiter: str = ",", *, ended: bool = True
) -> Table:
    """The table from a ``csv.reader`` of ``text``, record by record: blank rows skipped (they
    keep their number), a ragged row one problem, an unreadable record where it starts and in
    the column where it goes wrong. A row may have fewer cells than the header names (the rest
    are empty), except the last one when the text does not end with a line break (``ended``):
    that is a file cut off mid-row, by a sync or an editor still writing it, and buying its
    truncated prompt would make the whole row look edited the next night."""
    header: _Header | None = None
    records: list[Record] = []
    problems: list[Problem] = []
    row = end = 0
    short: Problem | None = None  # the last row read, if it is short
    try:
        for values in reader:
            line, end = end + 1, reader.line_num
            if header is None:
                if not _blank(values):
                    header = _Header(values)
                continue
            row += 1
            if not "".join(values).strip():  # blank (the cells of a CSV are all text)
                continue
            width = len(header.names)
            short = _cut_short(header, values, row, line)
            extra = values[width:]
            if extra and not _blank(extra):
                spaced = next((v for v in values if v[:1].isspace() and v.lstrip()[:1] == '"'), "")
                why = (
                    "a quote after a space does not quote a cell in CSV: remove the space "
                    f"before {_short(spaced.strip(), 24)}"
                    if spaced
                    else "a stray comma, or a cell with a comma that needs quotes?"
                )
                message = (
                    f"this row has {len(values)} cells but the header names {width} columns ({why})"
                )
                problems.append(Problem(message, row=row, line=line, value=extra[0]))
                continue  # its cells are shifted: checking them would only add noise
            records.append(header.record(row, line, values))
        if short is not None and not ended:
            problems.append(short)
    except csv.Error as exc:
        problem = _unreadable(exc, row + 1, end + 1, reader.line_num)
        cell = _broken_cell(_from_line(text, end + 1), delimiter)
        if header is not None and cell is not None:
            named = header.names[cell] if cell < len(header.names) else f"column_{cell + 1}"
            problem = dataclasses.replace(problem, column=named)
        problems.append(problem)
    if header is None:
        return Table(problems=[*problems, Problem("the manifest is empty")])
    table = header.finish(records, unread=bool(problems))
    table.problems[:0] = problems
    return table


def _cut_short(header: _Header, values: Sequence[str], row: int, line: int) -> Problem | None:
    """What to say if a file ends with this row, ``values`` having fewer cells than ``header``."""
    if len(values) >= len(header.names):
        return None
    missing = header.names[len(values)]
    message = (
        f"the file ends in this row, before its {missing!r} cell, with no line break after "
        "it: a file still being written? Run again once it is saved whole (a row meant to "
        "end early: end it with a line break)"
    )
    return Problem(message, row=row, line=line, column=missing)


def _unreadable(exc: csv.Error, row: int, start: int, stop: int) -> Problem:
    """The record from line ``start`` cannot be read (the reader gave up on line ``stop``)."""
    said = str(exc)
    if said == "unexpected end of data":
        lines = f"line {stop} was" if stop == start + 1 else f"lines {start + 1}-{stop} were"
        swallowed = f", and {lines} read as its text" if stop > start else ""
        message = (
            f"a quoted cell here is never closed: the file ends inside it{swallowed} (a stray "
            '" at the start of a cell, or a file still being written?)'
        )
    elif "expected after" in said:
        where = f" (on line {stop})" if stop > start else ""
        message = (
            f"a quoted cell here closes before its text ends{where}: a quote inside a quoted "
            'cell is written twice ("say ""hi"""), and a stray " at the start of a cell runs '
            "on to the next quote"
        )
    else:
        message = f"cannot be read: {said}"
    return Problem(message, row=row, line=start)


def _from_line(text: str, line: int) -> str:
    """``text`` from the start of its ``line`` (1-based), lines ended as ``csv`` ends them."""
    lines = io.StringIO(text, newline="")
    for _ in range(line - 1):
        if not lines.readline():
            return ""
    return lines.read()


def _broken_cell(record: str, delimiter: str) -> int | None:
    """The index of the cell where strict CSV reading of the record at the start of ``record``
    fails: a quoted cell that closes before its text ends, or is never closed. None when the
    record reads (Python's ``csv.reader`` does not say which cell it was in)."""
    cell, at, size = 0, 0, len(record)
    while at < size:
        if record[at] == '"':  # a quoted cell: to its closing quote
            at += 1
            while True:
                close = record.find('"', at)
                if close < 0:
                    return cell  # never closed
                if record.startswith('"', close + 1):  # "" is a quote in the text
                    at = close + 2
                    continue
                at = close + 1
                break
            if at < size and record[at] not in (delimiter, "\r", "\n"):
                return cell  # text after the closing quote
        else:  # a plain cell: to the next delimiter or line end
            while at < size and record[at] not in (delimiter, "\r", "\n"):
                at += 1
        if at >= size or record[at] != delimiter:
            return None  # the record ended whole
        cell, at = cell + 1, at + 1
    return None


_JSON_KINDS = {list: "an array", str: "a string", bool: "true/false", int: "a number"}


def _read_jsonl(text: str) -> Table:
    problems: list[Problem] = []

    def objects() -> Iterator[tuple[int, int | None, Any, str]]:
        row = 0
        # split on "\n" only: str.splitlines would also split inside strings on U+2028 and friends
        for line, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            row += 1
            try:
                yield row, line, json.loads(raw), raw.strip()
            except json.JSONDecodeError as exc:
                message = f"this line is not valid JSON: {exc.msg} (at character {exc.colno})"
                problems.append(Problem(message, row=row, line=line, value=raw.strip()))

    return _json_table(objects(), "line", problems)


def _read_json(text: str) -> Table:
    """A ``.json`` manifest: an array of objects, one a row, as tools export them (rows are
    numbered from 1; there are no line numbers). A file of one object a line (JSON Lines
    under a ``.json`` name) is read as JSON Lines."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{"):  # more than one object: one a line
            return _read_jsonl(text)
        message = f"the file is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        return Table(problems=[Problem(message)])
    if isinstance(value, dict):
        nested = [
            k for k, v in value.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        ]
        if nested:  # {"records": [...]}, as some tools wrap an export
            message = f"the rows look to be under {nested[0]!r}: give the array itself, [{{...}}]"
            return Table(problems=[Problem(message)])
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        message = f'a .json manifest is an array like [{{"prompt": ...}}], not {_json_kind(value)}'
        return Table(problems=[Problem(message)])
    objects = ((row, None, item, json.dumps(item)[:200]) for row, item in enumerate(items, 1))
    return _json_table(objects, "item", [])


def _json_table(
    objects: Iterable[tuple[int, int | None, Any, str]], unit: str, problems: list[Problem]
) -> Table:
    """The table of JSON values, one a row: ``(row, line, value, its text)`` each; a value that
    is no object is a problem naming its ``unit`` (a line, an item)."""
    records: list[Record] = []
    columns: dict[str, None] = {}
    for row, line, value, shown in objects:
        if not isinstance(value, dict):
            message = f'each {unit} must be a JSON object like {{"prompt": ...}}, not '
            problems.append(Problem(message + _json_kind(value), row=row, line=line, value=shown))
            continue
        cells = {_clean_name(k): v for k, v in value.items()}
        columns.update(dict.fromkeys(cells))
        if not _blank(cells.values()):
            records.append(Record(row, line, cells))
    if not records and not problems:
        problems.append(Problem("the manifest has no rows"))
    return Table(list(columns), records, problems)


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), "null" if value is None else "a number")


IN_MEMORY = "<rows>"  # the source name of a manifest given as rows rather than a file


def read_records(rows: Any) -> Table:
    """A table from rows in memory: a ``pandas.DataFrame`` or a sequence of dicts.

    Rows are numbered from 1 in order, like a file's (blank rows keep their number); missing
    values (None, NaN, NaT) are empty cells; numpy scalars become plain Python values. A
    DataFrame's named index (``set_index("id")``, ``read_csv(..., index_col="id")``) is read as
    columns, first: the ids it holds are the rows' own, not to be dropped for made-up ones.
    """
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a DataFrame, without importing
        frame = _with_named_index(rows)
        columns = [_clean_name(c) for c in frame.columns]
        _refuse_repeated(columns)
        rows_of = frame.astype(object).where(frame.notna(), None).itertuples(False, None)
        items = [dict(zip(columns, values, strict=True)) for values in rows_of]
    elif isinstance(rows, Sequence) and all(isinstance(r, dict) for r in rows):
        items = [{_clean_name(k): v for k, v in r.items()} for r in rows]
        columns = list(dict.fromkeys(c for item in items for c in item))
    else:
        raise UsageError(
            "a manifest is a file path, a pandas.DataFrame or a list of dicts, "
            f"not {type(rows).__name__}"
        )
    _refuse_repeated(columns)
    records = [
        Record(row, None, {k: _plain_scalar(v) for k, v in item.items()})
        for row, item in enumerate(items, 1)
        if not _blank(item.values())
    ]
    problems = [] if records else [Problem("the manifest has no rows")]
    return Table(columns, records, problems)


def _with_named_index(frame: Any) -> Any:
    """``frame`` with the levels of its index that have a name as its first columns."""
    named = [name for name in frame.index.names if name is not None]
    if not named:
        return frame
    clash = [name for name in named if name in frame.columns]
    if clash:
        raise UsageError(
            f"the DataFrame's index {clash[0]!r} is also one of its columns: "
            "drop one of them, or reset_index(drop=True)"
        )
    return frame.reset_index(level=named)


def _refuse_repeated(columns: Sequence[str]) -> None:
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise UsageError(
                f"the rows have the column {column!r} more than once (after trimming spaces); "
                "give each column one name"
            )
        seen.add(column)


def _plain_scalar(value: Any) -> Any:
    """numpy/pandas values as Python ones: ``numpy.int64(3)`` → ``3``, and a numpy array (what
    pandas holds for a Parquet list column: ``image_urls``) or a tuple → a list of them, as a
    JSON list in a cell reads."""
    if type(value).__module__.startswith("numpy"):
        to_list = getattr(value, "tolist", None)
        if callable(to_list):  # a scalar's Python value, an array's list
            value = to_list()
    if isinstance(value, list | tuple):
        return [_plain_scalar(item) for item in value]
    if type(value).__name__ == "Timestamp":
        return value.to_pydatetime()
    return value


def _table_from_rows(rows: Iterator[Sequence[Any]], *, sheet: bool = False) -> Table:
    """Header + records from the rows of a sheet-like source (no line numbers); a ``sheet``'s
    columns get their letters (:meth:`Table.cell`)."""
    header: _Header | None = None
    records: list[Record] = []
    row = 0
    header_row = 0
    for values in rows:
        if header is None:
            header_row += 1
            if not _blank(values):
                header = _Header(values)
            continue
        row += 1
        if not _blank(values):
            records.append(header.record(row, None, values))
    if header is None:
        return Table(problems=[Problem("the manifest is empty")])
    table = header.finish(records)
    table.header_row = header_row
    if sheet:
        from openpyxl.utils import get_column_letter

        table.letters = {name: get_column_letter(index + 1) for index, name in header.keep}
    return table


def _read_xlsx(path: Path, sheet: str | int | None, columns: Collection[str] = ()) -> Table:
    import openpyxl  # imported late: it is slow to import and only workbooks need it

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile/XML errors of many kinds
        return Table(problems=[Problem(f"cannot read the workbook: {exc}")])
    try:
        names = workbook.sheetnames
        if isinstance(sheet, str) and sheet not in names and sheet.isdigit():
            sheet = int(sheet)  # --sheet 1 from the command line: an index unless a sheet's name
        shown = [w for w in workbook.worksheets if w.sheet_state == "visible"]
        if sheet is None:  # the first sheet a user sees, not a hidden draft before it
            worksheet = (shown or workbook.worksheets)[0]
        elif isinstance(sheet, int) and 0 <= sheet < len(workbook.worksheets):
            worksheet = workbook.worksheets[sheet]
        elif isinstance(sheet, str) and sheet in names:
            worksheet = workbook[sheet]
        else:
            from batchrunner.spelling import hint, near_id

            listed = ", ".join(repr(n) for n in names)
            guess = near_id(str(sheet), names) if isinstance(sheet, str) else None
            raise UsageError(
                f"{path}: no sheet {sheet!r}{hint(guess)}; the sheets are {listed} (or 0, 1, ...)"
            )

        hidden, merged, unsaved, hidden_columns = _sheet_marks(worksheet)
        downward, spans = _merged_down(merged)

        def values() -> Iterator[list[Any]]:
            filling: dict[int, tuple[Any, int]] = {}  # column → (its merged value, last row)
            for number, cells in enumerate(worksheet.iter_rows(), 1):
                row = [
                    CellError(str(c.value))
                    if c.data_type == "e"
                    else unescaped(c.value)
                    if isinstance(c.value, str) and "_x" in c.value
                    else c.value
                    for c in cells
                ]
                for column, formula in unsaved.get(number, ()):
                    row.extend([None] * (column + 1 - len(row)))
                    row[column] = CellError(formula, unsaved=True)
                for column, (value, last) in list(filling.items()):
                    if number > last:
                        del filling[column]
                        continue
                    row.extend([None] * (column + 1 - len(row)))  # a row stored short
                    if row[column] is None:
                        row[column] = value
                for column, last in downward.get(number, ()):
                    row.extend([None] * (column + 1 - len(row)))
                    filling[column] = (row[column], last)
                yield row

        rows = values()
        head = list(itertools.islice(rows, HEADER_SEARCH)) if columns else []
        index = _header_index(head, columns) if head else None
        skipped = []
        if index is not None:
            skipped = _skipped_above(head[:index], head[index])
            head[:index] = [[] for _ in range(index)]  # blank: no rows before a header
        table = _table_from_rows(itertools.chain(head, rows), sheet=True)
        table.problems[:0] = skipped
        table.hidden_rows = [row - table.header_row for row in hidden if row > table.header_row]
        by_letter = {letter: column for column, letter in table.letters.items()}
        unseen = [
            f"{letter} ({by_letter[letter]!r})" for letter in hidden_columns if letter in by_letter
        ]
        if unseen:
            message = (
                f"hidden in the sheet: column {first_ten(unseen)}; its cells are read as "
                "any other's (unhide it to see what is bought, or delete it)"
            )
            table.problems.append(Problem(message, severity="warning"))
        if spans:
            message = (
                f"{counted(len(spans), 'merged cell')} {'spans' if len(spans) == 1 else 'span'} "
                f"several rows ({first_ten(spans)}): "
                "each row they cover reads the merged value, as the sheet shows it"
            )
            table.problems.append(Problem(message, severity="warning"))
        if sheet is None and len(names) > 1:
            others = ", ".join(
                repr(w.title) + ("" if w in shown else " (hidden)")
                for w in workbook.worksheets
                if w is not worksheet
            )
            first = "first" if len(shown) == len(names) else "first visible"
            table.problems.append(
                Problem(
                    f"the workbook has {len(names)} sheets; read the {first}, "
                    f"{worksheet.title!r} (the others: {others}); choose one with --sheet",
                    severity="warning",
                )
            )
        return table
    finally:
        workbook.close()


_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")


def unescaped(text: str) -> str:
    """A workbook's text as Excel shows it: OOXML writes a character XML cannot hold as
    ``_xHHHH_`` (a carriage return pasted into a cell is ``_x000D_``), which openpyxl leaves as
    it is, so it went into prompts as those seven characters."""
    return _ESCAPED.sub(lambda match: chr(int(match.group(1), 16)), text)


_HIDDEN_ROW = re.compile(rb"<row\b[^>]*\bhidden=\"(?:1|true)\"[^>]*>")
_HIDDEN_COLUMNS = re.compile(rb"<col\b[^>]*\bhidden=\"(?:1|true)\"[^>]*>")
_COLUMN_MIN, _COLUMN_MAX = re.compile(rb"\bmin=\"(\d+)\""), re.compile(rb"\bmax=\"(\d+)\"")
_ROW_NUMBER = re.compile(rb"\br=\"(\d+)\"")
_MERGED_CELLS = re.compile(rb"<mergeCell\b[^>]*\bref=\"([A-Z]+\d+:[A-Z]+\d+)\"")


def first_ten(items: Sequence[object]) -> str:
    return ", ".join(map(str, items[:10])) + (", ..." if len(items) > 10 else "")


def _sheet_marks(
    worksheet: Any,
) -> tuple[list[int], list[str], dict[int, list[tuple[int, str]]], list[str]]:
    """What openpyxl's read-only sheets do not expose, read from the sheet's XML: the sheet rows
    hidden (by hand, or a filter's rows filtered out), the merged ranges (``"B2:B4"``), the
    formula cells with no saved value (sheet row → column index and formula; an app saves
    each formula's value, a program writing the file may not), and the letters of the hidden
    columns; nothing when it cannot be read."""
    from openpyxl.utils import get_column_letter

    try:
        with worksheet._get_source() as source:  # the sheet's XML in the workbook's zip
            xml = source.read()
    except Exception:  # another openpyxl: the warnings are lost, nothing else
        return [], [], {}, []
    hidden = [
        int(number.group(1))
        for row in _HIDDEN_ROW.finditer(xml)
        if (number := _ROW_NUMBER.search(row.group(0)))
    ]
    merged = [m.group(1).decode() for m in _MERGED_CELLS.finditer(xml)]
    columns = []
    for tag in _HIDDEN_COLUMNS.finditer(xml):
        low, high = _COLUMN_MIN.search(tag.group(0)), _COLUMN_MAX.search(tag.group(0))
        if low and high:  # a range of columns (Excel hides the empty rest of a sheet as one)
            first, last = int(low.group(1)), int(high.group(1))
            columns += [get_column_letter(n) for n in range(first, min(last, first + 200) + 1)]
    return hidden, merged, _unsaved_formulas(xml), columns


def _unsaved_formulas(xml: bytes) -> dict[int, list[tuple[int, str]]]:
    """Sheet row → (column index, formula) of the formula cells whose value is absent
    (``<v/>``, or no ``<v>``); not those whose saved value is empty text (``t="str"``). Read
    only around each formula: most manifests have none."""
    from openpyxl.utils import column_index_from_string

    found: dict[int, list[tuple[int, str]]] = {}
    for formula in _FORMULA.finditer(xml):
        start = xml.rfind(b"<c ", 0, formula.start())
        end = xml.find(b"</c>", formula.end())
        cell = _CELL.match(xml, start) if start >= 0 and end >= 0 else None
        if cell is None or b't="str"' in cell.group(0) or _SAVED.search(xml, formula.end(), end):
            continue
        text = html.unescape((formula.group(1) or b"").decode("utf-8", "replace"))
        column, row = cell.group(1).decode(), int(cell.group(2))
        found.setdefault(row, []).append(
            (column_index_from_string(column) - 1, f"={text}" if text else "a shared formula")
        )
    return found


_FORMULA = re.compile(rb"<f\b[^>]*?(?:/>|>([^<]*)</f>)")
_CELL = re.compile(rb"<c\b[^>]*\br=\"([A-Z]+)(\d+)\"[^>]*>")
_SAVED = re.compile(rb"<v>[^<]")  # a value with something in it


def _merged_down(merged: list[str]) -> tuple[dict[int, list[tuple[int, int]]], list[str]]:
    """Merged ranges over several rows, by their first sheet row: (column index, last row),
    and those ranges, top to bottom. A range over several columns too gives its value to its
    first column (where the sheet shows it): another column's cells stay empty, not a copy of,
    say, a prompt."""
    from openpyxl.utils import range_boundaries

    downward: dict[int, list[tuple[int, int]]] = {}
    spans: list[tuple[int, int, str]] = []
    for ref in merged:
        column, first, _, last = range_boundaries(ref)
        if column is not None and first is not None and last is not None and last > first:
            downward.setdefault(first, []).append((column - 1, last))
            spans.append((first, column, ref))
    return downward, [ref for *_, ref in sorted(spans)]


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq  # imported late, like openpyxl

    try:
        arrow = pq.read_table(path)
    except Exception as exc:  # ArrowInvalid, OSError, ...
        return Table(problems=[Problem(f"cannot read the Parquet file: {exc}")])
    rows = zip(*(column.to_pylist() for column in arrow.columns), strict=True)
    return _table_from_rows(iter([list(arrow.column_names), *rows]))
