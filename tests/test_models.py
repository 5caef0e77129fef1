"""The model registry: data files, exact prices, price rules, `models` commands, unknown ids."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrunner import models
from batchrunner.cli import cli
from batchrunner.expand import Expansion
from batchrunner.manifest import load_manifest
from batchrunner.models import ModelSpec, get_model, registry
from batchrunner.openapi import read_document
from batchrunner.planner import make_plan
from batchrunner.pricing import PriceRule, PriceRuleError
from batchrunner.simulator import SimulatorServer
from tests.helpers import IMAGE, TOKEN, counters, fast_config, run_args, write_manifest

FIXTURES = Path(__file__).parent / "fixtures"
LIGHTHOUSE = Path(__file__).parent.parent / "manifests" / "images" / "lighthouse.png"
LUMA = FIXTURES / "fal-ai__luma-dream-machine__ray-2__image-to-video.json"
VEO3_DOC = FIXTURES / "fal-ai__veo3__image-to-video.json"  # fal's document for a shipped id
PIXVERSE = FIXTURES / "fal-ai__pixverse__v5.5__image-to-video.json"  # generate_audio_switch
ENV = {"BATCHRUNNER_API_KEY": TOKEN}

SHIPPED = {
    "fal-ai/veo3/image-to-video",
    "fal-ai/veo3/fast/image-to-video",
    "fal-ai/veo3.1",
    "fal-ai/veo3.1/fast",
    "fal-ai/veo3.1/image-to-video",
    "fal-ai/veo3.1/fast/image-to-video",
    "fal-ai/veo3.1/first-last-frame-to-video",
    "fal-ai/veo3.1/fast/first-last-frame-to-video",
    "fal-ai/veo3.1/reference-to-video",
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
    "fal-ai/minimax/hailuo-02/standard/image-to-video",
    "fal-ai/wan-25-preview/image-to-video",
    "fal-ai/bytedance/seedance/v1/pro/image-to-video",
}


def _s(p: dict[str, Any]) -> float:
    return float(str(p["duration"]).rstrip("s"))


def _veo31(fast: bool) -> Callable[[dict[str, Any]], float]:
    def price(p: dict[str, Any]) -> float:
        audio, k4 = p["generate_audio"], p["resolution"] == "4k"
        if fast:
            rate = (0.35 if audio else 0.30) if k4 else (0.15 if audio else 0.10)
        else:
            rate = (0.60 if audio else 0.40) if k4 else (0.40 if audio else 0.20)
        return _s(p) * rate

    return price


# MODELS.md's formulas, written out independently of the rule engine: the oracle.
ORACLE: dict[str, Callable[[dict[str, Any]], float]] = {
    "fal-ai/veo3/image-to-video": lambda p: _s(p) * (0.40 if p["generate_audio"] else 0.20),
    "fal-ai/veo3/fast/image-to-video": lambda p: _s(p) * (0.15 if p["generate_audio"] else 0.10),
    "fal-ai/veo3.1": _veo31(fast=False),
    "fal-ai/veo3.1/fast": _veo31(fast=True),
    "fal-ai/veo3.1/image-to-video": _veo31(fast=False),
    "fal-ai/veo3.1/fast/image-to-video": _veo31(fast=True),
    "fal-ai/veo3.1/first-last-frame-to-video": _veo31(fast=False),
    "fal-ai/veo3.1/fast/first-last-frame-to-video": _veo31(fast=True),
    "fal-ai/veo3.1/reference-to-video": _veo31(fast=False),
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": lambda p: 0.35 + 0.07 * (_s(p) - 5),
    "fal-ai/minimax/hailuo-02/standard/image-to-video": lambda p: (
        _s(p) * (0.045 if p["resolution"] == "768P" else 0.017)
    ),
    "fal-ai/wan-25-preview/image-to-video": lambda p: (
        _s(p) * {"480p": 0.05, "720p": 0.10, "1080p": 0.15}[p["resolution"]]
    ),
    "fal-ai/bytedance/seedance/v1/pro/image-to-video": lambda p: (
        2.5
        * {"480p": 854 * 480, "720p": 1280 * 720, "1080p": 1920 * 1080}[p["resolution"]]
        * 24
        * _s(p)
        / 1024
        / 1e6
    ),
}


def required_cells(spec: ModelSpec) -> dict[str, Any]:
    """A value for each required field: a prompt and URLs."""
    cells: dict[str, Any] = {}
    for name, kind in spec.kinds.items():
        if kind.required:
            cells[name] = [IMAGE, IMAGE] if kind.kind == "list" else (
                IMAGE if name.endswith("_url") else "a red fox in the snow"
            )  # fmt: skip
    return cells


def plan_json(tmp_path: Path, endpoint: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(cli, ["plan", str(path), "--model", endpoint, "--json"])
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = json.loads(result.output)
    return plan


def test_the_catalogue_ships_every_endpoint_the_issue_names() -> None:
    assert set(registry()) == SHIPPED
    assert set(ORACLE) == SHIPPED
    for spec in registry().values():
        assert spec.price is not None and spec.output_field == "video"
        assert spec.fields[0] == "prompt"


# endpoint, cells, hand-computed price (USD) from MODELS.md
EXACT = [
    ("fal-ai/veo3/image-to-video", {}, 3.20),
    ("fal-ai/veo3/image-to-video", {"duration": "6s", "generate_audio": False}, 1.20),
    ("fal-ai/veo3/fast/image-to-video", {"duration": 8}, 1.20),
    ("fal-ai/veo3/fast/image-to-video", {"generate_audio": "no"}, 0.80),
    ("fal-ai/veo3.1", {}, 3.20),
    ("fal-ai/veo3.1", {"resolution": "4k"}, 4.80),
    ("fal-ai/veo3.1", {"resolution": "4K", "generate_audio": False, "duration": "4s"}, 1.60),
    ("fal-ai/veo3.1", {"resolution": "1080p", "generate_audio": False, "duration": 6}, 1.20),
    ("fal-ai/veo3.1/fast", {"resolution": "4k"}, 2.80),
    ("fal-ai/veo3.1/fast", {"generate_audio": False}, 0.80),
    ("fal-ai/veo3.1/image-to-video", {"resolution": "4k", "generate_audio": False}, 3.20),
    ("fal-ai/veo3.1/fast/image-to-video", {"duration": "6s"}, 0.90),
    ("fal-ai/veo3.1/first-last-frame-to-video", {"resolution": "4k", "duration": "6s"}, 3.60),
    (
        "fal-ai/veo3.1/fast/first-last-frame-to-video",
        {"duration": "4s", "resolution": "1080p"},
        0.60,
    ),
    (
        "fal-ai/veo3.1/fast/first-last-frame-to-video",
        {"resolution": "4k", "generate_audio": 0},
        2.40,
    ),
    ("fal-ai/veo3.1/reference-to-video", {"resolution": "4k"}, 4.80),
    ("fal-ai/veo3.1/reference-to-video", {"generate_audio": False}, 1.60),
    ("fal-ai/kling-video/v2.5-turbo/pro/image-to-video", {}, 0.35),
    ("fal-ai/kling-video/v2.5-turbo/pro/image-to-video", {"duration": 10}, 0.70),
    ("fal-ai/minimax/hailuo-02/standard/image-to-video", {}, 0.27),
    (
        "fal-ai/minimax/hailuo-02/standard/image-to-video",
        {"duration": "10", "resolution": "512p"},
        0.17,
    ),
    ("fal-ai/minimax/hailuo-02/standard/image-to-video", {"duration": "10"}, 0.45),
    ("fal-ai/wan-25-preview/image-to-video", {}, 0.75),
    ("fal-ai/wan-25-preview/image-to-video", {"duration": "10", "resolution": "480p"}, 0.50),
    ("fal-ai/wan-25-preview/image-to-video", {"resolution": "720p"}, 0.50),
    ("fal-ai/bytedance/seedance/v1/pro/image-to-video", {}, 0.6075),
    (
        "fal-ai/bytedance/seedance/v1/pro/image-to-video",
        {"resolution": "480p", "duration": 12},
        0.2882,
    ),
]


@pytest.mark.parametrize(("endpoint", "cells", "usd"), EXACT)
def test_plan_json_gives_the_exact_price(
    tmp_path: Path, endpoint: str, cells: dict[str, Any], usd: float
) -> None:
    row = {**required_cells(get_model(endpoint)), **cells}
    plan = plan_json(tmp_path, endpoint, [row, row | {"id": "second"}, row | {"id": "third"}])
    assert plan["cost_usd"] == pytest.approx(3 * usd, abs=1e-9)
    assert plan["jobs"] == 3 and plan["to_submit_cost_usd"] == plan["cost_usd"]
    assert sum(group["cost_usd"] for group in plan["breakdown"]) == pytest.approx(3 * usd)


def test_an_unconfirmed_price_is_said_so_by_plan(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("prompt\na fox\n")
    shown = CliRunner().invoke(cli, ["plan", str(path), "--model", "fal-ai/veo3.1/fast"])
    assert shown.exit_code == 0, shown.output
    assert "price unconfirmed: inferred" in shown.output
    assert "https://fal.ai/models/fal-ai/veo3.1/fast" in shown.output
    confirmed = CliRunner().invoke(cli, ["plan", str(path), "--model", "fal-ai/veo3.1"])
    assert confirmed.exit_code == 0 and "price unconfirmed" not in confirmed.output
    as_json = plan_json(tmp_path, "fal-ai/veo3.1/fast", [{"prompt": "x"}])
    assert as_json["price_confirmed"] is False and "inferred" in as_json["price_note"]


def _row_strategy(spec: ModelSpec) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, kind in spec.kinds.items():
        if kind.kind == "choice" and name in spec.price_fields:
            fields[name] = st.sampled_from(kind.choices)
        elif kind.kind == "bool" and name in spec.price_fields:
            fields[name] = st.booleans()
    required = {name: st.just(value) for name, value in required_cells(spec).items()}
    return st.fixed_dictionaries(required, optional=fields)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), endpoint=st.sampled_from(sorted(SHIPPED)))
def test_estimate_is_the_sum_of_job_prices_for_every_model(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, endpoint: str
) -> None:
    spec = get_model(endpoint)
    rows = data.draw(st.lists(_row_strategy(spec), min_size=1, max_size=6))
    for i, row in enumerate(rows):
        row["id"] = f"r{i}"
    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = load_manifest(path, spec, expansion=Expansion())
    plan = make_plan(manifest)
    expected = [ORACLE[endpoint](row.payload) for row in manifest.rows]
    assert [row.cost_usd for row in manifest.rows] == pytest.approx(expected, abs=1e-4)
    assert plan.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in manifest.rows), abs=1e-9)
    assert math.isclose(
        sum(g["cost_usd"] for g in plan.breakdown), plan.cost_usd or 0, abs_tol=1e-6
    )


# ---------------------------------------------------------------------- price rules


def test_shorthand_and_json_rules_agree() -> None:
    short = PriceRule.parse(
        "0.60/s if resolution=4k and generate_audio=true; 0.40/s if resolution=4k; "
        "0.40/s if generate_audio=true; 0.20/s"
    )
    assert short == PriceRule.parse(json.dumps(short.to_json())).__class__(
        **{**PriceRule.parse(json.dumps(short.to_json())).__dict__, "note": short.note}
    )
    body = {"duration": "8s", "resolution": "4k", "generate_audio": True}
    assert short.cost(body) == 4.80 and short.fields == ("duration", "resolution", "generate_audio")
    kling = PriceRule.parse("0.35 + 0.07/s over 5s")
    assert (kling.cost({"duration": "5"}), kling.cost({"duration": "10"})) == (0.35, 0.70)
    assert PriceRule.parse("$0.50/video").cost({}) == 0.5
    assert kling.billed({"duration": "10"}, 10) == 0.70  # billed units priced by the same rule


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("cheap", "cannot read 'cheap'"),
        ("0.4/s if generate_audio=true", "end with a clause without 'if'"),
        ("0.4/s; 0.5/video", "same unit"),
        ("0.4/s if audio", "write FIELD=VALUE"),
        ('{"per": "minute", "rates": [{"usd": 1}]}', "'per' must be one of"),
        ('{"per": "video", "rates": [{"usd": -1}]}', "must not be negative"),
        ('{"per": "video", "rates": [{"usd": 1}]', "not valid JSON"),
    ],
)
def test_a_malformed_rule_is_one_clear_error(text: str, words: str) -> None:
    with pytest.raises(PriceRuleError) as info:
        PriceRule.parse(text)
    assert words in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------- models commands


def test_models_list_and_show(tmp_path: Path) -> None:
    listed = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert listed.exit_code == 0
    entries = {e["endpoint_id"]: e for e in json.loads(listed.output)}
    assert set(entries) == SHIPPED
    assert entries["fal-ai/veo3.1"]["price_with_defaults_usd"] == 3.20
    assert entries["fal-ai/veo3.1/fast"]["price_confirmed"] is False
    text = CliRunner().invoke(cli, ["models", "list"]).output
    assert "fal-ai/veo3.1/fast " in text and "[price unconfirmed]" in text
    shown = CliRunner().invoke(
        cli, ["models", "show", "fal-ai/veo3.1/reference-to-video", "--json"]
    )
    info = json.loads(shown.output)
    fields = {f["name"]: f for f in info["fields"]}
    assert fields["image_urls"]["kind"] == "file list" and fields["image_urls"]["required"]
    assert fields["resolution"]["choices"] == ["720p", "1080p", "4k"]
    assert fields["prompt"]["limits"] == {"maxLength": 20000}
    assert "seed" not in fields and info["price_rule"]["per"] == "second"
    human = CliRunner().invoke(cli, ["models", "show", "fal-ai/veo3.1/fast"]).output
    assert "price unconfirmed: inferred" in human and "default '720p'" in human


def test_a_file_limit_stated_only_in_the_fields_text_is_the_limit(tmp_path: Path) -> None:
    """Wan 2.5 takes background music "up to 15 MB" (its schema's text; no x-fal size): a
    10 MB WAV is accepted, a 16 MB one refused, and `models show` says 15 MB."""
    wan = get_model("fal-ai/wan-25-preview/image-to-video")
    assert wan.max_file_bytes("audio_url") == 15 * 2**20
    assert wan.max_file_bytes("image_url") == 25 * 2**20  # x-fal.max_file_size
    assert get_model("fal-ai/veo3.1/image-to-video").max_file_bytes("image_url") == 8 * 2**20

    def wav(name: str, megabytes: int) -> str:
        data = bytes(megabytes * 2**20)
        head = b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt "
        (tmp_path / name).write_bytes(head + bytes(24) + b"data" + bytes(4) + data)
        return name

    rows = [
        {"id": "a", "prompt": "a fox", "image_url": IMAGE, "audio_url": wav("ten.wav", 10)},
        {"id": "b", "prompt": "a owl", "image_url": IMAGE, "audio_url": wav("big.wav", 16)},
    ]
    path = write_manifest(tmp_path / "m.csv", rows)
    result = CliRunner().invoke(
        cli, ["validate", str(path), "--model", "fal-ai/wan-25-preview/image-to-video"]
    )
    assert result.exit_code == 2, result.output
    (problem,) = [line for line in result.output.splitlines() if "row " in line]
    assert "row 2" in problem and "at most 15 MB is allowed" in problem
    shown = CliRunner().invoke(cli, ["models", "show", "fal-ai/wan-25-preview/image-to-video"])
    assert "audio_url                file; at most 15 MB" in shown.output


def test_models_add_imports_an_openapi_document_that_then_validates_prices_and_runs(
    tmp_path: Path,
) -> None:
    rule = "0.10/s if resolution=540p; 0.20/s if resolution=720p; 0.40/s"
    added = CliRunner().invoke(cli, ["models", "add", str(LUMA), "--price", rule])
    assert added.exit_code == 0, added.output
    endpoint = "fal-ai/luma-dream-machine/ray-2/image-to-video"
    assert f"added {endpoint}" in added.output
    assert (models.user_dir() / "fal-ai__luma-dream-machine__ray-2__image-to-video.json").exists()
    again = CliRunner().invoke(cli, ["models", "add", str(LUMA), "--price", rule])
    assert again.exit_code == 2 and "--replace" in again.output
    manifest = write_manifest(
        tmp_path / "luma.csv",
        [
            {"id": "a", "prompt": "a lighthouse at night", "resolution": "1080p", "duration": 9},
            {
                "id": "b",
                "prompt": "a lighthouse at dawn",
                "image_url": str(LIGHTHOUSE),
            },
            {"id": "c", "prompt": "a lighthouse at noon", "aspect_ratio": "9:21"},
        ],
    )
    bad = write_manifest(tmp_path / "bad.csv", [{"prompt": "ab", "loop": "maybe"}])
    refused = CliRunner().invoke(cli, ["validate", str(bad), "--model", endpoint])
    assert refused.exit_code == 2
    assert "column 'prompt': must be at least 3 characters" in refused.output
    assert "column 'loop': must be TRUE or FALSE" in refused.output
    plan = plan_json(tmp_path, endpoint, [{"prompt": "a lighthouse", "duration": "9s"}])
    assert plan["cost_usd"] == 0.90  # 9 s at 540p, the schema's default
    run = CliRunner().invoke(
        cli,
        ["run", str(manifest), "--model", endpoint, "--simulate", "--json",
         "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    summary = json.loads(run.output.strip().splitlines()[-1])
    assert summary["counts"] == {"done": 3}
    assert summary["spend_usd"] == pytest.approx(9 * 0.40 + 5 * 0.10 + 5 * 0.10)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{", "is not JSON"),
        ('{"openapi": "3.0.4"}', "not an OpenAPI document"),
        ('{"paths": {}, "components": {}}', "cannot tell the endpoint id"),
    ],
)
def test_models_add_refuses_a_malformed_document_in_one_line(
    tmp_path: Path, content: str, words: str
) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text(content)
    result = CliRunner().invoke(cli, ["models", "add", str(doc), "--price", "1/video"])
    assert result.exit_code == 2 and words in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    bad_rule = CliRunner().invoke(cli, ["models", "add", str(LUMA), "--price", "lots"])
    assert bad_rule.exit_code == 2 and "cannot read 'lots'" in bad_rule.output


def test_models_add_does_not_replace_a_shipped_model_without_replace() -> None:
    """Importing fal's document for an id batchrunner ships (its checked fields, its confirmed
    price) replaced the shipped entry without a word: the user's `--price 0.10/video` then
    priced every Veo 3 job, and the fields fal's document leaves out (safety_tolerance...)
    were gone. It is refused in one line naming what ships, unless --replace, which says
    what it replaced and how to go back."""
    endpoint = "fal-ai/veo3/image-to-video"
    shipped = get_model(endpoint)
    refused = CliRunner().invoke(cli, ["models", "add", str(VEO3_DOC), "--price", "0.10/video"])
    assert refused.exit_code == 2, refused.output
    (line,) = refused.output.strip().splitlines()
    assert f"{endpoint} ships with batchrunner" in line and "--replace" in line
    assert "0.4/s if generate_audio=true" in line and "Traceback" not in line
    assert get_model(endpoint) == shipped and not list(models.user_dir().glob("*.json"))

    added = CliRunner().invoke(
        cli, ["models", "add", str(VEO3_DOC), "--price", "0.10/video", "--replace"]
    )
    assert added.exit_code == 0, added.output
    path = models.user_dir() / "fal-ai__veo3__image-to-video.json"
    assert f"replaced: the shipped {endpoint} (10 fields, price 0.4/s" in added.output
    assert f"delete {path} to go back to it" in added.output
    spec = get_model(endpoint)
    assert spec.origin == str(path)
    assert spec.cost(spec.complete({"prompt": "x", "image_url": IMAGE})) == 0.10
    path.unlink()
    assert get_model(endpoint) == shipped


def pixverse_with_switch(name: str, prop: dict[str, Any] | None = None) -> dict[str, Any]:
    """fal's PixVerse 5.5 document, its audio switch renamed ``name`` (or made ``prop``)."""
    doc = json.loads(PIXVERSE.read_text("utf-8"))
    schema = doc["components"]["schemas"]["PixverseV55ImageToVideoInput"]
    props = schema["properties"]
    switch = props.pop("generate_audio_switch")
    props[name] = switch if prop is None else prop
    schema["x-fal-order-properties"] = list(props)
    return doc


