"""The manifest loader: formats, coercion, ids, local images, and a corpus of bad manifests."""

from __future__ import annotations

import base64
import csv
import datetime
import hashlib
import io
import json
import random
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrunner import images
from batchrunner.config import find_config, load_config
from batchrunner.errors import ManifestError, Problem, UsageError
from batchrunner.expand import Expansion
from batchrunner.manifest import (
    LocalFile,
    Manifest,
    data_uri,
    job_id_for,
    load_manifest,
    materialize,
)
from batchrunner.models import MAX_IMAGE_BYTES, ModelSpec, get_model

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "manifests" / "bad"
LIGHTHOUSE = ROOT / "manifests" / "images" / "lighthouse.png"
URL = "https://example.com/in.png"
VEO3 = get_model("fal-ai/veo3/image-to-video")


def load(path: Path, spec: ModelSpec = VEO3, **kwargs: Any) -> Manifest:
    return load_manifest(path, spec, **kwargs)


def problems_of(path: Path, spec: ModelSpec = VEO3) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load(path, spec)
    assert caught.value.source == str(path)
    return caught.value.problems


def errors_of(path: Path, spec: ModelSpec = VEO3) -> list[Problem]:
    return [p for p in problems_of(path, spec) if p.severity == "error"]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_row(tmp_path: Path, **cells: Any) -> dict[str, Any]:
    """The payload of a one-row JSONL manifest (JSON keeps the cell's type: str, number, bool)."""
    row = {"prompt": "A calm lake", "image_url": URL, **cells}
    manifest = load(write_jsonl(tmp_path / "one.jsonl", [row]))
    return manifest.rows[0].payload


# ---------------------------------------------------------------------- formats

FRAME = pd.DataFrame(
    {
        "id": ["a", "b", ""],
        "prompt": ["A calm lake", "A windy hill, at dusk", "Rain on a tin roof\nat night"],
        "image_url": [URL, URL, URL],
        "duration": ["8s", "6s", "4s"],
        "generate_audio": [True, False, True],
        "seed": [42.0, None, 7.0],  # a column with a gap: pandas (and Excel) store floats
        " aspect_ratio ": ["16:9", "9:16", "auto"],  # names are stripped
        "output": ["lake", "", "rain.mp4"],
        "notes": ["first", "second", "third"],
    }
)


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def comparable(manifest: Manifest) -> list[tuple[Any, ...]]:
    return [(r.row, r.job_id, r.payload, r.output, r.metadata, r.cost_usd) for r in manifest.rows]


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".xlsx", ".parquet"])
def test_every_format_loads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    frame = FRAME.copy()
    if suffix in (".jsonl", ".xlsx", ".parquet"):  # typed formats: a missing id is a null
        frame["id"] = frame["id"].replace("", None)
        frame["output"] = frame["output"].replace("", None)
    expected = load(write_frame(FRAME, tmp_path / "m.csv"))
    loaded = load(write_frame(frame, tmp_path / f"m{suffix}"))

    assert comparable(loaded) == comparable(expected)
    assert [r.line for r in expected.rows] == [2, 3, 4]  # the multi-line prompt starts on 4
    lines = [r.line for r in loaded.rows]
    assert lines == ({".tsv": [2, 3, 4], ".jsonl": [1, 2, 3]}.get(suffix) or [None] * 3)
    assert loaded.columns == list(FRAME.columns.str.strip())


def test_the_csv_rows_hold_what_the_spreadsheet_said(tmp_path: Path) -> None:
    manifest = load(write_frame(FRAME, tmp_path / "m.csv"))
    first, second, third = manifest.rows
    assert first.payload == {
        "prompt": "A calm lake",
        "image_url": URL,
        "aspect_ratio": "16:9",
        "duration": "8s",
        "resolution": "720p",
        "generate_audio": True,
        "auto_fix": False,
        "seed": 42,
        "safety_tolerance": "4",
    }
    assert (first.job_id, first.output, first.metadata) == ("a", "lake.mp4", {"notes": "first"})
    assert "seed" not in second.payload and second.output is None
    assert third.job_id.startswith("j") and len(third.job_id) == 17
    assert third.payload["prompt"] == "Rain on a tin roof\nat night"
    assert [r.cost_usd for r in manifest.rows] == [3.2, 1.2, 1.6]


def test_utf8_bom_and_semicolons_from_european_excel(tmp_path: Path) -> None:
    text = f"prompt;image_url;duration\nUn café au bord du lac;{URL};6\n"
    path = tmp_path / "excel.csv"
    path.write_bytes(text.encode("utf-8-sig"))
    (row,) = load(path).rows
    assert (row.payload["prompt"], row.payload["duration"]) == ("Un café au bord du lac", "6s")


def test_tab_separated_rows_saved_as_csv_are_read_by_their_tabs(tmp_path: Path) -> None:
    """Rows copied out of a spreadsheet and saved as .csv keep their tabs: reading them by
    commas made one column named 'id\\tprompt\\t...' and a nonsense hint."""
    path = tmp_path / "pasted.csv"
    path.write_text(f"id\tprompt\timage_url\nfox\ta fox, in snow\t{URL}\n", encoding="utf-8")
    (row,) = load(path).rows
    assert (row.job_id, row.payload["prompt"]) == ("fox", "a fox, in snow")


def test_xlsx_sheet_by_name_or_index_and_numbers_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["nothing", "here"])
    sheet = workbook.create_sheet("shots")
    sheet.append(["prompt", "image_url", "duration", "seed", "generate_audio", "safety_tolerance"])
    sheet.append(["A calm lake", URL, 6.0, 42.0, 0.0, 2.0])
    workbook.save(path)
    for choice in ("shots", 1, "1"):
        (row,) = load(path, sheet=choice).rows
        assert row.line is None
        assert (row.payload["duration"], row.payload["seed"]) == ("6s", 42)
        assert (row.payload["generate_audio"], row.payload["safety_tolerance"]) == (False, "2")
    with pytest.raises(UsageError, match="'shots'"):
        load(path, sheet="Sheet9")
    with pytest.raises(UsageError, match=r"no sheet 'Shots' \(did you mean 'shots'\?\)"):
        load(path, sheet="Shots")


def test_xlsx_text_reads_as_excel_shows_it(tmp_path: Path) -> None:
    """Excel writes a carriage return pasted into a cell as ``_x000D_`` (OOXML's escape for a
    character XML cannot hold), and openpyxl leaves it so: the prompt was sent with those seven
    characters in it. ``_x005F_`` escapes a literal underscore."""
    path = tmp_path / "book.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["prompt", "image_url", "notes"])
    workbook.active.append(["a fox;in the snow", URL, "see a;x005F;x000D;b"])
    workbook.save(path)
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode()
    xml = xml.replace("a fox;in", "a fox_x000D_\nin").replace("a;x005F;x000D;b", "a_x005F_x000D_b")
    parts["xl/worksheets/sheet1.xml"] = xml.encode()
    with zipfile.ZipFile(path, "w") as book:
        for name, data in parts.items():
            book.writestr(name, data)
    (row,) = load(path).rows
    assert row.payload["prompt"] == "a fox\r\nin the snow"
    assert row.metadata["notes"] == "see a_x000D_b"


def test_xlsx_formulas_give_their_cached_values(tmp_path: Path) -> None:
    """A spreadsheet app saves a formula with its last computed value; that value is the cell."""
    path = tmp_path / "book.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["prompt", "image_url", "duration", "seed"])
    sheet.append(["A calm lake", URL, "=2*3", "=40+2"])
    workbook.save(path)
    # openpyxl stores no computed values; add them as Excel/LibreOffice would (<v> after <f>)
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode()
    xml = xml.replace("<f>2*3</f><v />", "<f>2*3</f><v>6</v>").replace(
        "<f>40+2</f><v />", "<f>40+2</f><v>42</v>"
    )
    assert "<v>6</v>" in xml and "<v>42</v>" in xml
    parts["xl/worksheets/sheet1.xml"] = xml.encode()
    with zipfile.ZipFile(path, "w") as book:
        for name, data in parts.items():
            book.writestr(name, data)
    (row,) = load(path).rows
    assert (row.payload["duration"], row.payload["seed"]) == ("6s", 42)


