"""Row expansion, templates, defaults, identity, plans: a manifest becomes what was meant."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrunner import expand
from batchrunner.errors import ManifestError, UsageError
from batchrunner.expand import Expansion, Rows
from batchrunner.manifest import Manifest, load_manifest
from batchrunner.models import get_model
from batchrunner.planner import make_plan
from tests.helpers import IMAGE, write_manifest

SPEC = get_model("fal-ai/veo3/image-to-video")


def load(path: Path, **expansion: Any) -> Manifest:
    return load_manifest(path, SPEC, expansion=Expansion(**expansion))


def problems(path: Path, **expansion: Any) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load(path, **expansion)
    return [str(p) for p in caught.value.problems if p.severity == "error"]


def manifest(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_manifest(tmp_path / "m.csv", [{"image_url": IMAGE, **row} for row in rows])


def test_count_gives_takes_with_distinct_reproducible_seeds(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a fox"}, {"prompt": "a hen", "seed": "100"}])
    first = load(path, count=3)
    assert len(first.rows) == 6
    fox = [r.payload["seed"] for r in first.rows if r.row == 1]
    assert len(set(fox)) == 3  # takes differ
    assert [r.payload["seed"] for r in first.rows if r.row == 2] == [100, 101, 102]
    again = load(path, count=3)
    assert [(r.job_id, r.payload) for r in again.rows] == [
        (r.job_id, r.payload) for r in first.rows
    ]
    assert [r.variant for r in first.rows[:3]] == ["t1", "t2", "t3"]


def test_a_count_column_overrides_the_option_per_row(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a", "count": "2"}, {"prompt": "b", "count": ""}])
    assert [r.row for r in load(path, count=3).rows] == [1, 1, 2, 2, 2]
    bad = manifest(
        tmp_path,
        [{"prompt": "a", "count": "0"}, {"prompt": "b", "count": "two", "duration": "eight"}],
    )
    assert problems(bad) == [  # a bad count hides none of the row's other problems
        "row 1, line 2, column 'count': must be between 1 and 100 takes (got '0')",
        "row 2, line 3, column 'count': must be a whole number (got 'two')",
        "row 2, line 3, column 'duration': must be '4s', '6s' or '8s' (got 'eight')",
    ]


def test_a_matrix_over_a_filled_column_says_the_cells_are_replaced(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a", "aspect_ratio": "16:9"}, {"prompt": "b"}])
    loaded = load(path, matrix=(("aspect_ratio", ("9:16", "auto")),))
    assert [r.payload["aspect_ratio"] for r in loaded.rows] == ["9:16", "auto"] * 2
    (warning,) = [w for w in loaded.warnings if w.column == "aspect_ratio"]
    assert "replaces what 1 row wrote (rows 1)" in warning.message


def test_a_matrix_of_prompts_over_written_prompts_is_refused(tmp_path: Path) -> None:
    """Hand-written prompts are never dropped (as with --prompt-template): `--matrix
    prompt=a,b` over a sheet of prompts bought the matrix's prompts for every row with only a
    warning. Over empty prompt cells it varies them."""
    rows = [
        {"id": "a", "prompt": "a fox"},
        {"id": "b", "prompt": ""},
        {"id": "c", "prompt": "a hen"},
    ]
    path = manifest(tmp_path, rows)
    assert problems(path, matrix=(("prompt", ("dawn", "dusk")),)) == [
        "column 'prompt': --matrix prompt=... would drop the prompts 2 rows wrote (rows 1, 3): "
        "empty those cells (or remove the column) to vary the prompt by --matrix, or vary "
        "another field"
    ]
    empty = manifest(tmp_path, [{"id": "a", "prompt": ""}, {"id": "b", "prompt": ""}])
    assert [
        r.payload["prompt"] for r in load(empty, matrix=(("prompt", ("dawn", "dusk")),)).rows
    ] == ["dawn", "dusk"] * 2


def test_braces_in_a_prompt_cell_say_how_to_write_them(tmp_path: Path) -> None:
    """`A neon sign that reads {OPEN}` with no template given: the message spoke of a prompt
    template and said nothing of `{{ }}`."""
    path = manifest(tmp_path, [{"prompt": "A neon sign that reads {OPEN}"}])
    assert problems(path) == [
        "row 1, line 2, column 'prompt': the prompt uses {OPEN}, but there is no 'OPEN' column "
        "(write {{OPEN}} for braces in the text itself) (got 'A neon sign that reads {OPEN}')"
    ]
    literal = manifest(tmp_path, [{"prompt": "A neon sign that reads {{OPEN}}"}])
    assert load(literal).rows[0].payload["prompt"] == "A neon sign that reads {OPEN}"


def test_matrix_is_every_row_times_every_combination(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"id": "fox", "prompt": "a fox"}, {"id": "hen", "prompt": "a hen"}])
    matrix = (("aspect_ratio", ("16:9", "9:16")), ("resolution", ("720p", "1080p")))
    loaded = load(path, matrix=matrix)
    assert len(loaded.rows) == 8
    fox = {r.job_id: (r.payload["aspect_ratio"], r.payload["resolution"]) for r in loaded.rows[:4]}
    assert fox == {
        "fox~16:9~720p": ("16:9", "720p"),
        "fox~16:9~1080p": ("16:9", "1080p"),
        "fox~9:16~720p": ("9:16", "720p"),
        "fox~9:16~1080p": ("9:16", "1080p"),
    }


def test_matrix_values_are_validated_against_the_model(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a"}, {"prompt": "b"}])
    found = problems(path, matrix=(("resolution", ("720p", "4k")),))
    assert len(found) == 2  # once per row, not once per variant
    assert "column 'resolution'" in found[0] and "'720p' or '1080p'" in found[0]


def test_prompt_template_fills_from_columns(tmp_path: Path) -> None:
    path = manifest(
        tmp_path, [{"subject": "fox", "style": "ukiyo-e"}, {"subject": "hen", "style": "noir"}]
    )
    loaded = load(path, prompt_template="A {subject} in the style of {style}, {{no placeholder}}")
    assert [r.payload["prompt"] for r in loaded.rows] == [
        "A fox in the style of ukiyo-e, {no placeholder}",
        "A hen in the style of noir, {no placeholder}",
    ]
    assert loaded.rows[0].metadata == {"subject": "fox", "style": "ukiyo-e"}


def test_placeholders_inside_the_prompt_cell(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "A {animal} at dawn", "animal": "heron"}])
    assert load(path).rows[0].payload["prompt"] == "A heron at dawn"


def test_a_template_naming_a_missing_or_empty_column_is_a_problem(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"subject": "fox", "style": ""}, {"subject": "hen", "style": "x"}])
    found = problems(path, prompt_template="A {Subject} by {artist} in {style}")
    assert found == [  # once for the manifest, not once in every row
        "column 'Subject': the prompt template uses {Subject}, but there is no 'Subject' column "
        "(did you mean {subject}?); columns found: 'image_url', 'subject', 'style'",
        "column 'artist': the prompt template uses {artist}, but there is no 'artist' column; "
        "columns found: 'image_url', 'subject', 'style'",
    ]
    given = load(  # a matrix or --set value is a column too
        path, prompt_template="A {subject}, {aspect_ratio}", matrix=(("aspect_ratio", ("16:9",)),)
    )
    assert [row.payload["prompt"] for row in given.rows] == ["A fox, 16:9", "A hen, 16:9"]
    empty = problems(path, prompt_template="A {subject} in {style}")
    assert empty == [
        "row 1, line 2, column 'style': the prompt template uses {style}, "
        "which is empty in this row (got '')"
    ]


def test_count_matrix_and_template_combine(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"subject": "fox"}, {"subject": "hen"}, {"subject": "owl"}])
    loaded = load(
        path,
        count=2,
        matrix=(("aspect_ratio", ("16:9", "9:16")),),
        prompt_template="A {subject}, framed {aspect_ratio}",
    )
    assert len(loaded.rows) == 3 * 2 * 2
    assert {r.payload["prompt"] for r in loaded.rows if r.row == 2} == {
        "A hen, framed 16:9",
        "A hen, framed 9:16",
    }
    assert len({r.job_id for r in loaded.rows}) == 12
    assert len({(r.row, r.payload["seed"]) for r in loaded.rows}) == 12


def test_defaults_fill_only_empty_cells(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a", "duration": ""}, {"prompt": "b", "duration": "6s"}])
    loaded = load(path, defaults={"duration": "4s", "generate_audio": "no"})
    assert [r.payload["duration"] for r in loaded.rows] == ["4s", "6s"]
    assert {r.payload["generate_audio"] for r in loaded.rows} == {False}
    assert [r.cost_usd for r in loaded.rows] == [0.8, 1.2]


def test_a_default_can_stand_in_for_a_required_column(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.csv", [{"prompt": "a"}, {"prompt": "b"}])
    (missing,) = problems(path)
    assert "no 'image_url' column" in missing
    assert {r.payload["image_url"] for r in load(path, defaults={"image_url": IMAGE}).rows} == {
        IMAGE
    }


def test_identical_rows_fail_or_are_kept_once_with_dedupe(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}])
    assert problems(path) == [
        "row 3, line 4: row 3 is identical to row 1; give each an id column value if you "
        "really want both, or use --dedupe"
    ]
    kept = load(path, dedupe=True)
    assert [r.row for r in kept.rows] == [1, 2]
    assert any("kept once (--dedupe)" in str(w) for w in kept.warnings)


def test_variants_of_a_row_that_are_one_request_are_refused_not_bought_twice(
    tmp_path: Path,
) -> None:
    with_ids = manifest(tmp_path, [{"id": "fox", "prompt": "a fox"}])
    no_ids = write_manifest(tmp_path / "no-ids.csv", [{"image_url": IMAGE, "prompt": "a hen"}])
    same = (("duration", ("8s", "8")),)  # two spellings of one duration
    for path in (with_ids, no_ids):
        (found,) = problems(path, matrix=same)
        assert "its variants '8s' and '8' are the same request" in found
    kept = load(no_ids, matrix=same, dedupe=True)
    assert [r.payload["duration"] for r in kept.rows] == ["8s"]
    joined = (("prompt", ("x~y", "x")), ("negative_prompt", ("z", "y~z")))  # both "fox~x~y~z"
    unwritten = write_manifest(
        tmp_path / "u.csv", [{"id": "fox", "prompt": "", "image_url": IMAGE}]
    )
    (found,) = problems(unwritten, matrix=joined)
    assert "two of its variants are both named 'fox~x~y~z'" in found
    seeded = manifest(tmp_path, [{"id": "owl", "prompt": "an owl"}])
    found = problems(seeded, matrix=(("seed", ("1", "2")),), count=2)  # 1+1 is 2+0
    assert "its variants '1~t2' and '2~t1' are the same request: a take's seed" in found[0]
    assert "two matrix values mean the same" not in found[0]


def test_takes_of_a_model_without_a_seed_field_say_they_repeat_the_request(
    tmp_path: Path,
) -> None:
    """``--count 2`` on a model with no ``seed`` field: two identical requests, both bought,
    without a word (``retry --new-take`` said it). A note, as it does; none with a seed."""
    from batchrunner.models import get_model

    path = manifest(tmp_path, [{"id": "k1", "prompt": "a kite", "duration": "5"}])
    kling = get_model("fal-ai/kling-video/v2.5-turbo/pro/image-to-video")
    assert "seed" not in kling.fields
    loaded = load_manifest(path, kling, expansion=Expansion(count=2))
    assert len(loaded.rows) == 2 and loaded.rows[0].payload == loaded.rows[1].payload
    (note,) = [str(w) for w in loaded.warnings if "no seed field" in str(w)]
    assert "the takes of a row (--count) repeat the same request, each bought" in note
    seeded = load(manifest(tmp_path, [{"id": "v1", "prompt": "a kite"}]), count=2)
    assert not [w for w in seeded.warnings if "no seed field" in str(w)]


def test_strict_makes_unknown_columns_errors(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a", "aspect_ratio_notes": "wider?"}])
    assert any("did you mean 'aspect_ratio'" in str(w) for w in load(path).warnings)
    (found,) = problems(path, strict=True)
    assert (
        "column 'aspect_ratio_notes': unknown column (--strict); did you mean 'aspect_ratio'?"
        in found
    )


def test_outputs_of_variants_get_the_variant_in_their_name(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a", "output": "clips/fox.mp4"}])
    loaded = load(path, matrix=(("aspect_ratio", ("16:9", "9:16")),))
    assert [r.output for r in loaded.rows] == ["clips/fox~16_9.mp4", "clips/fox~9_16.mp4"]


def test_an_output_name_fills_placeholders_into_folders_per_value(tmp_path: Path) -> None:
    """``--set output={scene}/{aspect_ratio}/{id}``: a folder per matrix value (or any column),
    each value made a file name's part: it never makes a folder of its own or climbs out."""
    path = manifest(
        tmp_path,
        [
            {"id": "fox", "prompt": "a", "scene": "Day 2: woods"},
            {"id": "hen", "prompt": "b", "scene": "../up"},
            {"id": "owl", "prompt": "c", "scene": "x", "output": "night/{id}-{scene}"},
        ],
    )
    loaded = load(
        path,
        matrix=(("aspect_ratio", ("16:9", "9:16")),),
        defaults={"output": "{scene}/{aspect_ratio}/{id}"},
    )
    assert [r.output for r in loaded.rows] == [
        "Day 2_ woods/16_9/fox~16_9.mp4",
        "Day 2_ woods/9_16/fox~9_16.mp4",
        "_up/16_9/hen~16_9.mp4",
        "_up/9_16/hen~9_16.mp4",
        "night/owl-x~16_9.mp4",  # a row's own output cell wins over --set
        "night/owl-x~9_16.mp4",
    ]
    assert not loaded.warnings  # 'scene' names folders: no "unknown column" warning
    plain = load(path)  # a manifest with nothing to expand reads its output cells the same
    assert [r.output for r in plain.rows] == [None, None, "night/owl-x.mp4"]


