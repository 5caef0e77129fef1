"""Several models in one manifest: a ``model`` column names the endpoint each row runs on."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import batchrunner
from batchrunner.cli import cli
from batchrunner.errors import ManifestError, Problem
from batchrunner.expand import Expansion
from batchrunner.manifest import Manifest, load_manifest
from batchrunner.models import DEFAULT_MODEL, get_model
from batchrunner.planner import make_plan
from batchrunner.simulator import SimulatorServer
from tests.helpers import (
    IMAGE,
    TOKEN,
    counters,
    fast_config,
    page_data,
    run_args,
    write_manifest,
)

VEO31 = "fal-ai/veo3.1"  # text to video: no image
KLING = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"  # durations 5 and 10, a cfg_scale
ENV = {"BATCHRUNNER_API_KEY": TOKEN}


def sheet(tmp_path: Path, *extra: dict[str, str]) -> Path:
    """Four rows on three models: the default (no cell), Veo 3.1 twice, Kling."""
    return write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "fox", "model": "", "prompt": "a fox", "image_url": IMAGE, "duration": "8s"},
            {"id": "owl", "model": VEO31, "prompt": "an owl", "image_url": "", "duration": "4s"},
            {"id": "cat", "model": KLING, "prompt": "a cat", "image_url": IMAGE, "duration": "5"},
            {"id": "dog", "model": f" {VEO31} ", "prompt": "a dog", "duration": "8s"},
            *extra,
        ],
    )


def load(path: Path, **expansion: object) -> Manifest:
    return load_manifest(path, get_model(DEFAULT_MODEL), expansion=Expansion(**expansion))  # type: ignore[arg-type]


def problems_of(path: Path, **expansion: object) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load(path, **expansion)
    return caught.value.problems


def test_each_row_runs_on_the_model_its_cell_names(tmp_path: Path) -> None:
    manifest = load(sheet(tmp_path))
    by_id = {row.job_id: row for row in manifest.rows}
    assert [row.job_id for row in manifest.rows] == ["fox", "owl", "cat", "dog"]
    assert {job_id: row.endpoint for job_id, row in by_id.items()} == {
        "fox": DEFAULT_MODEL,  # an empty cell: --model
        "owl": VEO31,
        "cat": KLING,
        "dog": VEO31,  # the cell is stripped
    }
    assert manifest.endpoints == [DEFAULT_MODEL, VEO31, KLING]
    # each body is completed and priced by its own model
    assert by_id["owl"].payload["resolution"] == "720p" and "image_url" not in by_id["owl"].payload
    assert by_id["cat"].payload["duration"] == "5" and "resolution" not in by_id["cat"].payload
    assert by_id["fox"].cost_usd == pytest.approx(3.20)
    assert by_id["owl"].cost_usd == pytest.approx(1.60)
    assert by_id["cat"].cost_usd == get_model(KLING).cost(by_id["cat"].payload)
    assert not manifest.warnings  # image_url is Veo 3's and Kling's, empty for Veo 3.1's rows


def test_each_row_is_checked_against_its_own_model(tmp_path: Path) -> None:
    """Kling takes a duration of 5, Veo 3.1 does not: the error is the Veo 3.1 row's, and a
    model cell that names no model is its row's error too, both reported at once."""
    path = sheet(
        tmp_path,
        {"id": "elk", "model": VEO31, "prompt": "an elk", "duration": "5"},
        {"id": "bee", "model": "fal-ai/veo3.2", "prompt": "a bee", "duration": "8s"},
    )
    found = problems_of(path)
    assert [(p.row, p.column, p.severity) for p in found] == [
        (5, "duration", "error"),
        (6, "model", "error"),
    ]
    assert "'4s', '6s' or '8s'" in found[0].message
    assert found[1].message.startswith(
        "unknown model 'fal-ai/veo3.2'; did you mean 'fal-ai/veo3.1'"
    )
    assert found[1].line == 7 and found[1].value == "fal-ai/veo3.2"