def test_a_formula_whose_value_was_never_saved_is_an_error_not_an_empty_cell(
    tmp_path: Path,
) -> None:
    """A workbook written by a program (openpyxl, say) stores formulas without their values:
    read as empty, a prompt would be "missing" and ``generate_audio`` back at its default (on,
    and paid for). Each such cell is an error naming the formula; a formula whose saved value
    is empty text is an empty cell, and one in a note column is kept as its formula."""

    def book(prompt: str, audio: str) -> Path:
        path = tmp_path / "book.xlsx"
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(["prompt", "image_url", "generate_audio", "negative_prompt", "note"])
        sheet.append([prompt, URL, audio, '=IF(1,"","x")', "=TODAY()"])
        workbook.save(path)
        with zipfile.ZipFile(path) as read:
            parts = {name: read.read(name) for name in read.namelist()}
        xml = parts["xl/worksheets/sheet1.xml"].decode()
        empty_text = '<c r="D2" t="str"><f>IF(1,"","x")</f><v></v>'  # as Excel saves ""
        xml = xml.replace('<c r="D2"><f>IF(1,"","x")</f><v />', empty_text)
        assert empty_text in xml
        parts["xl/worksheets/sheet1.xml"] = xml.encode()
        with zipfile.ZipFile(path, "w") as written:
            for name, data in parts.items():
                written.writestr(name, data)
        return path

    with pytest.raises(ManifestError) as caught:
        load(book('="A calm lake, "&"dawn"', "=1=0"))
    errors = [p for p in caught.value.problems if p.severity == "error"]
    assert [(p.column, p.value) for p in errors] == [
        ("prompt", '="A calm lake, "&"dawn"'),
        ("generate_audio", "=1=0"),
    ]
    assert all("formula whose value was never saved" in p.message for p in errors)
    (row,) = load(book("A calm lake", "no")).rows
    assert "negative_prompt" not in row.payload and row.payload["generate_audio"] is False
    assert row.metadata["note"] == "=TODAY()"


def test_unknown_format_and_missing_file_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.csv, \.tsv"):
        load(tmp_path / "shots.xls")
    with pytest.raises(UsageError, match="not found"):
        load(tmp_path / "absent.csv")
    with pytest.raises(UsageError, match="sheet"):
        load(write_frame(FRAME, tmp_path / "m.csv"), sheet="x")


# ---------------------------------------------------------------------- coercion

GOOD_CELLS = [
    ("generate_audio", "TRUE", True),
    ("generate_audio", "false", False),
    ("generate_audio", " Yes ", True),
    ("generate_audio", "n", False),
    ("generate_audio", "ON", True),
    ("generate_audio", "off", False),
    ("generate_audio", "1", True),
    ("generate_audio", "0.0", False),
    ("generate_audio", 1.0, True),
    ("generate_audio", 0, False),
    ("generate_audio", False, False),
    ("seed", 42, 42),
    ("seed", "42", 42),
    ("seed", 42.0, 42),
    ("seed", "42.0", 42),
    ("seed", " -7 ", -7),
    ("seed", "12345678901234567890", 12345678901234567890),
    ("duration", "8", "8s"),
    ("duration", 8.0, "8s"),
    ("duration", "6.0", "6s"),
    ("duration", " 4s ", "4s"),
    ("duration", "8S", "8s"),
    ("duration", "8 sec", "8s"),
    ("duration", "6 Seconds", "6s"),
    ("duration", "4.0 s", "4s"),
    ("resolution", 1080, "1080p"),
    ("resolution", "720", "720p"),
    ("resolution", "1080 P", "1080p"),
    # a ratio as people write it, and as a spreadsheet that took it for a time saves it
    ("aspect_ratio", "16x9", "16:9"),
    ("aspect_ratio", "9×16", "9:16"),
    ("aspect_ratio", "16/9", "16:9"),
    ("aspect_ratio", "16 : 9", "16:9"),
    ("aspect_ratio", "16:09", "16:9"),
    ("aspect_ratio", "09:16:00", "9:16"),
    # Excel's TRUE and FALSE in a CSV saved by a German or a French Excel
    ("generate_audio", "WAHR", True),
    ("generate_audio", "Faux", False),
    ("aspect_ratio", "AUTO", "auto"),
    ("aspect_ratio", " 9:16", "9:16"),
    ("safety_tolerance", 4.0, "4"),
    ("safety_tolerance", 2, "2"),
    ("negative_prompt", "  blur  ", "blur"),
    ("prompt", "  Keep my spaces\n", "  Keep my spaces\n"),
    ("prompt", 2024.0, "2024"),
    ("image_url", "https://localhost.example.com/x.png", "https://localhost.example.com/x.png"),
    ("image_url", "HTTPS://127example.com/a%20b.png", "https://127example.com/a%20b.png"),
]


@pytest.mark.parametrize(("column", "cell", "expected"), GOOD_CELLS)
def test_cells_are_coerced_to_the_field_type(
    tmp_path: Path, column: str, cell: Any, expected: Any
) -> None:
    assert one_row(tmp_path, **{column: cell})[column] == expected


BAD_CELLS = [
    ("generate_audio", "maybe", "TRUE or FALSE"),
    ("generate_audio", 2, "TRUE or FALSE"),
    ("seed", "42.5", "whole number"),
    ("seed", "abc", "whole number"),
    ("seed", True, "whole number"),
    ("seed", 1.5, "whole number"),
    ("seed", "12,000", "whole number, written without separators: 12000"),
    ("duration", "10s", "'4s', '6s' or '8s'"),
    ("duration", 7.5, "'4s', '6s' or '8s'"),
    ("resolution", "4k", "'720p' or '1080p'"),
    ("duration", "8 min", "'4s', '6s' or '8s'"),
    ("duration", "8ms", "'4s', '6s' or '8s'"),
    ("aspect_ratio", "16x10", "'auto', '16:9' or '9:16'"),
    ("aspect_ratio", "16:09:30", "'auto', '16:9' or '9:16'"),
    ("generate_audio", "ja", "TRUE or FALSE"),
    ("aspect_ratio", "4:3", "'auto', '16:9' or '9:16'"),
    ("safety_tolerance", "0", "'1', '2', '3', '4', '5' or '6'"),
    ("prompt", "   ", "is required"),
    ("image_url", "ftp://example.com/x.png", "http(s) URL"),
    # URLs the provider's servers cannot fetch: every job sending one would fail
    ("image_url", "http://localhost:8000/x.png", "cannot reach localhost on this machine"),
    ("image_url", "HTTP://127.0.0.1/x.png", "cannot reach 127.0.0.1 on this machine"),
    ("image_url", "https://example.com/my shot.png", "write a space as %20"),
    ("image_url", "https:///x.png", "the URL has no host name"),
    # what was meant, when a cell names no file here
    ("image_url", "www.example.com/a.png", "if it is a web address, write it whole: https://www"),
    ("image_url", "cdn.example.com/a.png", "write it whole: https://cdn.example.com/a.png"),
    ("image_url", "C:\\Users\\me\\a.png", "a Windows path names a file on that computer"),
    ("image_url", "https://example.com/a.png, https://example.com/b.png", "holds 2 URLs: a cell"),
]


