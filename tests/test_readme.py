"""The README's command lines are real: each parses with the CLI, and the cron line runs.

Every ``batchrunner ...`` line in a code block (continuations joined, ``$ `` prompts and
comments dropped) must parse with the real click commands, so no option the docs show can
drift away. The cron line is run as written, with only its paths and key filled in, against
the simulator (named by a ``batchrunner.toml`` beside the manifest): a night with failures
writes to stderr (cron mails it); a night where everything is done writes nothing there.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchrunner.cli import cli
from batchrunner.simulator import SimulatorServer
from tests.helpers import TOKEN, fast_config, rows, write_manifest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent / "batchrunner"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)


def command_lines() -> list[str]:
    lines = []
    for block in code_blocks(README):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("batchrunner "):
                lines.append(line.split("  #")[0].strip())
    return lines


def test_the_readme_shows_the_commands_that_matter() -> None:
    shown = {shlex.split(line)[1] for line in command_lines()}
    assert {"validate", "run", "status", "export", "plan", "models"} <= shown


@pytest.mark.parametrize("line", command_lines())
def test_every_readme_command_line_parses_with_the_real_cli(line: str) -> None:
    command: click.Command = cli
    name, *rest = shlex.split(line)
    while isinstance(command, click.Group):  # batchrunner models add ...
        name, *rest = rest
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"{line}: no command {name!r}"
        command = found
    with command.make_context(name, rest):
        pass  # unknown options, bad values or missing arguments raise here


def cron_line() -> str:
    (block,) = [b for b in re.findall(r"```cron\n(.*?)```", README, flags=re.DOTALL)]
    (line,) = [line for line in block.splitlines() if line and not line.startswith("#")]
    return line.split(None, 5)[5]  # drop the five schedule fields


def night(
    tmp_path: Path, server: SimulatorServer, failing: tuple[int, ...], *, title: bool = False
) -> tuple[str, Path]:
    """Run the README's cron command in a fresh folder (``title``: again in the same one, its
    sheet with a title row above the header); return its stderr and the folder."""
    folder = tmp_path / ("bad-night" if failing else "titled" if title else "good-night")
    folder.mkdir(exist_ok=title)
    sheet = write_manifest(folder / "shots.csv", rows(4, failing=failing))
    if title:  # as people make sheets: a title, a blank row, then the header
        sheet.write_text("Shot list night 2\n\n" + sheet.read_text())
    (folder / "batchrunner.toml").write_text(
        f'base_url = "{server.url}"\npoll_min = 0.02\npoll_max = 0.2\nrps = 500\n'
    )
    command = cron_line().replace("/data/shots", shlex.quote(str(folder)))
    command = command.replace("QUICKROUTER_API_KEY=...", f"QUICKROUTER_API_KEY={TOKEN}")
    command = command.replace("/opt/batchrunner/.venv/bin/batchrunner", str(BIN))
    assert "..." not in command and "/opt/" not in command, command
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=90, check=False
    )
    return done.stderr, folder


def test_the_cron_line_is_loud_on_a_failing_night_and_quiet_on_a_good_one(
    tmp_path: Path,
) -> None:
    with SimulatorServer(fast_config()) as server:
        loud, bad = night(tmp_path, server, failing=(2,))
        quiet, good = night(tmp_path, server, failing=())
    assert "1 failed" in loud and "`batchrunner status --ledger shots.db`" in loud
    assert "content" in loud  # the first reason: the content checker's words
    assert quiet == ""
    for folder, code in ((bad, 1), (good, 0)):
        (summary,) = [json.loads(x) for x in (folder / "nightly.jsonl").read_text().splitlines()]
        assert summary["exit_code"] == code and summary["run_id"] == 1
        assert summary["finished_at"] and summary["exit_reason"]
        assert (folder / "nightly.log").exists() and TOKEN not in (
            folder / "nightly.log"
        ).read_text()
    assert len(list((good / "videos").glob("*.mp4"))) == 4


def test_a_sheet_s_routine_warnings_do_not_break_a_quiet_night(tmp_path: Path) -> None:
    """A title row above the header is skipped with a warning: said on the night that buys,
    it was said on every night after, so cron mailed a night where everything was done."""
    with SimulatorServer(fast_config()) as server:
        first, _ = night(tmp_path, server, failing=(), title=True)
        second, folder = night(tmp_path, server, failing=(), title=True)
    assert "the rows above it were skipped: 'Shot list night 2'" in first
    assert second == ""
    assert "the rows above it were skipped" in (folder / "nightly.log").read_text()


def test_the_worked_example_prints_what_the_readme_shows_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spreadsheet is built from the README's own table; the plan output must match the
    README's block line for line, and the run line (with --simulate) must buy exactly that."""
    import openpyxl

    section = README[README.index("## A worked example") :]
    table = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ")
    ][:4]
    book = openpyxl.Workbook()
    book.active.title = "Day 1"
    sheet = book.create_sheet("Day 2")
    for row in table:
        sheet.append([None if c == "" else int(c) if c.isdigit() else c for c in row])
    book.save(tmp_path / "shots.xlsx")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "fox.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "images" / "hen.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    monkeypatch.chdir(tmp_path)
    plan_line, run_line = [
        line for line in command_lines() if "shots.xlsx" in line and "--count 2" in line
    ]
    shown = next(b for b in code_blocks(section) if b.startswith("shots.xlsx: "))
    planned = CliRunner().invoke(cli, shlex.split(plan_line)[1:])
    assert planned.exit_code == 0, planned.output
    assert planned.stdout == shown
    ran = CliRunner().invoke(cli, [*shlex.split(run_line)[1:], "--simulate", "--json"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert summary["counts"] == {"done": 12} and summary["spend_usd"] == 24.0
    assert (tmp_path / "videos" / "0001-fox~16_9~t1.mp4").exists()


def test_the_module_map_lists_every_module() -> None:
    section = README[README.index("The code reads as the pipeline it is") :]
    named = set(re.findall(r"`(?:simulator/)?([a-z_]+\.py)`", section))
    named |= set(re.findall(r"`([a-z_]+\.py)`", section[section.index("| simulator |") :]))
    package = ROOT / "batchrunner"
    modules = {p.name for p in package.glob("*.py")} | {
        p.name for p in (package / "simulator").glob("*.py")
    }
    assert modules - {"__init__.py", "__main__.py"} <= named