def test_an_output_name_naming_a_missing_column_is_one_problem(tmp_path: Path) -> None:
    path = manifest(tmp_path, [{"prompt": "a", "scene": "x"}, {"prompt": "b", "scene": "y"}])
    assert problems(path, defaults={"output": "{Scene}/{id}"}) == [
        "column 'Scene': the output name uses {Scene}, but there is no 'Scene' column (did you "
        "mean {scene}?); columns found: 'image_url', 'prompt', 'scene'",
        "column 'id': the output name uses {id}, but there is no 'id' column; columns found: "
        "'image_url', 'prompt', 'scene'",
    ]
    cell = manifest(tmp_path, [{"prompt": "a", "output": "{nope}/a"}, {"prompt": "b"}])
    assert problems(cell) == [
        "row 1, line 2, column 'output': the output name uses {nope}, but there is no 'nope' "
        "column (got '{nope}/a')"
    ]
    with pytest.raises(UsageError, match=re.escape("output name '{scene/x' has a brace")):
        expand.build(SPEC.fields, {}, defaults={"output": "{scene/x"})


def test_plan_counts_prices_and_what_the_ledger_has(tmp_path: Path) -> None:
    path = manifest(
        tmp_path, [{"prompt": "a", "duration": "8s"}, {"prompt": "b", "generate_audio": "no"}]
    )
    plan = make_plan(load(path, matrix=(("resolution", ("720p", "1080p")),)))
    assert (plan.rows, plan.jobs, plan.cost_usd) == (2, 4, 9.6)
    groups = {
        (g["duration"], g["generate_audio"], g["jobs"], g["cost_usd"]) for g in plan.breakdown
    }
    assert groups == {("8s", True, 2, 6.4), ("8s", False, 2, 3.2)}  # what drives the price
    assert plan.to_submit == 4 and plan.in_ledger == {}


