"""Every run option lives in one declaration; the CLI, the TOML keys, the README agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from batchrunner import settings
from batchrunner.cli import RUN_SETTINGS, cli
from batchrunner.config import KEYS, load_config
from batchrunner.errors import UsageError
from batchrunner.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# run's own options that are not settings: what shapes jobs, and what this invocation prints
NOT_SETTINGS = {
    "manifest", "verbose", "log_file", "count", "matrix", "prompt_template", "set_values",
    "dedupe", "strict", "rows", "config_path", "replace_changed", "dry_run", "as_json",
}  # fmt: skip
EXPANSION_KEYS = {"count", "prompt_template", "dedupe", "strict"}


def run_params() -> dict[str, click.Parameter]:
    command = cli.get_command(click.Context(cli), "run")
    assert command is not None
    return {p.name: p for p in command.params if p.name}


def readme_table() -> list[tuple[str, str, str]]:
    """The README's run options: (flag, TOML key or "", what it does), row by row."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Run options") :]
    section = section[: section.index("\n\n", section.index("| option |"))]
    row = r"^\| `([^`]+)` \| (?:`([^`]+)`|—) \| [^|]* \| (.*) \|$"
    return re.findall(row, section, flags=re.MULTILINE)


def readme_rows() -> dict[str, str | None]:
    return {flag: key or None for flag, key, _ in readme_table()}


def test_every_setting_has_its_flag_toml_key_and_readme_row() -> None:
    declared = settings.options()
    on_the_command_line = {n for n in declared if settings.flag_of(n) is not None}
    params = run_params()
    # the CLI: every setting with a flag is an option of run, and run has no other settings
    assert on_the_command_line <= set(params)
    assert set(params) - on_the_command_line == NOT_SETTINGS
    for name in on_the_command_line:
        flag = settings.flag_of(name)
        assert flag is not None
        assert set(params[name].opts) | set(params[name].secondary_opts) == set(flag.split("/")), (
            name
        )
        assert params[name].help == declared[name].help
    # TOML: every key maps to a setting (or a manifest option) and every setting with a key is one
    with_keys = {settings.toml_key(n): n for n in declared if settings.toml_key(n)}
    assert {k: v for k, v in KEYS.items() if v not in EXPANSION_KEYS} == with_keys
    # the README's table says what each does in the words of its --help
    helps = {settings.flag_of(n) or settings.toml_key(n): o.help for n, o in declared.items()}
    table = readme_table()
    assert {flag: helps[flag] for flag, _, _ in table} == {flag: said for flag, _, said in table}
    # the README's table: one row per setting a user can set, with its flag and TOML key
    assert readme_rows() == {
        settings.flag_of(n): settings.toml_key(n)
        for n in declared
        if settings.flag_of(n) or settings.toml_key(n)
    }
    assert set(RUN_SETTINGS) | {
        "model",
        "allow_unregistered",
        "price_per_job",
        "sheet",
        "check_urls",
    } == (on_the_command_line)


def test_stored_settings_round_trip_and_toml_values_are_typed(tmp_path: Path) -> None:
    (tmp_path / "batchrunner.toml").write_text(
        'queue_timeout = "45m"\nstream_stall = 30\nledger = "shots.db"\ndownloads = 2\n'
    )
    from_file = load_config(tmp_path / "batchrunner.toml")
    made = Settings(**from_file)
    assert made.queue_timeout == 45 * 60 and made.stream_stall == 30.0
    assert made.ledger == tmp_path / "shots.db" and made.download_concurrency == 2
    again = Settings.from_stored(made.stored())
    stored, restored = made.stored(), again.stored()
    assert stored["out"] == "outputs" and restored["out"] == stored["out_at"]  # where it was
    assert {**restored, "out": "outputs"} == stored
    with pytest.raises(UsageError, match="run_timeout must be a duration like 90s, 45m or 2h"):
        Settings(run_timeout="soon")


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number between 1 and 1000"),
        ({"downloads": 65}, "download_concurrency must be a whole number between 1 and 64"),
        ({"budget": -1}, "budget must be a number at least 0"),
        ({"provider": "acme"}, "provider must be one of fal, quickrouter"),
        ({"rps": "fast"}, "rps must be a number at least 0.01"),
        # the wrong type: a crash mid-run (or a silent reading) before, one line now
        ({"concurrency": 2.5}, r"concurrency must be a whole number between 1 and 1000, got 2\.5"),
        ({"budget": "100"}, r"budget must be a number at least 0, got '100' \(a number, without"),
        ({"budget": True}, "budget must be a number at least 0, got True"),  # was $1.00
        ({"concurrency": True}, "concurrency must be a whole number between 1 and 1000, got True"),
        ({"streams": "no"}, "streams must be true or false, got 'no'"),
        ({"simulate": "false"}, "simulate must be true or false, got 'false'"),
        ({"ledger": 3}, "ledger must be the path of a file, got 3"),
        ({"out": ["videos"]}, r"out must be the path of a folder, got \['videos'\] \(list\)"),
        ({"queue_timeout": "30 minutes"}, "queue_timeout must be a duration like 90s"),
        ({"max_runtime": 0}, "max_runtime must be a duration like 90s, 45m or 2h"),
        ({"model": 3}, "model must be text, got 3"),
        ({"retry": 3}, "retry must be a RetryPolicy, got 3"),
        # the pause grows from poll_min to poll_max: upside down, every job polled at poll_max
        ({"poll_min": 20, "poll_max": 1}, r"\(poll_min, 20 s\) is longer than the longest"),
        ({"poll_min": 30}, r"longest \(poll_max, 15 s\): lower --poll-min or raise"),
    ],
)
def test_a_python_caller_gets_the_command_lines_checks(values: dict, words: str) -> None:
    name = {"downloads": "download_concurrency"}
    with pytest.raises(UsageError, match=words):
        Settings(**{name.get(k, k): v for k, v in values.items()})