def test_a_ratio_excel_turned_into_a_time_is_the_ratio_typed(tmp_path: Path) -> None:
    """Typing 16:9 into an Excel cell stores the time 16:09: read back as 16:9; a time that is
    no ratio the model takes is one problem, not two."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["id", "prompt", "image_url", "aspect_ratio"])
    for name, typed in [("wide", datetime.time(16, 9)), ("tall", datetime.time(9, 16))]:
        sheet.append([name, "A calm lake", URL, typed])
    workbook.save(tmp_path / "m.xlsx")
    rows = load(tmp_path / "m.xlsx").rows
    assert [row.payload["aspect_ratio"] for row in rows] == ["16:9", "9:16"]

    sheet.append(["square", "A calm lake", URL, datetime.time(4, 3)])
    workbook.save(tmp_path / "m.xlsx")
    (problem,) = errors_of(tmp_path / "m.xlsx")
    assert (problem.row, problem.column) == (3, "aspect_ratio")
    assert "must be 'auto', '16:9' or '9:16'" in problem.message


def test_a_time_excel_made_of_a_cell_is_shown_as_excel_shows_it(tmp_path: Path) -> None:
    """A cell Excel turned into a time (or a date) that is no value of its field is reported
    as the sheet shows it (04:03, not 04:03:00), saying that Excel made it a time and what to
    type instead: a ratio the model does not take, a duration, a seed, a flag, a text."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["id", "prompt", "image_url", "aspect_ratio", "duration", "seed",
                  "generate_audio", "negative_prompt"])  # fmt: skip
    good = ["A calm lake", URL, "16:9", "8s", 7, True, "blur"]
    for number, (column, cell) in enumerate(
        [
            (2, datetime.time(4, 3)),  # 4:3 typed: a ratio Veo does not take
            (2, datetime.time(16, 9, 30)),  # with seconds: no ratio
            (3, datetime.time(8, 0)),  # 8:00 typed for 8s
            (4, datetime.time(12, 30)),
            (5, datetime.time(1, 0)),
            (6, datetime.time(12, 30, 15)),
            (0, datetime.datetime(2025, 3, 4, 10, 5)),
            (6, datetime.datetime(2025, 9, 16)),  # 16/9 typed in a day-first Excel
        ],
        1,
    ):
        values = list(good)
        values[column] = cell
        sheet.append([f"shot-{number}", *values])
    workbook.save(tmp_path / "m.xlsx")
    said = [(p.cell, str(p).split(": ", 1)[1]) for p in errors_of(tmp_path / "m.xlsx")]
    assert said == [
        ("D2", "must be 'auto', '16:9' or '9:16'; Excel turned the 4:3 typed here into a time: "
               "type one of those (got '04:03')"),
        ("D3", "must be 'auto', '16:9' or '9:16'; Excel turned what was typed into a time: "
               "type one of those, in a cell formatted as Text (got '16:09:30')"),
        ("E4", "must be '4s', '6s' or '8s'; Excel turned what was typed into a time: type one "
               "of those, in a cell formatted as Text (got '08:00')"),
        ("F5", "must be a whole number; Excel turned what was typed into a time: type the "
               "number alone, in a cell formatted as Number (got '12:30')"),
        ("G6", "must be TRUE or FALSE; Excel turned what was typed into a time: type TRUE or "
               "FALSE (got '01:00')"),
        ("H7", "must be text; Excel turned what was typed into a time: format the cell as Text "
               "(or start it with an apostrophe) and type it again (got '12:30:15')"),
        ("B8", "must be text; Excel turned what was typed into a date and time: format the "
               "cell as Text (or start it with an apostrophe) and type it again "
               "(got '2025-03-04 10:05')"),
        ("H9", "must be text; Excel turned what was typed into a date: format the cell as Text "
               "(or start it with an apostrophe) and type it again (got '2025-09-16')"),
    ]  # fmt: skip


def test_a_workbook_problem_names_its_cell_as_excel_does(tmp_path: Path) -> None:
    """Row 1 of the data is row 4 of a sheet with two blank rows above its header: the cell
    to go to is named ("E4"), past a column only kept as metadata."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([])
    sheet.append([])
    sheet.append(["id", "prompt", "notes", "image_url", "aspect_ratio", "duration"])
    sheet.append(["a", "A calm lake", "x", URL, "4:3", "8s"])
    sheet.append(["b", "A windy hill", "y", URL, "16:9", "8 min"])
    workbook.save(tmp_path / "m.xlsx")
    problems = errors_of(tmp_path / "m.xlsx")
    assert [(p.row, p.cell, p.column) for p in problems] == [
        (1, "E4", "aspect_ratio"),
        (2, "F5", "duration"),
    ]
    assert str(problems[0]).startswith("row 1, cell E4, column 'aspect_ratio': must be")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(f"id,prompt,image_url,duration\na,A calm lake,{URL},8 min\n")
    (problem,) = errors_of(csv_path)  # a CSV has lines, not cells
    assert problem.cell is None and str(problem).startswith("row 1, line 2, column")


def test_a_duration_in_seconds_fits_a_model_whose_durations_have_no_unit(
    tmp_path: Path,
) -> None:
    """Kling's durations are "5" and "10": a sheet written for Veo says "5s", or "10 seconds"."""
    kling = get_model("fal-ai/kling-video/v2.5-turbo/pro/image-to-video")
    rows = [
        {"id": f"take-{number}", "prompt": "A calm lake", "image_url": URL, "duration": cell}
        for number, cell in enumerate(("5s", "10 seconds", 5))
    ]
    manifest = load(write_jsonl(tmp_path / "m.jsonl", rows), kling)
    assert [row.payload["duration"] for row in manifest.rows] == ["5", "10", "5"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "duration": "5 min"}])
    (problem,) = errors_of(bad, kling)
    assert "'5' or '10'" in problem.message


def test_a_missing_file_gets_no_guess_at_what_was_meant(tmp_path: Path) -> None:
    """``fox.png`` and ``images/fox.png`` are file names, not web addresses."""
    for cell in ("fox.png", "images/fox.png", "shots.v2/fox.png"):
        row = {"prompt": "A calm lake", "image_url": cell}
        (problem,) = errors_of(write_jsonl(tmp_path / "m.jsonl", [row]))
        assert problem.message == f"image file not found: {tmp_path / cell}"


def test_a_decimal_comma_is_refused_with_the_number_written_with_a_dot(tmp_path: Path) -> None:
    """A European sheet saved as ;-separated CSV writes 0,5: not read as 0.5 or 5, said."""
    path = tmp_path / "m.csv"
    path.write_text("id;prompt;image_url;cfg_scale\nx;A calm lake;" + URL + ";0,5\n")
    (problem,) = errors_of(path, get_model("fal-ai/kling-video/v2.5-turbo/pro/image-to-video"))
    assert problem.column == "cfg_scale" and problem.value == "0,5"
    assert problem.message == "must be a number, written with a dot: 0.5"


@pytest.mark.parametrize(("column", "cell", "fragment"), BAD_CELLS)
def test_bad_cells_say_what_is_allowed(
    tmp_path: Path, column: str, cell: Any, fragment: str
) -> None:
    row = {"id": "x", "prompt": "A calm lake", "image_url": URL, column: cell}
    path = write_jsonl(tmp_path / "m.jsonl", [row])
    (problem,) = errors_of(path)
    assert (problem.row, problem.line, problem.column, problem.value) == (1, 1, column, cell)
    assert fragment in problem.message


def test_an_output_name_too_long_once_named_is_refused_whole_or_row_by_row(
    tmp_path: Path,
) -> None:
    fits = "y" * 226  # 230 bytes with ".mp4"
    csv_rows = f"id,prompt,image_url,output\na,x,{URL},{fits}\nb,x,{URL},{fits}y\n"
    path = tmp_path / "m.csv"
    path.write_text(csv_rows)  # read whole: its output column at once
    (problem,) = errors_of(path)
    assert (problem.row, problem.column) == (2, "output")
    assert "231 bytes long; at most 230 fit in a file name with its extension" in problem.message
    long_label = Expansion(matrix=(("negative_prompt", ("p" * 40, "short")),))
    with pytest.raises(ManifestError) as caught:
        load(path, expansion=long_label)  # each variant's name gets the label, row by row
    errors = [p for p in caught.value.problems if p.severity == "error"]
    assert {(p.row, p.column) for p in errors} == {(1, "output"), (2, "output")}
    assert any("with its extension and variant label" in p.message for p in caught.value.problems)


@pytest.mark.parametrize("whole", [True, False])
def test_an_output_name_with_a_dot_still_ends_in_mp4_and_another_video_kind_is_refused(
    tmp_path: Path, whole: bool
) -> None:
    """``take 1.5`` has no extension: it was saved as ``0001-take 1.5`` (no ``.mp4``), and a
    variant's label went inside it (``take 1~16_9.5``). ``shot.webm`` would be an MP4 file
    under another kind's name."""
    names = ["take 1.5", "v1.2.final", "c.MOV", "d.m4v", "shot.webm"]
    rows = [
        {"id": f"r{i}", "prompt": "x", "image_url": URL, "output": n} for i, n in enumerate(names)
    ]
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    expansion = Expansion() if whole else Expansion(matrix=(("aspect_ratio", ("16:9",)),))
    with pytest.raises(ManifestError) as caught:
        load(path, expansion=expansion)  # a matrix is read row by row
    (problem,) = caught.value.problems
    assert (problem.row, problem.column, problem.value) == (5, "output", "shot.webm")
    assert "videos are MP4 files, not .webm: end the name with .mp4" in problem.message
    path.write_text(path.read_text().replace("shot.webm", "shot.WebM.mp4"))
    label = "" if whole else "~16_9"
    outputs = [row.output for row in load(path, expansion=expansion).rows]
    assert outputs == [
        f"take 1.5{label}.mp4", f"v1.2.final{label}.mp4", f"c{label}.MOV", f"d{label}.m4v",
        f"shot.WebM{label}.mp4",
    ]  # fmt: skip