# ---------------------------------------------------------------------- properties

words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=12).filter(str.strip)
row_strategy = st.fixed_dictionaries(
    {
        "subject": words,
        "duration": st.sampled_from(["4s", "6s", "8s"]),
        "generate_audio": st.sampled_from(["yes", "no", "TRUE", "0"]),
        "seed": st.one_of(st.just(""), st.integers(0, 10_000).map(str)),
    }
)
matrix_strategy = st.lists(
    st.sampled_from(
        [("aspect_ratio", ("16:9", "9:16", "auto")), ("resolution", ("720p", "1080p"))]
    ),
    unique_by=lambda item: item[0],
    max_size=2,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=8, unique_by=lambda r: r["subject"]),
    count=st.integers(1, 3),
    matrix=matrix_strategy,
    shuffle_seed=st.integers(0, 2**16),
)
def test_expansion_invariants(
    tmp_path: Path, rows: list[dict[str, str]], count: int, matrix: list[Any], shuffle_seed: int
) -> None:
    expansion: dict[str, Any] = {
        "count": count,
        "matrix": tuple(matrix),
        "prompt_template": "A {subject} walking",
    }
    path = manifest(tmp_path, rows)
    loaded = load(path, **expansion)
    combos = 1
    for _, values in matrix:
        combos *= len(values)
    # the plan's job count is the product the user asked for
    plan = make_plan(loaded)
    assert plan.jobs == len(loaded.rows) == len(rows) * count * combos
    # the estimate is the sum of per-job prices
    assert plan.cost_usd == pytest.approx(sum(SPEC.cost(r.payload) or 0 for r in loaded.rows))
    # ids are unique
    ids = [r.job_id for r in loaded.rows]
    assert len(set(ids)) == len(ids)
    # ... and stable when the spreadsheet's rows are shuffled
    shuffled = rows[:]
    random.Random(shuffle_seed).shuffle(shuffled)
    reloaded = load(manifest(tmp_path, shuffled), **expansion)
    by_content = {json.dumps(r.payload, sort_keys=True): r.job_id for r in loaded.rows}
    assert {json.dumps(r.payload, sort_keys=True): r.job_id for r in reloaded.rows} == by_content