@pytest.mark.parametrize(
    "name", ["generate_audio_switch", "enable_audio", "with_audio", "audio", "sound"]
)
def test_an_imported_audio_switch_not_called_generate_audio_is_checked(name: str) -> None:
    """Only `generate_audio` was taken for the audio switch: a model imported from a document
    that calls it otherwise (PixVerse 5.5's `generate_audio_switch`) had its clips' sound
    never compared with the request. A boolean field named for switching sound on is it."""
    from batchrunner.verify import expected_of

    entry = read_document(pixverse_with_switch(name))
    entry["price"] = PriceRule.parse("0.10/video").to_json()
    spec = ModelSpec.from_json(entry, "test")
    assert spec.audio == name
    asked = {"prompt": "a lighthouse", "image_url": IMAGE}
    assert expected_of(spec, {**asked, name: True}).audio is True
    assert expected_of(spec, asked).audio is False  # the schema's default: no sound
    assert ModelSpec.from_json(spec.to_json(), "again").audio == name  # kept in the file


@pytest.mark.parametrize(
    ("name", "prop"),
    [("mute", None), ("remove_audio", None), ("keep_audio", None), ("audio_url", None),
     ("audio", {"type": "string", "default": "on"}), ("audio", {"type": "boolean"})],
)  # fmt: skip
def test_a_field_that_may_not_switch_sound_on_is_left_unchecked(
    name: str, prop: dict[str, Any] | None
) -> None:
    """Conservative: a switch read the wrong way round (`mute`) would flag every clip, and a
    switch without a default does not say what a request that leaves it out gets."""
    from batchrunner.verify import expected_of

    spec = ModelSpec.from_json(read_document(pixverse_with_switch(name, prop)), "test")
    assert spec.audio is False
    assert expected_of(spec, {"prompt": "a lighthouse", "image_url": IMAGE}).audio is None