def test_a_json_array_is_a_manifest_like_its_json_lines(tmp_path: Path) -> None:
    """``.json`` as tools export it (one array of objects), or JSON Lines under that name."""
    rows = [
        {"id": "a", "prompt": "x", "image_url": URL, "duration": 4, "scene": "intro"},
        {"id": "b", "prompt": "y", "image_url": URL, "generate_audio": False},
    ]
    lines = load(write_jsonl(tmp_path / "m.jsonl", rows)).rows
    array = tmp_path / "m.json"
    array.write_text(json.dumps(rows, indent=2))
    assert [(r.job_id, r.row, r.payload, r.metadata) for r in load(array).rows] == [
        (r.job_id, r.row, r.payload, r.metadata) for r in lines
    ]
    assert [r.payload for r in load(write_jsonl(tmp_path / "l.json", rows)).rows] == [
        r.payload for r in lines
    ]
    for text, row, words in [
        (json.dumps([rows[0], 7]), 2, "each item must be a JSON object"),
        (json.dumps({"records": rows}), None, "the rows look to be under 'records'"),
        ('"rows"', None, 'a .json manifest is an array like [{"prompt": ...}], not a string'),
        ("[{", None, "the file is not valid JSON: "),
    ]:
        array.write_text(text)
        (problem,) = errors_of(array)
        assert problem.row == row and words in problem.message, problem


def test_a_title_above_the_header_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """A sheet made for people: a title and a blank row above the header. The title was taken
    for the header: every column missing, every row ragged. Line numbers stay the file's."""
    title = ["Day 2 shot list", None, None]
    header = ["id", "prompt", "image_url"]
    body = [["fox", "a fox\nin the snow", URL], ["owl", "an owl", URL], ["hen", None, URL]]
    workbook = openpyxl.Workbook()
    for values in [title, [], header, *body]:
        workbook.active.append(values)
    workbook.save(tmp_path / "m.xlsx")
    text = "Day 2 shot list,,\n\n" + "".join(
        ",".join(f'"{v}"' if v and "\n" in v else v or "" for v in values) + "\n"
        for values in [header, *body]
    )
    (tmp_path / "m.csv").write_text(text)
    for name, line in (("m.xlsx", None), ("m.csv", 7)):  # the quoted line break: line 4 and 5
        with pytest.raises(ManifestError) as caught:
            load(tmp_path / name)
        warning, missing = caught.value.problems
        assert warning.severity == "warning" and "the rows above it were skipped" in str(warning)
        assert "'Day 2 shot list'" in warning.message and "'prompt'" in warning.message
        assert (missing.row, missing.line, missing.column) == (3, line, "prompt")
        assert "is required" in missing.message
    (tmp_path / "m.csv").write_text(text.replace("hen,,", "hen,a hen,"))
    loaded = load(tmp_path / "m.csv")
    assert [(r.job_id, r.row, r.payload["prompt"]) for r in loaded.rows] == [
        ("fox", 1, "a fox\nin the snow"), ("owl", 2, "an owl"), ("hen", 3, "a hen")
    ]  # fmt: skip
    (tmp_path / "plain.csv").write_text("prompt\nfox\nowl\n")  # a first row that names one
    assert [r.row for r in load(tmp_path / "plain.csv", spec=get_model("fal-ai/veo3.1")).rows] == [
        1, 2
    ]  # fmt: skip


def test_every_problem_of_a_row_is_reported(tmp_path: Path) -> None:
    row = {"prompt": " ", "image_url": URL, "duration": "9s", "seed": "x", "output": "../o"}
    errors = errors_of(write_jsonl(tmp_path / "m.jsonl", [row]))
    assert sorted(p.column or "" for p in errors) == ["duration", "output", "prompt", "seed"]


def test_empty_cells_take_the_model_defaults(tmp_path: Path) -> None:
    payload = one_row(tmp_path, duration="", generate_audio=None, seed="  ", resolution=None)
    assert payload == {
        "prompt": "A calm lake",
        "image_url": URL,
        "aspect_ratio": "auto",
        "duration": "8s",
        "resolution": "720p",
        "generate_audio": True,
        "auto_fix": False,
        "safety_tolerance": "4",
    }


# ---------------------------------------------------------------------- columns


def test_near_miss_columns_are_errors_naming_the_field(tmp_path: Path) -> None:
    rows = [
        {"Prompt": "p1", "prompt": "A calm lake", "image_url": URL, "aspect-ratio": "9:16",
         "Resolution": "1080p", "genrate_audio": "no", "notes": "n1"},
    ]  # fmt: skip
    found = {p.column: p for p in errors_of(write_jsonl(tmp_path / "m.jsonl", rows))}
    assert set(found) == {"Prompt", "aspect-ratio", "Resolution", "genrate_audio"}
    assert all(p.severity == "error" and p.row is None for p in found.values())
    assert "did you mean 'aspect_ratio'?" in found["aspect-ratio"].message
    assert "did you mean 'resolution'?" in found["Resolution"].message
    assert "did you mean 'generate_audio'?" in found["genrate_audio"].message
    assert "a second 'prompt' column" in found["Prompt"].message


def test_unknown_columns_become_metadata_with_one_warning_each(tmp_path: Path) -> None:
    rows = [
        {"prompt": "A calm lake", "image_url": URL, "style": "noir", "notes": "n1"},
        {"prompt": "A windy hill", "image_url": URL, "style": "ukiyo-e", "notes": "n2"},
    ]
    manifest = load(write_jsonl(tmp_path / "m.jsonl", rows))
    hints = {w.column: w.message for w in manifest.warnings}
    assert all(w.severity == "warning" for w in manifest.warnings)
    assert set(hints) == {"style", "notes"}
    assert "kept as metadata and not sent to the model" in hints["notes"]
    first = manifest.rows[0]
    assert first.metadata == {"style": "noir", "notes": "n1"}


@pytest.mark.parametrize(
    ("column", "value", "field"),
    [
        ("Duration (s)", "4", "duration"),
        ("duration [sec]", "4", "duration"),
        ("audio", "no", "generate_audio"),
        ("gen_audio", "no", "generate_audio"),
        ("aspect", "9:16", "aspect_ratio"),
        ("ratio", "9:16", "aspect_ratio"),
        ("negative", "blur", "negative_prompt"),
        ("neg_prompt", "blur", "negative_prompt"),
        # other words for a field, which no spelling rule reaches
        ("seconds", "4", "duration"),
        ("Length (sec)", "4", "duration"),
        ("sound", "no", "generate_audio"),
        ("With audio", "no", "generate_audio"),
        ("Seed #", "3", "seed"),
        ("random_seed", "3", "seed"),
        ("Model ID", "fal-ai/kling-video/v2.5-turbo/pro/image-to-video", "model"),
        ("endpoint", "fal-ai/kling-video/v2.5-turbo/pro/image-to-video", "model"),
        ("takes", "2", "count"),
    ],
)
def test_a_column_that_is_a_field_cut_short_or_with_a_unit_is_an_error(
    tmp_path: Path, column: str, value: str, field: str
) -> None:
    """Kept as metadata, these would buy the field's default: an 8 s clip with audio for a
    row that asked for 4 s without ($3.20, not $0.80)."""
    rows = [{"prompt": "A calm lake", "image_url": URL, column: value}]
    (problem,) = errors_of(write_jsonl(tmp_path / "m.jsonl", rows))
    assert problem.column == column
    assert f"did you mean {field!r}? Rename the column to {field!r}" in problem.message


def test_another_word_for_a_field_beside_the_field_itself_stays_metadata(tmp_path: Path) -> None:
    """`seconds` beside `duration` buys nothing by default: the field is given, so the other
    column may mean something else (and is said once, as metadata)."""
    rows = [{"prompt": "A calm lake", "image_url": URL, "duration": "4", "seconds": "4"}]
    manifest = load(write_jsonl(tmp_path / "m.jsonl", rows))
    (warning,) = manifest.warnings
    assert warning.column == "seconds" and "kept as metadata" in warning.message


def test_a_second_column_for_a_field_is_one_sentence_then_what_to_do(tmp_path: Path) -> None:
    rows = [{"prompt": "A calm lake", "image_url": URL, "image_urls": URL}]
    (problem,) = errors_of(write_jsonl(tmp_path / "m.jsonl", rows))
    assert problem.column == "image_urls"
    assert problem.message.startswith(
        "it looks like a second 'image_url' column. Rename the column to 'image_url' or remove "
        "one of the two"
    )


def test_a_column_the_prompt_template_is_built_from_is_neither_warned_nor_refused(
    tmp_path: Path,
) -> None:
    rows = [{"image_url": URL, "subject": "a fox", "aspect": "wide", "notes": "n"}]
    manifest = load(
        write_jsonl(tmp_path / "m.jsonl", rows),
        expansion=Expansion(prompt_template="{subject}, {aspect} framing"),
    )
    assert manifest.rows[0].payload["prompt"] == "a fox, wide framing"
    assert [w.column for w in manifest.warnings] == ["notes"]