def test_numpy_numbers_and_none_are_taken_as_the_python_ones() -> None:
    """What a notebook computes (numpy's numbers and booleans) is a value like any other, and
    None is the option's default, as the command line leaves it."""
    import numpy as np

    made = Settings(concurrency=np.int64(3), budget=np.float64(2.5), streams=np.bool_(False))
    assert (made.concurrency, made.budget, made.streams) == (3, 2.5, False)
    assert type(made.concurrency) is int and type(made.streams) is bool
    assert Settings(out=None, concurrency=None).out == Path("outputs")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('concurrency = "4"', "concurrency must be a whole number between 1 and 1000, got '4'"),
        ("concurrency = 2.5", "concurrency must be a whole number between 1 and 1000, got 2.5"),
        ("budget = -1", "budget must be a number at least 0, got -1"),
        ("budget = true", "budget must be a number at least 0, got True"),
        ('stream = "false"', "stream must be true or false, got 'false'"),
        ("strict = 1", "strict must be true or false, got 1"),
        ("count = 2.7", "count must be a whole number between 1 and 100, got 2.7"),
        ("prompt_template = 5", "prompt_template must be text, got 5"),
        ("downloads = 100", "downloads must be a whole number between 1 and 64, got 100"),
        ('queue_timeout = "30 minutes"', "queue_timeout must be a duration like 90s, 45m or 2h"),
        ("out = 3", "out must be the path of a folder, got 3"),
    ],
)
def test_a_wrong_value_in_the_config_file_is_one_line_naming_the_file_and_its_key(
    tmp_path: Path, line: str, words: str
) -> None:
    """A value of the wrong type or range in ``batchrunner.toml`` was read as click reads a
    flag: ``strict = 1`` crashed with a traceback, ``concurrency = 2.5`` became 2 and
    ``stream = "false"`` streamed, silently; ``budget = -1`` was blamed on a ``--budget`` the
    command line never had. Now: one line naming the file and the key, exit 2, for the CLI and
    the Python API alike."""
    from click.testing import CliRunner

    import batchrunner

    manifest = tmp_path / "shots.csv"
    manifest.write_text("prompt,duration\na red fox,4s\n")
    (tmp_path / "batchrunner.toml").write_text(line + "\n")
    shown = CliRunner().invoke(cli, ["run", str(manifest), "--dry-run", "--simulate"])
    assert shown.exit_code == 2, shown.output
    assert shown.exception is None or isinstance(shown.exception, SystemExit)
    assert shown.stderr.startswith(f"error: {tmp_path / 'batchrunner.toml'}: {words}")
    assert len(shown.stderr.splitlines()) == 1 and "--" not in shown.stderr
    with pytest.raises(UsageError, match=re.escape(f"batchrunner.toml: {words}")):
        batchrunner.plan(manifest, model="fal-ai/veo3.1")


def test_a_poll_range_upside_down_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    from click.testing import CliRunner

    manifest = tmp_path / "shots.csv"
    manifest.write_text("prompt,image_url\na fox,https://example.com/a.png\n")
    got = CliRunner().invoke(
        cli,
        ["run", str(manifest), "--simulate", "--poll-min", "20", "--poll-max", "1",
         "--ledger", str(tmp_path / "l.db")],
    )  # fmt: skip
    assert got.exit_code == 2, got.output
    assert "lower --poll-min or raise --poll-max" in got.output
    assert not (tmp_path / "l.db").exists()