def test_models_price_overrides_a_shipped_rule_in_the_user_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["models", "price", "fal-ai/veo3.1/fast", "0.12/s if generate_audio=true; 0.08/s"]
    )
    assert result.exit_code == 0, result.output
    spec = get_model("fal-ai/veo3.1/fast")
    assert spec.origin.endswith("fal-ai__veo3.1__fast.json")
    assert spec.cost(spec.complete({"prompt": "x"})) == 0.96


@pytest.mark.parametrize(
    ("command", "rule", "words", "fixed"),
    [
        (["models", "add", str(LUMA), "--price"], "0.5/video if resolution=1080; 1/video",
         "resolution=1080 can never be met: resolution is one of 540p, 720p, 1080p "
         "(did you mean '1080p'?)", "0.5/video if resolution=1080P; 1/video"),
        (["models", "price", "fal-ai/veo3.1/fast"], "0.35/s if generate_audio=yes; 0.10/s",
         "generate_audio=yes can never be met: generate_audio is one of true, false",
         "0.35/s if generate_audio=True; 0.10/s"),
    ],
)  # fmt: skip
def test_a_price_condition_no_request_can_meet_is_refused(
    command: list[str], rule: str, words: str, fixed: str
) -> None:
    """A clause that never applies would price its requests by the next one, silently."""
    result = CliRunner().invoke(cli, [*command, rule])
    assert result.exit_code == 2 and words in result.output, result.output
    assert not list(models.user_dir().glob("*.json"))  # nothing written
    accepted = CliRunner().invoke(cli, [*command, fixed])  # values compare without case
    assert accepted.exit_code == 0, accepted.output