def test_a_prompt_template_that_would_drop_hand_written_prompts_is_an_error(
    tmp_path: Path,
) -> None:
    rows = [
        {"prompt": "a {subject} in snow", "subject": "fox", "image_url": URL},
        {"prompt": "written by hand", "subject": "owl", "image_url": URL},
        {"prompt": "", "subject": "hen", "image_url": URL},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(ManifestError) as caught:
        load(path, expansion=Expansion(prompt_template="T: {subject}"))
    (problem,) = caught.value.problems
    assert problem.column == "prompt" and "(rows 1, 2)" in problem.message
    assert "put {prompt} in the template" in problem.message
    blank = write_jsonl(tmp_path / "b.jsonl", [{**r, "prompt": ""} for r in rows])
    built = load(blank, expansion=Expansion(prompt_template="T: {subject}"))
    assert [r.payload["prompt"] for r in built.rows] == ["T: fox", "T: owl", "T: hen"]
    on_top = load(
        write_jsonl(tmp_path / "c.jsonl", [{**rows[0], "prompt": "a fox in snow"}, rows[1]]),
        expansion=Expansion(prompt_template="{prompt}, 35 mm"),
    )
    assert [r.payload["prompt"] for r in on_top.rows] == [
        "a fox in snow, 35 mm",
        "written by hand, 35 mm",
    ]


def test_a_missing_required_column_is_one_problem_with_a_hint(tmp_path: Path) -> None:
    rows = [{"Prompt": f"shot {i}", "image_url": URL} for i in range(50)]
    (problem,) = errors_of(write_jsonl(tmp_path / "m.jsonl", rows))
    assert (problem.row, problem.column) == (None, "prompt")
    assert "did you mean 'Prompt'?" in problem.message
    assert "columns found: 'Prompt', 'image_url'" in problem.message


def test_an_unregistered_model_gets_every_column_unvalidated(tmp_path: Path) -> None:
    spec = ModelSpec.unregistered("someone/new-model")
    path = tmp_path / "m.csv"
    path.write_text("id,output,prompt,steps,extra\nr1,first,hello,30,\n,,hi,,x\n")
    first, second = load(path, spec).rows
    assert (first.job_id, first.output, first.payload) == (
        "r1",
        "first.mp4",
        {"prompt": "hello", "steps": "30"},
    )
    assert second.payload == {"prompt": "hi", "extra": "x"}
    assert first.metadata == {} and first.cost_usd is None


# ---------------------------------------------------------------------- job ids


def test_job_ids_are_stable_and_the_id_column_wins(tmp_path: Path) -> None:
    rows = [
        {"prompt": "A calm lake", "image_url": URL, "duration": "8s"},
        {"prompt": "A windy hill", "image_url": URL},
        {"id": "mine", "prompt": "A dark forest", "image_url": URL},
    ]
    ids = [r.job_id for r in load(write_jsonl(tmp_path / "a.jsonl", rows)).rows]
    again = [r.job_id for r in load(write_jsonl(tmp_path / "b.jsonl", rows)).rows]
    reordered = load(write_jsonl(tmp_path / "c.jsonl", rows[::-1])).rows
    assert ids == again
    assert [r.job_id for r in reordered] == ids[::-1]
    assert ids[2] == "mine"
    # the same request written differently (default spelt out, "8" for "8s") is the same job
    same = [{"prompt": "A calm lake", "image_url": URL, "duration": 8, "generate_audio": "yes"}]
    assert load(write_jsonl(tmp_path / "d.jsonl", same)).rows[0].job_id == ids[0]
    # ...but another endpoint, or another value, is not
    payload = load(write_jsonl(tmp_path / "e.jsonl", rows[:1])).rows[0].payload
    assert job_id_for("fal-ai/veo3.1/image-to-video", payload, {}) != ids[0]
    assert job_id_for(VEO3.endpoint_id, {**payload, "seed": 1}, {}) != ids[0]
    assert job_id_for(VEO3.endpoint_id, payload, {}) == ids[0]


# ---------------------------------------------------------------------- local images


def manifest_with_image(tmp_path: Path, rows: int = 1) -> Path:
    (tmp_path / "pics").mkdir(parents=True, exist_ok=True)
    shutil.copy(LIGHTHOUSE, tmp_path / "pics" / "lighthouse.png")
    path = tmp_path / "m.csv"
    lines = [f"shot {i},pics/lighthouse.png" for i in range(rows)]
    path.write_text("prompt,image_url\n" + "\n".join(lines) + "\n")
    return path


def test_a_path_as_windows_writes_it_names_the_same_file(tmp_path: Path) -> None:
    """A sheet made on Windows, run here: `pics\\lighthouse.png`, and a path pasted by "Copy as
    path" with its quotes, name the file they name there (they were "not found")."""
    plain = load(manifest_with_image(tmp_path)).rows[0]
    for cell in ("pics\\lighthouse.png", '"pics/lighthouse.png"', '"pics\\lighthouse.png"'):
        (tmp_path / "m.csv").write_text(
            f'prompt,image_url\nshot 0,"{cell.replace(chr(34), 2 * chr(34))}"\n'
        )
        (row,) = load(tmp_path / "m.csv").rows
        assert row.files == plain.files and row.payload == plain.payload, cell
    (tmp_path / "m.csv").write_text('prompt,image_urls\nshot 0,"a.png, b.png"\n')
    (problem,) = errors_of(tmp_path / "m.csv", get_model("fal-ai/veo3.1/reference-to-video"))
    assert problem.message.endswith(
        "b.png; several files in one cell are separated by | (a.png | b.png)"
    ), problem.message


def test_a_local_image_becomes_a_local_file_sent_as_a_data_uri(tmp_path: Path) -> None:
    (row,) = load(manifest_with_image(tmp_path)).rows
    image = tmp_path / "pics" / "lighthouse.png"
    file = row.files["image_url"]
    assert file == LocalFile(
        path=str(image),
        sha256=hashlib.sha256(image.read_bytes()).hexdigest(),
        size=image.stat().st_size,
        mime="image/png",
    )
    assert row.payload["image_url"] == str(image)  # the ledger keeps the path, not megabytes
    body = materialize(row.payload, row.files)
    header, data = body["image_url"].split(",", 1)
    assert header == "data:image/png;base64"
    assert base64.b64decode(data) == image.read_bytes()
    assert {k: v for k, v in body.items() if k != "image_url"} == {
        k: v for k, v in row.payload.items() if k != "image_url"
    }
    assert row.payload["image_url"] == str(image)  # materialize made a copy


def test_a_column_of_urls_is_judged_as_each_url_would_be() -> None:
    from batchrunner.images import unfetchable, url_problem

    urls = [
        "https://cdn.example.com/a.png", "https://cdn.example.com/b c.png",  # a space
        "http://localhost:8000/a.png", "https://cdn.example.com/c.png", "https:///d.png",
        "http://me@127.0.0.1/e.png", "https://localhost.example.com/f.png", "https://[::1]/g",
    ]  # fmt: skip
    assert unfetchable(urls) == [i for i, url in enumerate(urls) if url_problem(url)]
    assert unfetchable(urls) == [1, 2, 4, 5, 7]


def test_a_file_url_names_a_local_image_as_its_path_does(tmp_path: Path) -> None:
    """``file:///...`` is how a browser's address bar or Finder's "copy" gives a path."""
    (by_path,) = load(manifest_with_image(tmp_path)).rows
    folder = tmp_path / "my pics #1"
    shutil.copytree(tmp_path / "pics", folder)
    url = (folder / "lighthouse.png").as_uri()  # file:///.../my%20pics%20%231/lighthouse.png
    path = tmp_path / "urls.csv"
    path.write_text(f"prompt,image_url\nshot 0,{url}\nshot 1,file://elsewhere/x.png\n")
    with pytest.raises(ManifestError) as caught:
        load(path)  # another machine's file is no file here
    (problem,) = caught.value.problems
    assert problem.row == 2 and "http(s) URL, a data: URI or a local file" in problem.message
    path.write_text(f"prompt,image_url\nshot 0,{url}\n")
    (by_url,) = load(path).rows
    assert by_url.files["image_url"].path == str(folder / "lighthouse.png")
    assert by_url.job_id == by_path.job_id  # the same picture: the same request


def test_the_job_id_follows_the_image_content_not_its_path(tmp_path: Path) -> None:
    (row,) = load(manifest_with_image(tmp_path / "a")).rows
    (moved,) = load(manifest_with_image(tmp_path / "b")).rows
    assert row.payload["image_url"] != moved.payload["image_url"]
    assert row.job_id == moved.job_id


def test_an_image_that_changed_or_vanished_is_not_sent(tmp_path: Path) -> None:
    (row,) = load(manifest_with_image(tmp_path)).rows
    image = Path(row.files["image_url"].path)
    image.write_bytes(image.read_bytes()[:-1] + b"\0")
    with pytest.raises(UsageError, match="changed since the manifest was checked"):
        materialize(row.payload, row.files)
    image.unlink()
    with pytest.raises(UsageError, match="is gone"):
        data_uri(row.files["image_url"])


def test_a_shared_image_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    inspect = images.ImageChecker._inspect

    def counting(path: Path, size: int, limit: int, kind: str) -> LocalFile | str:
        calls.append(path)
        return inspect(path, size, limit, kind)

    monkeypatch.setattr(images.ImageChecker, "_inspect", staticmethod(counting))
    manifest = load(manifest_with_image(tmp_path, rows=25))
    assert len(manifest.rows) == 25 and len(calls) == 1


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(LIGHTHOUSE, tmp_path / "l.png")
    path = tmp_path / "sub" / "m.csv"
    path.parent.mkdir()
    path.write_text(f"prompt,image_url\na,~/l.png\nb,{tmp_path / 'l.png'}\n")
    first, second = load(path).rows
    assert first.files == second.files
    assert first.payload["image_url"] == str(tmp_path / "l.png")


def test_too_big_images_and_data_uris_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:  # a sparse file: quick to make, 8 MB + 1 byte long
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(MAX_IMAGE_BYTES + 1)
    small_uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG" * 10).decode()
    big_uri = "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES // 3 * 4 + 8)
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"prompt": "a", "image_url": "big.png"},
            {"prompt": "b", "image_url": small_uri},
            {"prompt": "c", "image_url": big_uri},
            {"prompt": "d", "image_url": "data:image/png;base64"},
        ],
    )
    first, third, fourth = errors_of(path)
    assert (first.row, first.column) == (1, "image_url")
    assert "8.0 MB" in first.message and "at most 8 MB" in first.message
    assert (third.row, third.column) == (3, "image_url") and "at most 8 MB" in third.message
    assert (fourth.row, fourth.column) == (4, "image_url") and "','" in fourth.message