@pytest.mark.parametrize(
    ("cell", "meant"),
    [
        ("FAL-AI/Veo3.1", VEO31),  # another case: difflib, case-sensitive, found nothing
        ("fal-ai/kling-video/v2.5-turbo/pro/image_to_video", KLING),
        ("https://fal.ai/models/fal-ai/kling-video/v2.5-turbo/pro/image-to-video/api", KLING),
        ("veo3.1/image-to-video", "fal-ai/veo3.1/image-to-video"),  # the owner left out
        ("fal-ai/hailuo-02", "fal-ai/minimax/hailuo-02/standard/image-to-video"),
        ("fal-ai/seedance", "fal-ai/bytedance/seedance/v1/pro/image-to-video"),
    ],
)
def test_a_misspelt_model_cell_suggests_the_one_id_it_means(
    tmp_path: Path, cell: str, meant: str
) -> None:
    """A model id typed by hand (the case of a title, `_` for `-`, the page's address pasted,
    a short name) is one line naming the one registered id it means, not two guesses or none."""
    path = write_manifest(
        tmp_path / "m.csv", [{"id": "elk", "model": cell, "prompt": "an elk", "image_url": IMAGE}]
    )
    (problem,) = problems_of(path)
    assert problem.message.startswith(f"unknown model {cell!r}; did you mean {meant!r}? (")
    assert "\n" not in problem.message


def test_a_field_of_another_model_is_not_sent_to_rows_whose_model_lacks_it(
    tmp_path: Path,
) -> None:
    """``cfg_scale`` is Kling's: no "unknown column" warning, it is sent for the Kling row, and
    a Veo 3.1 row that fills it in is warned that it is not sent (kept as metadata)."""
    path = write_manifest(
        tmp_path / "m.csv",
        [
            {
                "id": "cat",
                "model": KLING,
                "prompt": "a cat",
                "image_url": IMAGE,
                "cfg_scale": "0.3",
            },
            {"id": "owl", "model": VEO31, "prompt": "an owl", "image_url": "", "cfg_scale": ""},
            {"id": "dog", "model": VEO31, "prompt": "a dog", "image_url": "", "cfg_scale": "0.9"},
        ],
    )
    manifest = load(path)
    cat, owl, dog = manifest.rows
    assert cat.payload["cfg_scale"] == pytest.approx(0.3) and "cfg_scale" not in cat.metadata
    assert "cfg_scale" not in dog.payload and dog.metadata["cfg_scale"] == "0.9"
    assert [(w.column, w.severity, w.message) for w in manifest.warnings] == [
        (
            "cfg_scale",
            "warning",
            f"{VEO31} has no 'cfg_scale' field, so it is not sent for row 3 (kept as metadata)",
        )
    ]
    assert "cfg_scale" not in owl.payload


def test_a_missing_required_column_names_the_models_that_need_it(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "owl", "model": VEO31, "prompt": "an owl"},
            {"id": "cat", "model": KLING, "prompt": "a cat"},
            {"id": "cow", "model": KLING, "prompt": "a cow"},
        ],
    )
    (missing,) = problems_of(path)
    assert missing.column == "image_url" and missing.row is None
    assert missing.message.startswith(
        f"for {KLING} (rows 2, 3): the manifest has no 'image_url' column, which is required"
    )


def test_ids_and_output_names_are_one_job_and_one_file_across_models(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "owl", "model": VEO31, "prompt": "an owl", "output": "a.mp4"},
            {"id": "owl", "model": "fal-ai/veo3.1/fast", "prompt": "an owl", "output": "b.mp4"},
            {"id": "elk", "model": "fal-ai/veo3.1/fast", "prompt": "an elk", "output": "A.mp4"},
        ],
    )
    found = problems_of(path)
    assert [(p.row, p.column) for p in found] == [(2, "id"), (3, "output")]
    assert "the id 'owl' is also used by row 1" in found[0].message
    assert "the output name 'A.mp4' is also used by row 1" in found[1].message