def test_the_importer_reads_every_shipped_document_as_the_catalogue_has_it() -> None:
    doc = json.loads(LUMA.read_text())
    entry = read_document(doc)
    assert entry["endpoint_id"] == "fal-ai/luma-dream-machine/ray-2/image-to-video"
    assert entry["output"] == {"field": "video"}
    assert entry["input"]["required"] == ["prompt"]
    assert "$ref" not in json.dumps(entry["input"])


# ---------------------------------------------------------------------- unknown things


@pytest.fixture(scope="module")
def quiet_sim() -> Any:
    with SimulatorServer(fast_config()) as server:
        yield server


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_mistyped_endpoint_exits_2_with_did_you_mean_and_sends_nothing(
    quiet_sim: SimulatorServer, tmp_path: Path, command: str
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"prompt": "a fox", "image_url": IMAGE}])
    args = [command, str(manifest), "--model", "fal-ai/veo3/image-to-vidoe"]
    if command == "run":
        args = [*run_args(quiet_sim, tmp_path, manifest), "--model", "fal-ai/veo3/image-to-vidoe"]
    before = counters(quiet_sim)["submits"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert "did you mean 'fal-ai/veo3/image-to-video'" in result.output
    assert "Traceback" not in result.output
    assert counters(quiet_sim)["submits"] == before
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_near_miss_column_exits_2_naming_the_field_and_sends_nothing(
    quiet_sim: SimulatorServer, tmp_path: Path, command: str
) -> None:
    manifest = write_manifest(
        tmp_path / "m.csv", [{"prompt": "a fox", "image_url": IMAGE, "Resolution": "1080p"}]
    )
    args = [command, str(manifest)]
    if command == "run":
        args = run_args(quiet_sim, tmp_path, manifest)
    before = counters(quiet_sim)["submits"]
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert "column 'Resolution': did you mean 'resolution'?" in result.output
    assert counters(quiet_sim)["submits"] == before


def test_an_unregistered_model_with_a_budget_needs_a_price_per_job(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"prompt": "a fox", "steps": 30}])
    base = ["run", str(manifest), "--simulate", "--model", "acme/new/v1", "--allow-unregistered"]
    base += ["--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path / "out"), "--json"]
    refused = CliRunner().invoke(cli, [*base, "--budget", "5"])
    assert refused.exit_code == 2 and "--price-per-job" in refused.output
    done = CliRunner().invoke(cli, [*base, "--budget", "5", "--price-per-job", "0.25"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output.strip().splitlines()[-1])["spend_usd"] == 0.25


@settings(max_examples=150, deadline=None)
@given(
    endpoint=st.sampled_from(sorted(SHIPPED)),
    data=st.data(),
)
def test_field_by_field_checking_finds_what_whole_body_jsonschema_finds(
    endpoint: str, data: st.DataObject
) -> None:
    """The memoised, field-by-field checker (fast on 100,000 rows) agrees with jsonschema run
    on the whole body, for good and bad values alike, twice in a row (memo hit)."""
    from batchrunner.schema import Checker

    spec = get_model(endpoint)
    values = st.one_of(
        st.none(), st.booleans(), st.integers(-5, 20), st.floats(-2, 25), st.text(max_size=5),
        st.sampled_from(["8s", "4k", "720p", "16:9", "auto", "x" * 20001]),
        st.lists(st.text(max_size=3), max_size=3),
    )  # fmt: skip
    chosen = data.draw(st.lists(st.sampled_from(spec.fields), unique=True, max_size=6))
    body = {name: data.draw(values) for name in chosen}
    fast = Checker(spec.input_schema or {})
    slow = Checker(spec.input_schema or {})
    slow.by_field = False
    expected = sorted((p.field or "", p.kind, p.message) for p in slow.problems(body))
    for _ in range(2):
        assert sorted((p.field or "", p.kind, p.message) for p in fast.problems(body)) == expected


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (  # Seedance's rule cut to 1080p: a 720p job would have no price, and --budget refuses
            '{"per": "video_token", "frame": {"field": "resolution", "sizes": {"1080p": '
            '[1920, 1080]}}, "fps": 24, "rates": [{"usd": 2.5}]}',
            "no frame size for resolution=480p, which the input allows (sizes given: 1080p)",
        ),
        (  # stored, and never applied: the estimate $0.50 where the rule says $1.50
            '{"per": "video", "rates": [{"usd": 0.5}], "base_usd": 1}',
            '\'base_usd\' goes with "per": "second"',
        ),
    ],
)
def test_a_price_rule_that_would_leave_jobs_unpriced_or_underpriced_is_refused(
    rule: str, words: str
) -> None:
    endpoint = "fal-ai/bytedance/seedance/v1/pro/image-to-video"
    result = CliRunner().invoke(cli, ["models", "price", endpoint, rule])
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert get_model(endpoint).price is not None and get_model(endpoint).cost(
        {"resolution": "720p", "duration": "5"}
    )  # the shipped rule stands