# ---------------------------------------------------------------------- demo manifests


@pytest.mark.parametrize(("name", "count"), [("demo.csv", 10), ("demo.jsonl", 5)])
def test_the_demo_manifests_load_cleanly(name: str, count: int) -> None:
    manifest = load(ROOT / "manifests" / name)
    assert len(manifest.rows) == count
    assert [w.column for w in manifest.warnings] == ["notes"]
    with_files = [r for r in manifest.rows if r.files]
    assert len(with_files) == 1
    assert with_files[0].files["image_url"].path == str(LIGHTHOUSE)
    assert len({r.job_id for r in manifest.rows}) == count
    assert all(r.cost_usd for r in manifest.rows)


def test_the_demo_csv_uses_the_documented_mix() -> None:
    rows = load(ROOT / "manifests" / "demo.csv").rows
    assert [r.job_id for r in rows] == [f"shot-{i:02d}" for i in range(1, 11)]
    assert {r.payload["duration"] for r in rows} == {"4s", "6s", "8s"}
    assert {r.payload["aspect_ratio"] for r in rows} == {"16:9", "9:16", "auto"}
    assert {r.payload["generate_audio"] for r in rows} == {True, False}
    assert {r.output is None for r in rows} == {True, False}


# ---------------------------------------------------------------------- the bad corpus

# file, row, line, column, words the message must contain (row/line/column None: not located)
CORPUS = [
    ("bad_enum.csv", 2, 3, "aspect_ratio", "'auto', '16:9' or '9:16'"),
    ("bad_enum.tsv", 2, 3, "resolution", "'720p' or '1080p'"),
    ("bad_bool.csv", 1, 2, "generate_audio", "TRUE or FALSE"),
    ("float_int.csv", 2, 3, "seed", "whole number"),
    ("empty_prompt.csv", 2, 3, "prompt", "is required"),
    ("prompt_too_long.csv", 1, 2, "prompt", "at most 20000 characters"),
    ("missing_prompt_column.csv", None, None, "prompt", "did you mean 'Prompt text'?"),
    ("missing_image.csv", 2, 3, "image_url", "not found"),
    ("image_too_big.csv", 1, 2, "image_url", "at most 8 MB"),
    ("not_an_image.csv", 1, 2, "image_url", "not a PNG, JPEG, WEBP or GIF"),
    ("ftp_image.csv", 1, 2, "image_url", "http(s) URL"),
    ("duplicate_id.csv", 3, 4, "id", "also used by row 1"),
    ("duplicate_output.csv", 2, 3, "output", "also used by row 1"),
    ("unsafe_output_parent.csv", 1, 2, "output", "'..'"),
    ("unsafe_output_absolute.csv", 2, 3, "output", "not an absolute path"),
    ("ragged_row.csv", 2, 3, None, "4 cells but the header names 3"),
    ("latin1.csv", None, 2, None, "Latin-1/Windows-1252"),
    ("utf16.csv", None, None, None, "UTF-16"),
    ("empty.csv", None, None, None, "the manifest is empty"),
    ("header_only.csv", None, None, None, "a header but no rows"),
    ("identical_rows.csv", 3, 4, None, "row 3 is identical to row 1"),
    ("multiline_then_bad.csv", 2, 5, "duration", "'4s', '6s' or '8s'"),
    ("blank_lines.csv", 5, 6, "resolution", "'720p' or '1080p'"),
    ("duplicate_column.csv", None, None, None, "'prompt' appears twice"),
    ("bad_safety_tolerance.csv", 1, 2, "safety_tolerance", "'5' or '6'"),
    ("bad_json_line.jsonl", 2, 3, None, "not valid JSON"),
    ("array_line.jsonl", 2, 2, None, "JSON object"),
    ("bad_duration_number.jsonl", 1, 1, "duration", "'4s', '6s' or '8s'"),
    ("bool_seed.jsonl", 1, 1, "seed", "whole number"),
    ("error_cell.xlsx", 2, None, "duration", "#DIV/0!"),
    ("genrate_audio_column.csv", None, None, "genrate_audio", "did you mean 'generate_audio'?"),
    # other input shapes: each folder's batchrunner.toml names its model
    ("reference-to-video/list_item_missing.csv", 2, 3, "image_urls", "item 2: image file not"),
    ("reference-to-video/list_bad_json.csv", 1, 2, "image_urls", "is not a JSON list"),
    ("first-last-frame/missing_last_frame_column.csv", None, None, "last_frame_url",
     "no 'last_frame_url' column, which is required (did you mean 'last_fram_url'?)"),
    ("text-to-video/bad_resolution.csv", 2, 3, "resolution", "'720p', '1080p' or '4k'"),
    ("text-to-video/near_miss_column.csv", None, None, "negative-prompt",
     "did you mean 'negative_prompt'?"),
    # a prompt model: a cell that swallows the rows after it is not missing a required file
    ("text-to-video/stray_quote_runs_to_the_end.csv", 2, 3, "prompt",
     "never closed: the file ends inside it, and lines 4-6 were read as its text"),
    ("text-to-video/stray_quote_closed_later.csv", 2, 3, "prompt",
     "closes before its text ends (on line 5)"),
    ("text-to-video/cut_off_while_written.csv", 2, 3, "prompt", "a file still being written?"),
    # cut where no quote is open: the last row is short, and no line break ends it
    ("text-to-video/cut_off_mid_prompt.csv", 2, 3, "duration",
     "the file ends in this row, before its 'duration' cell, with no line break after it"),
    ("text-to-video/cut_off_between_cells.csv", 2, 3, "seed", "a file still being written?"),
    ("text-to-video/quote_after_a_space.csv", 1, 2, None,
     'a quote after a space does not quote a cell in CSV: remove the space before "A fox'),
]  # fmt: skip


def corpus_model(path: Path) -> ModelSpec:
    """The model a corpus file is for: its folder's batchrunner.toml, else Veo 3."""
    config = load_config(find_config(path, None))
    return get_model(config["model"]) if "model" in config else VEO3


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        # the last column, the file ends one line later
        ('id,prompt,image_url,duration\na,ok,{u},4s\nb,ok,{u},"4s\nc,ok,{u},4s\n', 3,
         "duration", "and line 4 was read as its text"),
        # a multi-line cell before it reads; "" inside quotes is a quote; TSV
        ('id\tprompt\timage_url\na\t"two\nlines, ""quoted"""\t{u}\nb\t{u}\t"x"y\n', 4,
         "image_url", "closes before its text ends"),
        # past the header's columns
        ('id,prompt,image_url\na,ok,{u},"x"y\n', 2, "column_4", "closes before its text ends"),
    ],
)  # fmt: skip
def test_an_unreadable_csv_record_names_the_cell_it_breaks_in(
    tmp_path: Path, text: str, line: int, column: str, words: str
) -> None:
    path = tmp_path / ("m.tsv" if "\t" in text else "m.csv")
    path.write_text(text.format(u=URL), encoding="utf-8")
    (problem,) = errors_of(path)
    assert (problem.line, problem.column) == (line, column)
    assert words in problem.message and f"column {column!r}" in str(problem)


