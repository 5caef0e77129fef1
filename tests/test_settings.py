"""Every run option lives in one declaration; the CLI, the TOML keys, the README agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from batchrunner import settings
from batchrunner.cli import RUN_SETTINGS, cli
from batchrunner.config import KEYS, load_config
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
    assert again.stored() == made.stored()
    with pytest.raises(ValueError, match="not a duration"):
        Settings(run_timeout="soon")


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"concurrency": 0}, "concurrency must be a number between 1 and 1000"),
        ({"downloads": 65}, "download_concurrency must be a number between 1 and 64"),
        ({"budget": -1}, "budget must be a number at least 0"),
        ({"provider": "acme"}, "provider must be one of fal, quickrouter"),
        ({"rps": "fast"}, "rps must be a number at least 0.01"),
    ],
)
def test_a_python_caller_gets_the_command_lines_checks(values: dict, words: str) -> None:
    from batchrunner.errors import UsageError

    name = {"downloads": "download_concurrency"}
    with pytest.raises(UsageError, match=words):
        Settings(**{name.get(k, k): v for k, v in values.items()})