def test_set_and_matrix_fields_a_rows_model_lacks(tmp_path: Path) -> None:
    """Checked against --model when given; a row of another model that lacks the field: a
    --set value is not sent (a warning), a --matrix would buy one request several times (an
    error, before anything is sent)."""
    path = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "cat", "model": "", "prompt": "a cat", "image_url": IMAGE},
            {"id": "owl", "model": VEO31, "prompt": "an owl", "image_url": ""},
        ],
    )
    kling = get_model(KLING)
    warned = load_manifest(path, kling, expansion=Expansion(defaults={"cfg_scale": "0.4"}))
    assert [w.message for w in warned.warnings] == [
        f"--set cfg_scale (or [defaults]): {VEO31} has no 'cfg_scale' field, so it is not sent "
        "for row 2"
    ]
    assert warned.rows[0].payload["cfg_scale"] == pytest.approx(0.4)
    assert "cfg_scale" not in warned.rows[1].payload
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, kling, expansion=Expansion(matrix=(("cfg_scale", ("0.2", "0.8")),)))
    assert caught.value.problems[0].message.startswith(
        f"--matrix cfg_scale: {VEO31} has no 'cfg_scale' field, so the variants of row 2 would "
        "be one request bought several times"
    )


def test_plan_gives_the_models_and_each_ones_cost(tmp_path: Path) -> None:
    path = sheet(tmp_path, {"id": "yak", "model": "fal-ai/veo3.1/fast", "prompt": "a yak"})
    plan = make_plan(load(path))
    assert plan.endpoints == [DEFAULT_MODEL, VEO31, KLING, "fal-ai/veo3.1/fast"]
    assert plan.cost_usd == pytest.approx(sum(group["cost_usd"] for group in plan.breakdown))
    by_model: dict[str, int] = {}
    for group in plan.breakdown:
        by_model[group["model"]] = by_model.get(group["model"], 0) + group["jobs"]
    assert by_model == {DEFAULT_MODEL: 1, VEO31: 2, KLING: 1, "fal-ai/veo3.1/fast": 1}
    lines = plan.lines()
    assert lines[0] == f"{path}: 5 rows -> 5 jobs for 4 models"
    assert plan.price_confirmed is False  # Veo 3.1 Fast's price is inferred
    assert list(plan.unconfirmed) == ["fal-ai/veo3.1/fast"]
    assert any(
        line.startswith("price unconfirmed for fal-ai/veo3.1/fast: ")
        and "https://fal.ai/models/fal-ai/veo3.1/fast" in line
        for line in lines
    )
    at = lines.index(f"  {VEO31}: 2 jobs, $4.80")  # each model's total, then its groups
    assert lines[at + 1 : at + 3] == [
        "      1 x duration=4s, resolution=720p, generate_audio=True: $1.60",
        "      1 x duration=8s, resolution=720p, generate_audio=True: $3.20",
    ]
    assert lines[lines.index(f"  {KLING}: 1 job, $0.35") + 1] == "      1 x duration=5: $0.35"


def test_a_sheet_of_several_models_runs_end_to_end(
    tmp_path: Path,
) -> None:
    """Over the simulator: each row is submitted to its own endpoint, its clip is checked
    against its own model's request, export has a ``model`` column, and a row whose model cell
    changes afterwards is refused as an edited row (its video would be bought again)."""
    path = sheet(tmp_path)
    with SimulatorServer(fast_config()) as server:
        ran = CliRunner().invoke(cli, run_args(server, tmp_path, path), env=ENV)
        assert ran.exit_code == 0, ran.output
        seen = counters(server)["jobs"].values()
        assert sorted((job["endpoint"], job["prompt"]) for job in seen) == [
            (KLING, "a cat"),
            (VEO31, "a dog"),
            (VEO31, "an owl"),
            (DEFAULT_MODEL, "a fox"),
        ]
        frame = batchrunner.results(tmp_path / "ledger.db")
        assert dict(zip(frame["id"], frame["model"], strict=True)) == {
            "fox": DEFAULT_MODEL,
            "owl": VEO31,
            "cat": KLING,
            "dog": VEO31,
        }
        assert frame["warnings"].isna().all()  # each clip is what its model was asked for
        status = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db")])
        assert f"  {VEO31}: 2 jobs (2 done), $4.80\n" in status.output
        assert f"  {KLING}: 1 job (1 done), $0.35\n" in status.output
        page = page_data((tmp_path / "out" / "report.html").read_text("utf-8"))
        assert page["facets"]["model"] == [[DEFAULT_MODEL, 1], [VEO31, 2], [KLING, 1]]
        assert page["summary"]["models"] == sorted([DEFAULT_MODEL, VEO31, KLING])
        edited = pd.read_csv(path, keep_default_na=False)
        edited.loc[edited["id"] == "cat", "model"] = "fal-ai/veo3/image-to-video"
        edited.loc[edited["id"] == "cat", "duration"] = "8s"
        edited.to_csv(path, index=False)
        again = CliRunner().invoke(cli, run_args(server, tmp_path, path), env=ENV)
        assert again.exit_code == 2
        assert f"model {KLING} → {DEFAULT_MODEL}" in again.output
        assert counters(server)["submits"] == 4  # nothing bought twice