@pytest.mark.parametrize(
    "text",
    [
        "id,prompt,duration\na,a fox,8s\nb,a hen\n",  # a short row, ended: the rest is empty
        "id,prompt,duration\na,a fox\nb,a hen,8s",  # short, but not where the file ends
        "id,prompt\na,a fox\nb,a he",  # a cut in the last cell cannot be seen, nor is it said
    ],
)
def test_a_short_row_is_read_with_empty_cells_unless_the_file_ends_in_it(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text, encoding="utf-8")
    assert len(load(path, get_model("fal-ai/veo3.1")).rows) == 2


def test_the_corpus_is_complete() -> None:
    found = [
        p.relative_to(BAD).as_posix()
        for p in BAD.rglob("*")
        if p.is_file() and p.parent.name != "images" and p.name != "batchrunner.toml"
    ]
    assert sorted(found) == sorted(c[0] for c in CORPUS)


@pytest.mark.parametrize(("name", "row", "line", "column", "words"), CORPUS)
def test_a_bad_manifest_names_row_line_and_column(
    tmp_path: Path, name: str, row: int | None, line: int | None, column: str | None, words: str
) -> None:
    shutil.copytree(BAD, tmp_path, dirs_exist_ok=True)
    with (tmp_path / "images" / "big.png").open("wb") as handle:  # generated, not committed
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(MAX_IMAGE_BYTES + 1)
    path = tmp_path / name
    (problem,) = errors_of(path, corpus_model(path))  # one mistake, one problem: no noise
    assert (problem.row, problem.line, problem.column) == (row, line, column)
    assert words in problem.message
    text = str(problem)
    assert (f"row {row}" in text) is (row is not None)
    assert (f"line {line}" in text) is (line is not None)


def test_every_problem_of_a_manifest_comes_at_once_sorted_by_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "id,prompt,image_url,resolution,output\n"
        f"a,ok,{URL},4k,x\nb,ok,missing.png,720p,x\na,,{URL},720p,\n"
    )
    errors = errors_of(path)
    assert [(p.row, p.column) for p in errors] == [
        (1, "resolution"),
        (2, "image_url"),
        (2, "output"),
        (3, "prompt"),
        (3, "id"),
    ]


# ---------------------------------------------------------------------- properties

BOOL_SPELLINGS = {True: ["TRUE", "true", "yes", "Y", "1", "on"], False: ["FALSE", "no", "n", "0"]}
prompts = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff")
    | st.sampled_from(["\n", "\t", ",", '"', ";"]),
    min_size=1,
    max_size=80,
).filter(lambda s: s.strip())
rows_strategy = st.fixed_dictionaries(
    {
        "prompt": prompts,
        "duration": st.sampled_from(["4s", "6s", "8s", "4", "6", "8"]),
        "generate_audio": st.booleans(),
        "aspect_ratio": st.sampled_from(["auto", "16:9", "9:16"]),
        "seed": st.none() | st.integers(min_value=-(2**63), max_value=2**63),
    }
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(rows_strategy, min_size=1, max_size=12), seed=st.integers(0, 2**32))
def test_csv_round_trip_and_ids_unique_and_order_free(
    rows: list[dict[str, Any]], seed: int
) -> None:
    def expected(row: dict[str, Any]) -> dict[str, Any]:
        duration = row["duration"].rstrip("s") + "s"
        values = {**row, "duration": duration, "image_url": URL}
        return {k: v for k, v in values.items() if v is not None}

    def write(path: Path, ordered: list[dict[str, Any]]) -> None:
        chooser = random.Random(seed)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", "image_url", "duration", "generate_audio", "aspect_ratio",
                             "seed"])  # fmt: skip
            for row in ordered:
                audio = chooser.choice(BOOL_SPELLINGS[row["generate_audio"]])
                seed_cell = "" if row["seed"] is None else row["seed"]
                # braces in a prompt cell are {column} placeholders; literal ones are doubled
                prompt = row["prompt"].replace("{", "{{").replace("}", "}}")
                writer.writerow([prompt, URL, row["duration"], audio, row["aspect_ratio"],
                                 seed_cell])  # fmt: skip

    unique = list({json.dumps(expected(r), sort_keys=True): r for r in rows}.values())
    shuffled = unique[:]
    random.Random(seed).shuffle(shuffled)
    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder) / "a.csv", unique)
        write(Path(folder) / "b.csv", shuffled)
        loaded = load(Path(folder) / "a.csv").rows
        reloaded = load(Path(folder) / "b.csv").rows

    assert len(loaded) == len(unique)
    for row, source in zip(loaded, unique, strict=True):
        assert {k: row.payload[k] for k in expected(source)} == expected(source)
    ids = {
        json.dumps(expected(s), sort_keys=True): r.job_id
        for s, r in zip(unique, loaded, strict=True)
    }
    assert len(set(ids.values())) == len(unique)
    again = {
        json.dumps(expected(s), sort_keys=True): r.job_id
        for s, r in zip(shuffled, reloaded, strict=True)
    }
    assert again == ids


def test_a_workbook_with_several_sheets_uses_the_first_and_names_the_others(
    tmp_path: Path,
) -> None:
    book = openpyxl.Workbook()
    book.active.title = "Day 1"
    book.active.append(["prompt", "image_url"])
    book.active.append(["A calm lake", URL])
    book.create_sheet("Day 2").append(["prompt"])
    book.create_sheet("notes")
    book.save(tmp_path / "m.xlsx")
    loaded = load(tmp_path / "m.xlsx")
    assert len(loaded.rows) == 1
    (warning,) = [w for w in loaded.warnings if w.column is None]
    assert "read the first, 'Day 1' (the others: 'Day 2', 'notes')" in warning.message
    assert "--sheet" in warning.message and warning.severity == "warning"
    assert not load(tmp_path / "m.xlsx", sheet="Day 1").warnings


def test_a_hidden_first_sheet_is_passed_over_for_the_first_a_user_sees(tmp_path: Path) -> None:
    """An old draft hidden before the sheet the art director works in is not what gets bought."""
    book = openpyxl.Workbook()
    book.active.title = "old draft"
    book.active.append(["prompt", "image_url"])
    book.active.append(["OLD DRAFT prompt", URL])
    book.active.sheet_state = "hidden"
    final = book.create_sheet("Final")
    final.append(["prompt", "image_url"])
    final.append(["A calm lake", URL])
    book.save(tmp_path / "m.xlsx")
    loaded = load(tmp_path / "m.xlsx")
    assert [row.payload["prompt"] for row in loaded.rows] == ["A calm lake"]
    (warning,) = [w for w in loaded.warnings if w.column is None]
    assert "read the first visible, 'Final' (the others: 'old draft' (hidden))" in warning.message
    hidden = load(tmp_path / "m.xlsx", sheet="old draft")  # asked for by name: read
    assert [row.payload["prompt"] for row in hidden.rows] == ["OLD DRAFT prompt"]


def test_a_workbook_with_macros_is_read_and_other_kinds_say_how_to_save_them(
    tmp_path: Path,
) -> None:
    book = openpyxl.Workbook()
    book.active.append(["prompt", "image_url"])
    book.active.append(["A calm lake", URL])
    book.save(tmp_path / "m.xlsm")
    assert [row.payload["prompt"] for row in load(tmp_path / "m.xlsm").rows] == ["A calm lake"]
    for name, said in [
        ("m.txt", '(save it as CSV UTF-8 (Excel\'s "Unicode Text" .txt is not read))'),
        ("m.numbers", "(export it from Numbers as CSV or Excel)"),
        ("m.xls", "(save it as .xlsx)"),
    ]:
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(UsageError, match=re.escape(f"unknown manifest format {said}")):
            load(tmp_path / name)