def test_the_config_file_means_the_same_to_the_command_line_and_to_python(
    tmp_path: Path,
) -> None:
    """One reading of ``batchrunner.toml``: its tables keep their values' types and a matrix
    value may hold a comma (it is one value, not two), for ``batchrunner plan`` and for
    ``batchrunner.plan`` alike, and an option given to either wins field by field."""
    from click.testing import CliRunner

    import batchrunner
    from batchrunner.cli import cli

    path = manifest(tmp_path, [{"prompt": ""}, {"prompt": "", "generate_audio": "true"}])
    (tmp_path / "batchrunner.toml").write_text(
        'model = "fal-ai/veo3/image-to-video"\n'
        '[defaults]\ngenerate_audio = false\nduration = "8s"\n'
        '[matrix]\nprompt = ["a fox, at dawn", "a fox at dusk"]\naspect_ratio = ["16:9"]\n'
    )
    answer = CliRunner().invoke(cli, ["plan", str(path), "--json", "--set", "duration=4s"])
    assert answer.exit_code == 0, answer.output
    from_cli = json.loads(answer.stdout)
    from_python = batchrunner.plan(path, set={"duration": "4s"})
    assert from_cli["jobs"] == from_python.jobs == 4  # 2 rows x 2 prompts, not 3
    assert [d["job_id"] for d in from_cli["decisions"]] == [d.job_id for d in from_python.decisions]
    assert from_cli["cost_usd"] == from_python.cost_usd  # 4 s everywhere, audio only on row 2

    twice = ["plan", str(path), "--set", "duration=4s", "--set", "duration=6s"]
    refused = CliRunner().invoke(cli, twice)  # the last silently won; --matrix refuses it too
    assert refused.exit_code == 2
    assert "--set names 'duration' twice ('4s', then '6s'); give it once" in refused.output
    again = CliRunner().invoke(cli, ["plan", str(path), "--json", "--matrix", "prompt=a fox,a hen"])
    assert (
        json.loads(again.stdout)["jobs"]
        == batchrunner.plan(path, matrix={"prompt": ["a fox", "a hen"]}).jobs
        == 4
    )


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"matrix": {"prompt": []}}, "matrix prompt: give at least one value"),
        ({"matrix": {"prompt": 4}}, "matrix prompt: give a list of values"),
        ({"matrix": {"aspect_ratio": "16:9, 9:16,16:9"}}, "lists '16:9' twice"),
        ({"prompt_template": "Wide: {prompt"}, "has a brace that is not a {column} placeholder"),
        ({"prompt_template": "Wide: { prompt }"}, "write {{ or }} for a brace in the prompt"),
        ({"matrix": ["prompt=a,b"]}, "matrix takes a dict of field: value"),
        ({"set": {"colour": "red"}}, "set: 'colour' is not a field of the model; fields: "),
        ({"set": {"model": "fal-ai/veo3.1"}}, r"the model is chosen with --model \(`model=` in"),
        ({"set": {"duraton": "8s"}}, r"'duraton' is not a field .* \(did you mean 'duration'\?\)"),
        ({"matrix": {"Aspect-Ratio": "16:9"}}, r"\(did you mean 'aspect_ratio'\?\)"),
        # a value its field refuses: one line, not a problem in every row it fills
        ({"set": {"duration": "9s"}}, "--set duration=9s: must be '4s', '6s' or '8s'"),
        ({"set": {"seed": "abc"}}, "--set seed=abc: must be a whole number"),
        ({"matrix": {"resolution": "720p,4k"}}, "--matrix resolution=4k: must be '720p' or"),
    ],
)
def test_python_expansion_options_are_checked(
    tmp_path: Path, options: dict[str, Any], words: str
) -> None:
    import batchrunner
    from batchrunner.errors import UsageError

    with pytest.raises(UsageError, match=words):
        batchrunner.plan(manifest(tmp_path, [{"prompt": "a fox"}]), **options)
    split = batchrunner.plan(manifest(tmp_path, [{"prompt": ""}]), matrix={"prompt": "a,b"})
    assert split.jobs == 2  # text is split at its commas, as --matrix is
    braces = batchrunner.plan(
        manifest(tmp_path, [{"prompt": "a fox"}]), prompt_template="{{{prompt}}}", count=1
    )
    assert braces.jobs == 1  # escaped braces around a placeholder are a template's own


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 20), st.booleans()), min_size=1))
def test_a_rows_spec_takes_exactly_the_rows_it_names_and_prints_back_the_same(
    spans: list[tuple[int, int, bool]],
) -> None:
    spec = ",".join(
        f"{first}-" if open_ended else f"{first}-{first + extra}" if extra else str(first)
        for first, extra, open_ended in spans
    )
    rows = Rows.parse(spec)
    wanted = {
        row
        for row in range(1, 120)
        for first, extra, open_ended in spans
        if first <= row and (open_ended or row <= first + extra)
    }
    assert {row for row in range(1, 120) if row in rows} == wanted
    assert str(rows) == spec and Rows.parse(str(rows)) == rows


@pytest.mark.parametrize("spec", ["", "0", "3-1", "a-b", "1,,2", "-4", "1-2-3", True, [0], []])
def test_a_bad_rows_spec_is_one_usage_error(spec: Any) -> None:
    with pytest.raises(UsageError, match="rows") as caught:
        Rows.parse(spec)
    if spec == "3-1":  # typed the wrong way round: the way round is said
        assert str(caught.value) == "--rows '3-1': 3-1 runs backwards: write 1-3"
