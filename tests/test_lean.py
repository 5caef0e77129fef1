"""Imports paid only by the commands that need them: no pandas for --help, status, validate;
no aiohttp or media library in a run's own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchrunner.ledger import Ledger
from batchrunner.simulator import SimulatorServer
from tests.helpers import TOKEN, rows, run_args, write_manifest

PROBE = """
import sys
from click.testing import CliRunner
from batchrunner.cli import cli
result = CliRunner().invoke(cli, sys.argv[1:], catch_exceptions=False)
heavy = sorted(m for m in ("pandas", "numpy", "pyarrow", "openpyxl") if m in sys.modules)
print(result.exit_code, ",".join(heavy) or "-")
"""


def heavy_imports(*args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    )
    code, heavy = done.stdout.split()
    return int(code), heavy


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["status"], ["validate"]])
def test_help_status_and_validate_do_not_import_pandas(tmp_path: Path, command: list[str]) -> None:
    if command == ["status"]:
        Ledger.open(tmp_path / "l.db").close()
        command = ["status", "--ledger", str(tmp_path / "l.db")]
    if command == ["validate"]:
        command = ["validate", str(write_manifest(tmp_path / "m.csv", rows(3)))]
    code, heavy = heavy_imports(*command)
    assert code == 0 and heavy == "-"


LOADED_PROBE = """
import sys
from batchrunner.cli import cli
watched, argv = sys.argv[1].split(","), sys.argv[2:]
try:
    cli(argv, prog_name="batchrunner")
except SystemExit as done:
    code = done.code
print(code, ",".join(m for m in watched if m in sys.modules) or "-", file=sys.stderr)
"""


def loaded_by(watched: tuple[str, ...], *command: str) -> tuple[int, str]:
    """The exit code of ``batchrunner COMMAND`` run in-process, and which ``watched`` modules
    it imported ("-": none)."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED_PROBE, ",".join(watched), *command],
        capture_output=True,
        text=True,
        check=True,
    )
    code, loaded = done.stderr.split()
    return int(code), loaded


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["simulate", "--help"]])
def test_help_loads_only_click_and_the_option_declarations(command: list[str]) -> None:
    """No HTTP stack, ledger, simulator server or media library for a help page: what runs a
    command is imported by the command."""
    heavy = ("httpx", "aiohttp", "sqlite_utils", "sqlite3", "starlette", "uvicorn", "av", "pandas")
    assert loaded_by(heavy, *command) == (0, "-")


@pytest.mark.parametrize("command", ["plan", "validate"])
def test_plan_and_validate_load_no_http_stack_or_run_machinery(
    tmp_path: Path, command: str
) -> None:
    """What only a run needs (httpx, the scheduler, the media check) stays unloaded, and so
    does the ledger's SQLite layer while there is no ledger to read."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    extra = ["--ledger", str(tmp_path / "l.db")] if command == "plan" else []
    http = ("httpx", "aiohttp", "starlette")
    run = ("batchrunner.scheduler", "batchrunner.verify", "av", "pandas", "sqlite_utils")
    assert loaded_by(http + run, command, str(manifest), *extra) == (0, "-")


def test_a_manifest_whose_values_plainly_fit_is_checked_without_jsonschema(tmp_path: Path) -> None:
    """Choices among their enum, prompts within their length and flags need no jsonschema (a
    tenth of a second to import); only a value that does not plainly fit is shown to it."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    assert loaded_by(("jsonschema",), "plan", str(manifest)) == (0, "-")


def test_a_run_straight_to_the_api_loads_neither_aiohttp_nor_a_media_library(
    tmp_path: Path, sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp carries only proxied requests and httpx's own interface; PyAV and PIL work in
    the media-check workers (:mod:`batchrunner.inspector`), not in the run's process."""
    monkeypatch.setenv("BATCHRUNNER_API_KEY", TOKEN)
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    watched = ("aiohttp", "yarl", "av", "PIL")
    assert loaded_by(watched, *run_args(sim, tmp_path, manifest)) == (0, "-")
    assert len(list((tmp_path / "ledger.db.media" / "posters").iterdir())) == 2  # checked