def test_a_hidden_column_is_read_and_said_to_be(tmp_path: Path) -> None:
    """A `negative_prompt` column hidden in the workbook was sent without a word (hidden rows
    were warned of): what is bought should be what the sheet can show."""
    book = openpyxl.Workbook()
    book.active.append(["prompt", "image_url", "negative_prompt", "scene"])
    book.active.append(["A calm lake", URL, "blurry", "intro"])
    book.active.column_dimensions["C"].hidden = True
    book.active.column_dimensions["F"].hidden = True  # no column of the table: not named
    book.save(tmp_path / "m.xlsx")
    loaded = load(tmp_path / "m.xlsx")
    assert loaded.rows[0].payload["negative_prompt"] == "blurry"
    (warning,) = [w for w in loaded.warnings if "hidden" in w.message]
    assert warning.message == (
        "hidden in the sheet: column C ('negative_prompt'); its cells are read as any other's "
        "(unhide it to see what is bought, or delete it)"
    )


def test_cells_merged_down_a_sheet_give_every_row_they_cover_their_value(tmp_path: Path) -> None:
    """A shot list with a style merged over three takes and audio switched off for two: each
    row reads what the sheet shows it, not an empty cell (a required field missing, or an
    optional one at its default: audio on, paid for). A range merged across columns too fills
    its first column only, where the sheet shows the value."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id", "prompt", "image_url", "generate_audio", "negative_prompt", "scene"])
    sheet.append(["a", "a fox, woodblock", URL, False, None, "forest"])
    sheet.append(["b", None, URL, None, None, None])
    sheet.append(["c", None, URL, True, None, None])
    sheet.append(["d", "an owl", URL, True, "blur", "night"])
    for ref in ("B2:B4", "D2:D3", "F2:F3", "E5:F6"):
        sheet.merge_cells(ref)
    sheet.append(["e", "a hen", URL, False])
    book.save(tmp_path / "m.xlsx")
    loaded = load(tmp_path / "m.xlsx")
    got = [(r.payload["prompt"], r.payload["generate_audio"]) for r in loaded.rows]
    assert got == [("a fox, woodblock", False)] * 2 + [
        ("a fox, woodblock", True), ("an owl", True), ("a hen", False)
    ]  # fmt: skip
    assert [r.metadata.get("scene") for r in loaded.rows] == ["forest", "forest", None, None, None]
    assert [r.payload.get("negative_prompt") for r in loaded.rows] == [
        None,
        None,
        None,
        "blur",
        "blur",
    ]
    (warning,) = [w for w in loaded.warnings if "merged" in w.message]
    assert "4 merged cells span several rows (B2:B4, D2:D3, F2:F3, E5:F6)" in warning.message


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["bool", "int", "float", "choice", "text", "list", "any"]),
    cells=st.lists(
        st.sampled_from(
            ["", " 8 ", "8.0", "8s", "yes", "No", "1e3", "abc", "a|b", "[1]", "x" * 300]
        ),
        max_size=8,
    ),
)
def test_a_remembered_cell_becomes_what_it_became_the_first_time(
    kind: str, cells: list[str]
) -> None:
    """The loader coerces a repeated cell once per column: the value, or the reason it is
    refused, is the same as coercing it afresh."""
    from batchrunner.coerce import BAD, OMIT, BadCell, Coercer, FieldKind, coerce

    spec = FieldKind("duration", kind, ("4s", "8s"))
    remembering = Coercer(spec)

    def outcome(convert: Any, cell: str) -> Any:
        try:
            value = convert(cell)
        except BadCell as exc:
            return ("refused", str(exc))
        return "omitted" if value is OMIT else value

    for cell in [*cells, *cells]:
        assert outcome(remembering, cell) == outcome(lambda c: coerce(c, spec), cell)
    column = remembering.column([*cells, *cells])
    for cell, value in zip([*cells, *cells], column, strict=True):
        fresh = outcome(lambda c: coerce(c, spec), cell)
        assert ("refused" if value is BAD else "omitted" if value is OMIT else value) == (
            "refused" if isinstance(fresh, tuple) else fresh
        )


# Cells a manifest row may hold: fine ones (blank, spaced, a template, a local file, ...) and,
# per column, some that are not (the random manifests below have a few of those).
FINE_CELLS = {
    "id": ["", "shot-1", "shot-2", " shot-3 ", "7"],
    "prompt": ["A calm lake", "A calm lake", "  spaced  ", "{notes} at dawn", "{{x}}"],
    "image_url": [URL, f" {URL} ", "lighthouse.png"],
    "duration": ["", "4s", "8", "8.0"],
    "generate_audio": ["", "TRUE", "no"],
    "seed": ["", "3", "-1"],
    "output": ["", "clip", "Clip.mp4", "day2/clip"],
    "notes": ["", "some note"],
}
BAD_CELLS = {
    "id": ["a\tb"],
    "prompt": ["", "x" * 20001],
    "image_url": ["ftp://example.com/a.png", "missing.png", ""],
    "duration": ["5s", "abc"],
    "generate_audio": ["maybe"],
    "seed": ["4.5"],
    "output": ["../up"],
    "notes": [],
}


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(
        st.fixed_dictionaries({k: st.sampled_from(v) for k, v in FINE_CELLS.items()}),
        min_size=1,
        max_size=8,
    ),
    columns=st.sets(st.sampled_from(sorted(FINE_CELLS))),
    spoiled=st.lists(st.tuples(st.integers(0, 7), st.sampled_from(sorted(BAD_CELLS))), max_size=2),
    choice=st.randoms(use_true_random=False),
    dedupe=st.booleans(),
)
def test_building_a_column_at_a_time_changes_nothing(
    picks: list[dict[str, str]],
    columns: set[str],
    spoiled: list[tuple[int, str]],
    choice: random.Random,
    dedupe: bool,
) -> None:
    """Rows that are plainly valid are built a column at a time, the others one by one: the
    jobs, warnings and errors are exactly those of building every row one by one."""
    from batchrunner.expand import Expansion
    from batchrunner.rows import RowBuilder

    for index, column in spoiled:
        if BAD_CELLS[column]:
            picks[index % len(picks)][column] = choice.choice(BAD_CELLS[column])
    names = [n for n in FINE_CELLS if n in {*columns, "prompt", "image_url"}]  # the required

    def outcome() -> Any:
        try:
            loaded = load(folder / "m.csv", expansion=Expansion(dedupe=dedupe))
        except ManifestError as exc:
            return [str(exc), exc.problems]
        return [loaded.rows, [list(row.payload) for row in loaded.rows], loaded.warnings]

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        shutil.copy(LIGHTHOUSE, folder / "lighthouse.png")
        with (folder / "m.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows([pick[n] for n in names] for pick in picks)
        fast = outcome()
        original = RowBuilder.plain_rows
        RowBuilder.plain_rows = lambda self, records: None  # type: ignore[method-assign]
        try:
            slow = outcome()
        finally:
            RowBuilder.plain_rows = original  # type: ignore[method-assign]
    assert fast == slow


def test_rows_made_in_bulk_are_the_dataclasses_they_stand_for() -> None:
    from batchrunner.planner import Decision, _new_job
    from batchrunner.rows import ManifestRow, _manifest_row

    made = _manifest_row(3, 4, "shot-3", {"prompt": "p"}, "clip.mp4", {"notes": "n"}, 0.5, "m")
    row = ManifestRow(3, 4, "shot-3", {"prompt": "p"}, {}, "clip.mp4", {"notes": "n"}, 0.5, "", "m")
    assert made == row and vars(made) == vars(row)
    assert _new_job(row) == Decision("shot-3", 3, "submit", "new", 0.5)
    assert vars(_new_job(row)) == vars(Decision("shot-3", 3, "submit", "new", 0.5))


def test_a_csv_read_whole_gives_the_records_a_row_by_row_read_gives(tmp_path: Path) -> None:
    """A plain CSV's records are made on demand (cells._Grid): they, their cells a column
    at a time and their numbers are those of the same file read record by record."""
    from batchrunner.cells import _OneLineEach, _read_records, read_table

    path = tmp_path / "m.csv"
    path.write_text("\n\nid,prompt\ns1,a\ns2, b \ns3,c\n", encoding="utf-8")
    table = read_table(path)
    parsed = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    eager = _read_records(_OneLineEach(parsed))
    assert type(table.records).__name__ == "_Grid" and isinstance(eager.records, list)
    assert table.columns == eager.columns and table.problems == eager.problems == []
    assert list(table.records) == eager.records
    assert [table.records[i] for i in (0, 2, -1)] == [eager.records[i] for i in (0, 2, -1)]
    assert table.records[1:] == eager.records[1:] and len(table.records) == 3
    with pytest.raises(IndexError):
        table.records[3]
    for name in ("id", "prompt", "duration"):
        assert table.cells(name) == eager.cells(name) == [r.cells.get(name) for r in eager.records]
    assert [list(n) for n in table.numbers()] == [list(n) for n in eager.numbers()]
    assert [list(n) for n in table.numbers()] == [[1, 2, 3], [4, 5, 6]]