def test_a_dataframe_with_a_model_column(tmp_path: Path) -> None:
    shots = pd.DataFrame(
        {
            "id": ["owl", "cat"],
            "model": [VEO31, KLING],
            "prompt": ["an owl", "a cat"],
            "image_url": [None, IMAGE],
        }
    )
    plan = batchrunner.plan(shots)
    assert plan.endpoints == [VEO31, KLING] and plan.endpoint == f"{VEO31}, {KLING}"
    assert plan.jobs == 2


def test_set_is_checked_against_the_models_of_the_rows_not_the_default_one(
    tmp_path: Path,
) -> None:
    """Every row names its model, none runs on --model's (Veo 3 image-to-video): --set
    duration=10 and cfg_scale=0.8 are Kling's and fill the Kling row, not refused because
    Veo 3 takes neither; a Veo 3.1 row they do not fit is that row's problem; with no model
    column the same --set is one line, as before."""
    path = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "cat", "model": KLING, "prompt": "a cat", "image_url": IMAGE, "duration": ""},
            {"id": "owl", "model": VEO31, "prompt": "an owl", "image_url": "", "duration": "4s"},
        ],
    )
    out = tmp_path / "plan.jsonl"
    result = CliRunner().invoke(
        cli,
        ["plan", str(path), "--json", "-o", str(out), "--set", "duration=10", "--set",
         "cfg_scale=0.8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bodies = {job["job_id"]: job for job in map(json.loads, out.read_text().splitlines())}
    assert bodies["cat"]["input"]["duration"] == "10"
    assert bodies["cat"]["input"]["cfg_scale"] == 0.8 and bodies["cat"]["cost_usd"] == 0.70
    assert "cfg_scale" not in bodies["owl"]["input"]
    assert bodies["owl"]["input"]["duration"] == "4s"  # a filled cell is left as it is

    both_empty = write_manifest(
        tmp_path / "both.csv",
        [
            {"id": "cat", "model": KLING, "prompt": "a cat", "image_url": IMAGE, "duration": ""},
            {"id": "owl", "model": VEO31, "prompt": "an owl", "duration": ""},
        ],
    )
    found = problems_of(both_empty, defaults={"duration": "10"})
    assert [(p.row, p.column) for p in found] == [(2, "duration")]
    assert found[0].message == f"for {VEO31}: must be '4s', '6s' or '8s'"
    typo = CliRunner().invoke(cli, ["plan", str(path), "--set", "cfg_scal=0.8"])
    assert typo.exit_code == 2
    assert "--set cfg_scal (or [defaults]): " in typo.output and "has no such field" in typo.output

    plain = write_manifest(tmp_path / "p.csv", [{"prompt": "a fox", "image_url": IMAGE}])
    for flag, said in [
        ("duration=10", "error: --set duration=10: must be '4s', '6s' or '8s'"),
        ("cfg_scale=0.8", "error: --set: 'cfg_scale' is not a field of the model"),
    ]:
        refused = CliRunner().invoke(cli, ["plan", str(plain), "--set", flag])
        assert refused.exit_code == 2 and refused.stderr.startswith(said), refused.output


def test_a_matrix_of_models_runs_every_row_on_each(tmp_path: Path) -> None:
    """``--matrix model=a,b``: each row on each model, the model named in the variant label
    (so in job ids and file names), other matrix fields checked against each model, values
    refused by one model reported as that model's."""
    path = write_manifest(
        tmp_path / "m.csv",
        [{"id": "owl", "prompt": "an owl", "output": "owl.mp4"}, {"prompt": "an elk"}],
    )
    fast = "fal-ai/veo3.1/fast"
    result = CliRunner().invoke(
        cli,
        ["plan", str(path), "--json", "--matrix", f"model={VEO31},{fast}", "--matrix",
         "resolution=720p,1080p"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["endpoints"] == [VEO31, fast] and plan["jobs"] == 8
    manifest = load(path, matrix=(("model", (VEO31, fast)), ("resolution", ("720p", "1080p"))))
    owl = [(row.job_id, row.endpoint, row.output) for row in manifest.rows if row.row == 1]
    assert owl == [
        (f"owl~{VEO31}~720p", VEO31, "owl~fal-ai_veo3.1~720p.mp4"),
        (f"owl~{VEO31}~1080p", VEO31, "owl~fal-ai_veo3.1~1080p.mp4"),
        (f"owl~{fast}~720p", fast, "owl~fal-ai_veo3.1_fast~720p.mp4"),
        (f"owl~{fast}~1080p", fast, "owl~fal-ai_veo3.1_fast~1080p.mp4"),
    ]
    assert {row.endpoint for row in manifest.rows if row.row == 2} == {VEO31, fast}

    unknown = CliRunner().invoke(cli, ["plan", str(path), "--matrix", "model=fal-ai/veo3.2"])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith(
        "error: --matrix model=fal-ai/veo3.2: unknown model 'fal-ai/veo3.2'; did you mean"
    )
    # Kling has no resolution: its variants would be one request bought twice
    found = problems_of(path, matrix=(("model", (VEO31, KLING)), ("resolution", ("720p", "4k"))))
    assert f"--matrix resolution: {KLING} has no 'resolution' field" in found[0].message
    # a duration only Kling takes: each refusal names its model
    found = problems_of(path, defaults={"image_url": IMAGE}, matrix=(("model", (VEO31, KLING)),
                        ("duration", ("5",))))  # fmt: skip
    assert [(p.row, p.message.split(":")[0]) for p in found if p.row] == [
        (1, f"for {VEO31}"),
        (2, f"for {VEO31}"),
    ]
    typo = problems_of(path, defaults={"durration": "4s"}, matrix=(("model", (VEO31, fast)),))
    assert [p.message for p in typo] == [
        f"--set durration (or [defaults]): {VEO31} or {fast} has no such field"
    ]


def test_the_python_api_takes_a_matrix_of_models(tmp_path: Path) -> None:
    shots = pd.DataFrame({"id": ["owl"], "prompt": ["an owl"]})
    plan = batchrunner.plan(shots, matrix={"model": [VEO31, "fal-ai/veo3.1/fast"]})
    assert plan.endpoints == [VEO31, "fal-ai/veo3.1/fast"] and plan.jobs == 2


def test_a_model_column_of_notes_is_one_error_saying_what_the_column_means(
    tmp_path: Path,
) -> None:
    """A sheet from before the column named the model, using it for notes: one line saying
    what the column is for, not an "unknown model" per row (and no crash when no row is left
    to read)."""
    notes = [
        {"id": "a", "prompt": "x", "image_url": IMAGE, "model": "v1", "duration": "4s"},
        {"id": "b", "prompt": "y", "image_url": IMAGE, "model": "v2", "duration": "4s"},
    ]
    for extra in ([], [{"id": "c", "prompt": "z", "image_url": IMAGE, "model": ""}]):
        path = write_manifest(tmp_path / "notes.csv", notes + extra)
        for expansion in ({}, {"defaults": {"duration": "8s"}}):
            (problem,) = problems_of(path, **expansion)
            assert problem.column == "model" and problem.row is None
            assert problem.message.startswith(
                "no cell of the 'model' column names a model (row 1: 'v1'); it names the "
                "endpoint each row runs on"
            )
            assert problem.message.endswith("rename the column to keep it as a note")
    # ids mistyped everywhere are not notes: each row says which model it meant
    typos = [{**row, "model": "fal-ai/veo3.2"} for row in notes]
    found = problems_of(write_manifest(tmp_path / "typos.csv", typos))
    assert [(p.row, p.message.split(";")[0]) for p in found] == [
        (1, "unknown model 'fal-ai/veo3.2'"),
        (2, "unknown model 'fal-ai/veo3.2'"),
    ]


def test_validate_says_how_many_models_the_sheet_uses(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(sheet(tmp_path))])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'm.csv'}: 4 rows OK for 3 models; estimated cost $8.35\n"


def test_an_unregistered_model_must_be_an_endpoint_id(tmp_path: Path) -> None:
    """--allow-unregistered sends a model the registry does not know, but only an id that is
    one: owner/app[/path], never a query, another host or a ``..`` in the request's path."""
    bad = ["foo/bar?x=1", "../../etc", "https://evil.example/x", "a/./b", "veo"]
    path = write_manifest(
        tmp_path / "m.csv",
        [{"id": f"r{i}", "model": model, "prompt": "hi"} for i, model in enumerate(bad)]
        + [{"id": "ok", "model": "acme/new-model/v1.2", "prompt": "hi"}],
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest(
            path,
            get_model(DEFAULT_MODEL),
            models=lambda endpoint: get_model(endpoint, allow_unregistered=True),
        )
    found = caught.value.problems
    assert [(p.row, p.value) for p in found] == list(enumerate(bad, start=1))
    assert all("is not an endpoint id: write owner/app" in p.message for p in found)
    result = CliRunner().invoke(
        cli, ["plan", str(path), "--model", "foo/bar?x=1", "--allow-unregistered"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: 'foo/bar?x=1' is not an endpoint id")


def test_an_unregistered_model_s_url_columns_take_local_files_as_registered_ones_do(
    tmp_path: Path,
) -> None:
    """With no schema to say which fields take a file, an unregistered model's ``image_url``
    of ``lighthouse.png`` was sent as that text (the provider fails or refuses it, maybe
    billed). A ``*_url`` column takes a local file as a registered model's does: sent as a
    ``data:`` URI, and a file not there is refused before anything is sent."""
    import shutil

    root = Path(__file__).resolve().parent.parent

    shutil.copy(root / "manifests" / "images" / "lighthouse.png", tmp_path / "lighthouse.png")
    model = "acme/new-model/image-to-video"
    path = write_manifest(
        tmp_path / "m.csv",
        [{"id": "a", "model": model, "prompt": "hi", "image_url": "lighthouse.png"}],
    )
    loaded = load_manifest(
        path, get_model(DEFAULT_MODEL), models=lambda e: get_model(e, allow_unregistered=True)
    )
    (row,) = loaded.rows
    assert row.files["image_url"].path == str(tmp_path / "lighthouse.png")
    shown = CliRunner().invoke(
        cli, ["plan", str(path), "--allow-unregistered", "-o", str(tmp_path / "b.jsonl")]
    )
    assert shown.exit_code == 0, shown.output
    sent = json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["input"]
    assert sent["image_url"].startswith("data:image/png;base64,")
    write_manifest(path, [{"id": "a", "model": model, "prompt": "hi", "image_url": "gone.png"}])
    with pytest.raises(ManifestError, match="image file not found"):
        load_manifest(
            path, get_model(DEFAULT_MODEL), models=lambda e: get_model(e, allow_unregistered=True)
        )


def test_a_registered_model_in_other_letters_is_not_sent_unregistered(tmp_path: Path) -> None:
    """With --allow-unregistered, ``Fal-AI/Veo3.1`` would go out unvalidated and unpriced (and
    fail at the provider, whose ids are lower-case): it is an error naming the registered id."""
    path = write_manifest(
        tmp_path / "m.csv",
        [
            {"id": "a", "model": "Fal-AI/Veo3.1", "prompt": "hi"},
            {"id": "b", "model": "acme/new-model", "prompt": "hi"},
        ],
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest(
            path,
            get_model(DEFAULT_MODEL),
            models=lambda endpoint: get_model(endpoint, allow_unregistered=True),
        )
    (problem,) = caught.value.problems
    assert problem.row == 1
    assert "is the registered 'fal-ai/veo3.1' in other letters" in problem.message
