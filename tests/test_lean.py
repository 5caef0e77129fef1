"""Imports paid only by the commands that need them: no pandas for --help, status, validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batchrunner.ledger import Ledger
from tests.helpers import rows, write_manifest

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


HELP_PROBE = """
import sys
from batchrunner.cli import cli
try:
    cli(sys.argv[1:], prog_name="batchrunner")
except SystemExit as done:
    code = done.code
loaded = ("httpx", "sqlite_utils", "sqlite3", "starlette", "uvicorn", "av", "pandas")
print(code, ",".join(m for m in loaded if m in sys.modules) or "-", file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["simulate", "--help"]])
def test_help_loads_only_click_and_the_option_declarations(command: list[str]) -> None:
    """No HTTP stack, ledger, simulator server or media library for a help page: what runs a
    command is imported by the command."""
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *command], capture_output=True, text=True, check=True
    )
    code, loaded = done.stderr.split()
    assert (int(code), loaded) == (0, "-")
