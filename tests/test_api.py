"""The Python API: DataFrames and lists of dicts in, typed DataFrames out, no CLI involved."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pandas as pd
import pytest

import batchrunner
from batchrunner.errors import ManifestError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def test_a_dataframe_runs_and_reads_back_with_the_right_dtypes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shots = pd.DataFrame(
        {
            "prompt": ["a red fox", "a barn owl", "a speckled hen"],
            "duration": [4, 8, 6],
            "generate_audio": [True, False, True],
            "seed": [7, None, 9],
            "scene": ["intro", "middle", "outro"],
            "take_count": [1, 2, 3],
        }
    )
    summary = batchrunner.run(shots, model="fal-ai/veo3.1", simulate=True, count=2)
    assert summary.exit_code == 0 and summary.counts == {"done": 6}
    frame = batchrunner.results("batchrunner.db")
    assert len(frame) == 6
    assert frame["generate_audio"].dtype == "boolean"
    assert frame["seed"].dtype == "Int64" and frame["take"].dtype == "Int64"
    assert frame["row"].dtype == "Int64" and frame["take_count"].dtype == "Int64"
    assert (
        isinstance(frame["done_at"].dtype, pd.DatetimeTZDtype)
        and str(frame["done_at"].dt.tz) == "UTC"
    )
    assert frame["scene"].tolist() == ["intro", "intro", "middle", "middle", "outro", "outro"]
    assert sorted(frame["take"].tolist()) == [1, 1, 1, 2, 2, 2]
    assert frame["seed"].notna().all()  # takes get distinct seeds, even without one given
    assert frame.loc[frame["row"] == 1, "seed"].tolist() == [7, 8]
    assert frame["duration"].tolist() == ["4s", "4s", "8s", "8s", "6s", "6s"]


def test_a_list_of_dicts_is_checked_like_a_file_with_row_numbers() -> None:
    rows = [
        {"prompt": "a red fox", "resolution": "1080p"},
        {"prompt": "a barn owl", "resolution": "8k"},
    ]
    with pytest.raises(batchrunner.ManifestError) as info:  # caught as the README names it
        batchrunner.plan(rows, model="fal-ai/veo3.1")
    assert batchrunner.ManifestError is ManifestError
    assert isinstance(info.value, batchrunner.UsageError | batchrunner.BatchrunnerError)
    (problem,) = info.value.problems
    assert (problem.row, problem.column) == (2, "resolution")
    assert "'720p', '1080p' or '4k'" in problem.message
    assert batchrunner.plan(rows[:1], model="fal-ai/veo3.1").cost_usd == 3.20
    for taken in ("1", 1, [1]):  # the bad row 2 left out, as `--rows 1` leaves it
        assert batchrunner.plan(rows, model="fal-ai/veo3.1", rows=taken).cost_usd == 3.20
    with pytest.raises(
        UsageError, match=r"unknown option concurency \(did you mean 'concurrency'\?\)"
    ):
        batchrunner.plan(rows[:1], concurency=4)


def test_an_output_folder_that_is_a_file_is_said_plainly(tmp_path: Path) -> None:
    """``out=`` naming a file said "cannot write to the output folder ...: File exists"."""
    (tmp_path / "notes.txt").write_text("a file")
    for out in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "videos"):
        with pytest.raises(UsageError) as info:
            batchrunner.run(
                [{"prompt": "a fox"}], model="fal-ai/veo3.1", simulate=True,
                ledger=tmp_path / "l.db", out=out,
            )  # fmt: skip
        assert str(info.value) == (
            f"cannot use {out} as the output folder: {tmp_path / 'notes.txt'} is a file; give "
            "the videos a folder (--out, out=), made when missing"
        )
    assert not (tmp_path / "l.db").exists()


def test_options_take_the_names_the_command_line_and_the_readme_give_them(tmp_path: Path) -> None:
    """``downloads=2`` and ``stream=False``, as the README's options table, ``--downloads`` and
    ``batchrunner.toml`` name them, were refused ("unknown option downloads"), and only the
    error's list told the Python names ``download_concurrency`` and ``streams``."""
    from batchrunner.ledger import Ledger

    summary = batchrunner.run(
        [{"prompt": "a red fox"}], model="fal-ai/veo3.1", simulate=True,
        ledger=tmp_path / "l.db", out=tmp_path / "out", downloads=2, stream=False,
    )  # fmt: skip
    assert summary.exit_code == 0
    with Ledger.open(tmp_path / "l.db") as ledger:
        stored = ledger.last_run()["options"]  # type: ignore[index]
    assert (stored["download_concurrency"], stored["streams"]) == (2, False)
    with pytest.raises(UsageError, match="downloads and download_concurrency are one option"):
        batchrunner.plan([{"prompt": "a fox"}], downloads=2, download_concurrency=3)
    with pytest.raises(UsageError, match=r"unknown option download \(did you mean 'downloads'"):
        batchrunner.plan([{"prompt": "a fox"}], download=2)


def test_a_manifest_error_names_its_problems_where_a_notebook_shows_it() -> None:
    rows = [{"prompt": "a fox", "resolution": "8k"}] * 12
    with pytest.raises(ManifestError) as info:
        batchrunner.plan(rows, model="fal-ai/veo3.1")
    lines = str(info.value).splitlines()
    assert lines[0] == "<rows>: 12 problems; nothing was submitted" == info.value.summary
    assert lines[1].startswith("  row 1, column 'resolution': ") and "'4k'" in lines[1]
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "  ... and 2 more (every one in .problems)"
    assert len(info.value.problems) == 12


def test_results_types_do_not_depend_on_what_a_ledger_holds(tmp_path: Path) -> None:
    """`error` of a batch all done, `seed` of rows without one: columns of no value yet came
    back as `object` in one ledger and typed in another."""
    shots = [{"prompt": "a red fox"}, {"prompt": "a barn owl"}]
    ran = batchrunner.run(
        shots, model="fal-ai/veo3.1", simulate=True, ledger=tmp_path / "l.db", out=tmp_path / "o"
    )
    assert ran.exit_code == 0
    frame = batchrunner.results(tmp_path / "l.db")
    assert frame["error"].isna().all() and frame["seed"].isna().all()
    assert frame["error"].dtype == "string" and frame["seed"].dtype == "Int64"
    assert frame["take_of"].dtype == "string" and frame["billed_usd"].dtype == "Float64"


def test_a_dataframe_indexed_by_id_keeps_its_ids(tmp_path: Path) -> None:
    """``read_csv(..., index_col="id")`` or ``set_index("id")``: the ids are the rows' own,
    and a run that dropped them would make up others (and buy the rows again when the ids
    come back)."""
    shots = pd.DataFrame({"id": ["fox", "owl"], "scene": ["a", "b"], "prompt": ["a fox", "an owl"]})
    summary = batchrunner.run(
        shots.set_index(["id", "scene"]), model="fal-ai/veo3.1", simulate=True,
        ledger=tmp_path / "l.db", out=tmp_path / "out",
    )  # fmt: skip
    assert summary.exit_code == 0
    frame = batchrunner.results(tmp_path / "l.db")
    assert frame["job_id"].tolist() == ["fox", "owl"] and frame["scene"].tolist() == ["a", "b"]
    plain = shots.set_index(pd.Index([10, 20]))  # an unnamed index is no column
    assert batchrunner.plan(plain, model="fal-ai/veo3.1", ledger=tmp_path / "l.db").to_submit == 0
    clash = shots.set_index("id").assign(id=["x", "y"])
    with pytest.raises(UsageError, match="index 'id' is also one of its columns"):
        batchrunner.plan(clash, model="fal-ai/veo3.1")


def test_a_list_column_read_back_from_parquet_plans_as_the_file_does(tmp_path: Path) -> None:
    """pandas holds a Parquet list column as numpy arrays (and a list built in Python may
    hold numpy scalars): each cell reads as the JSON list it is in the file, not a traceback."""
    import numpy as np

    urls = ["https://example.com/a.png", "https://example.com/b.png"]
    pd.DataFrame({"prompt": ["a fox"], "image_urls": [urls], "tags": [["x"]]}).to_parquet(
        tmp_path / "refs.parquet"
    )
    frame = pd.read_parquet(tmp_path / "refs.parquet")
    assert isinstance(frame["image_urls"][0], np.ndarray)
    model = "fal-ai/veo3.1/reference-to-video"
    from_frame = batchrunner.plan(frame, model=model, ledger=tmp_path / "l.db")
    from_file = batchrunner.plan(tmp_path / "refs.parquet", model=model, ledger=tmp_path / "l.db")
    assert from_frame.decisions[0].job_id == from_file.decisions[0].job_id  # the same request
    assert (from_frame.jobs, from_frame.cost_usd) == (1, from_file.cost_usd)
    scalars = [{"prompt": "a fox", "image_urls": [np.str_(u) for u in urls], "seed": np.int64(7)}]
    assert batchrunner.plan(scalars, model=model).jobs == 1


def test_the_library_prints_nothing_and_completes_its_names(tmp_path: Path) -> None:
    """A script that sets up no logging: a clip unlike its request was a warning on stderr,
    through Python's last-resort handler ("Nothing ... prints", says the README). And a
    notebook's tab completion offered none of the API: it is imported on first use."""
    import subprocess
    import sys

    script = (
        "import batchrunner\n"
        "summary = batchrunner.run([{'prompt': 'a fox #lie:duration'}], model='fal-ai/veo3.1',"
        f" simulate=True, ledger={str(tmp_path / 'l.db')!r}, out={str(tmp_path / 'out')!r})\n"
        "print(summary.exit_code, batchrunner.results("
        f"{str(tmp_path / 'l.db')!r})['warnings'][0])\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "0 duration 4 s, asked for 8 s\n", ran.stdout
    assert ran.stderr == ""
    assert {"plan", "run", "arun", "results", "UsageError"} <= set(dir(batchrunner))


def test_a_dataframe_with_a_column_twice_is_refused_in_one_line() -> None:
    frame = pd.DataFrame([["a fox", "an owl"]], columns=["prompt", "prompt "])
    with pytest.raises(UsageError, match="the column 'prompt' more than once"):
        batchrunner.plan(frame, model="fal-ai/veo3.1")
    with pytest.raises(UsageError, match="the column 'prompt' more than once"):
        batchrunner.plan(frame.set_axis(["prompt", "prompt"], axis=1), model="fal-ai/veo3.1")


def test_run_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def notebook_cell() -> batchrunner.Summary:
        return batchrunner.run(
            [{"prompt": "a red fox"}],
            model="fal-ai/veo3.1",
            simulate=True,
            ledger=tmp_path / "l.db",
            out=tmp_path / "out",
        )

    assert asyncio.run(notebook_cell()).counts == {"done": 1}


def test_ctrl_c_stops_a_run_beside_a_running_event_loop_as_it_stops_one_on_the_main_thread(
    tmp_path: Path,
) -> None:
    """A notebook's "interrupt the kernel" (a KeyboardInterrupt while ``run`` waits for its
    worker thread) was heard only once the whole batch had ended: signals reach the main
    thread, the batch's loop is not on it. Now the batch stops as on Ctrl-C (state saved,
    exit 130, ``resume`` carries on), and under ``asyncio.run``, whose SIGINT handler cancels
    the task instead, the same."""
    from batchrunner.ledger import Ledger
    from batchrunner.simulator import SimulatorServer
    from tests.helpers import TOKEN, ctrl_c_after, fast_config

    async def notebook_cell(ledger: Path) -> batchrunner.Summary:
        return batchrunner.run(
            [{"prompt": "a red fox"}, {"prompt": "a barn owl"}],
            model="fal-ai/veo3.1", token=TOKEN, base_url=server.url, auth_scheme="bearer",
            ledger=ledger, out=tmp_path / "out", poll_min=0.02, poll_max=0.2,
        )  # fmt: skip

    def left(ledger: Path) -> tuple[int | None, list[str]]:
        with Ledger.open(ledger, create=False) as opened:
            run = opened.last_run()
            assert run is not None
            return run["exit_code"], sorted(job.state.value for job in opened.jobs())

    IN_FLIGHT = {"queued", "running"}
    with SimulatorServer(fast_config(run_seconds=60)) as server:
        loop = asyncio.new_event_loop()  # as a kernel runs one: Ctrl-C raises where it waits
        try:
            with ctrl_c_after(server, 2):
                summary = loop.run_until_complete(notebook_cell(tmp_path / "kernel.db"))
        finally:
            loop.close()
        # both jobs left in flight at the provider (queued, or running by the time it stops)
        assert summary.exit_code == 130 and set(summary.counts) <= IN_FLIGHT
        assert sum(summary.counts.values()) == 2
        assert summary.stopped == "interrupted (KeyboardInterrupt); state is saved"
        code, states = left(tmp_path / "kernel.db")
        assert code == 130 and len(states) == 2 and set(states) <= IN_FLIGHT
        with pytest.raises(KeyboardInterrupt), ctrl_c_after(server, 4):
            asyncio.run(notebook_cell(tmp_path / "script.db"))
        code, states = left(tmp_path / "script.db")
        assert code == 130 and len(states) == 2 and set(states) <= IN_FLIGHT


def test_arun_is_awaited_while_the_callers_loop_goes_on(tmp_path: Path) -> None:
    """Async code (a web app) awaits a batch without its event loop standing still: a task of
    its own keeps running while the batch does. ``run`` in a coroutine blocks that loop."""
    from batchrunner.simulator import SimulatorServer
    from tests.helpers import TOKEN, counters, fast_config

    async def app(server: SimulatorServer) -> tuple[batchrunner.Summary, int]:
        seen_while_running = 0

        async def other_work() -> None:  # counts the turns it gets while a job runs
            nonlocal seen_while_running
            while True:
                if counters(server)["submits"] >= 1:
                    seen_while_running += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(other_work())
        summary = await batchrunner.arun(
            [{"prompt": "a red fox"}],
            model="fal-ai/veo3.1", token=TOKEN, base_url=server.url, auth_scheme="bearer",
            ledger=tmp_path / "l.db", out=tmp_path / "out", poll_min=0.02, poll_max=0.1,
        )  # fmt: skip
        ticker.cancel()
        return summary, seen_while_running

    with SimulatorServer(fast_config(run_seconds=0.5)) as server:
        summary, turns = asyncio.run(app(server))
    assert summary.exit_code == 0 and summary.counts == {"done": 1}
    assert turns >= 2  # with run() in the coroutine: 0, the loop was the batch's to wait on
    with pytest.raises(UsageError, match="concurrency must be a whole number"):
        asyncio.run(batchrunner.arun([{"prompt": "a fox"}], simulate=True, concurrency=0))
    bad = [{"prompt": "a fox", "duration": "seven"}]  # raised as run raises it, no group
    with pytest.raises(ManifestError, match="1 problem; nothing was submitted"):
        asyncio.run(
            batchrunner.arun(bad, model="fal-ai/veo3.1", simulate=True, ledger=tmp_path / "b.db")
        )


@pytest.mark.parametrize("cancel", ["task", "anyio-scope"])
def test_cancelling_arun_stops_the_batch_as_ctrl_c_does(tmp_path: Path, cancel: str) -> None:
    """The awaiting task cancelled (a web request dropped, a timeout): nothing more is sent,
    the jobs in flight stay recorded for ``resume`` (exit 130), then the cancel goes on,
    by ``Task.cancel()`` as by an anyio scope (which anyio delivers through it)."""
    import anyio

    from batchrunner.ledger import Ledger
    from batchrunner.simulator import SimulatorServer
    from tests.helpers import TOKEN, counters, fast_config

    rows = [{"prompt": f"shot {n}"} for n in range(4)]

    async def two_submitted(server: SimulatorServer) -> None:
        while counters(server)["submits"] < 2:
            await asyncio.sleep(0.02)

    async def app(server: SimulatorServer) -> None:
        awaited = batchrunner.arun(
            rows, model="fal-ai/veo3.1", token=TOKEN, base_url=server.url, auth_scheme="bearer",
            concurrency=2, ledger=tmp_path / "l.db", out=tmp_path / "out", poll_min=0.02,
            poll_max=0.2,
        )  # fmt: skip
        if cancel == "task":
            batch = asyncio.create_task(awaited)
            await two_submitted(server)
            batch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await batch
        else:
            with anyio.CancelScope() as scope:

                async def cancel_at_two_submits() -> None:
                    await two_submitted(server)
                    scope.cancel()

                watcher = asyncio.create_task(cancel_at_two_submits())
                await awaited
            await watcher
            assert scope.cancelled_caught
        with Ledger.open(tmp_path / "l.db", create=False) as opened:
            finished = opened.last_run()  # read the moment the cancel arrives: it has stopped
        assert finished is not None and finished["exit_code"] == 130

    with SimulatorServer(fast_config(run_seconds=60)) as server:
        asyncio.run(app(server))
        submits = counters(server)["submits"]
    with Ledger.open(tmp_path / "l.db", create=False) as opened:
        states = sorted(job.state.value for job in opened.jobs())
    assert submits == 2 and states.count("pending") == 2  # the other two were never sent
    assert set(states) - {"pending"} <= {"queued", "running"}


def test_the_readme_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API") :]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:1]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "4 6.4"
    assert printed[1] == "0 {'done': 4}"
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 4  # beside them: report.html


def test_exports_are_fit_for_people_and_status_all_lists_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from batchrunner.cli import cli
    from batchrunner.export import EXPORT_COLUMNS

    monkeypatch.chdir(tmp_path)
    shots = pd.DataFrame(
        {"id": ["fox", "owl"], "notes": ["first", "second"], "prompt": ["a fox", "an owl"],
         "duration": [4, 6], "scene": ["intro", "outro"]}
    )  # fmt: skip
    assert batchrunner.run(shots, model="fal-ai/veo3.1", simulate=True, count=2).exit_code == 0
    for name in ("jobs.csv", "jobs.xlsx"):
        written = CliRunner().invoke(cli, ["export", "-o", name])
        assert written.exit_code == 0, written.output
    csv = pd.read_csv("jobs.csv")
    xlsx = pd.read_excel("jobs.xlsx")
    assert list(csv.columns) == list(xlsx.columns)
    assert list(csv.columns[:5]) == ["job_id", "id", "variant", "take", "seed"]
    own = [c for c in csv.columns if c not in EXPORT_COLUMNS]
    assert own[:4] == ["notes", "prompt", "duration", "scene"]  # the sheet's order first
    assert csv["id"].tolist() == ["fox", "fox", "owl", "owl"]
    assert csv["variant"].tolist() == ["t1", "t2", "t1", "t2"]
    assert csv["take"].tolist() == [1, 2, 1, 2] and csv["seed"].nunique() == 4
    assert xlsx["job_id"].tolist() == ["fox~t1", "fox~t2", "owl~t1", "owl~t2"]
    listed = CliRunner().invoke(cli, ["status", "--all"])
    assert listed.exit_code == 0 and listed.output.count("  done  row ") == 4
    assert CliRunner().invoke(cli, ["status"]).output.count("  done  row ") == 0


def test_a_manifest_column_named_like_a_ledger_column_is_kept_beside_it(tmp_path: Path) -> None:
    """A travel sheet's "state", a producer's "error" notes: they were dropped from exports and
    results, the ledger's own columns kept in their place."""
    from click.testing import CliRunner

    from batchrunner.cli import cli

    shots = pd.DataFrame({"prompt": ["a diner"], "state": ["New York"], "error": ["none seen"]})
    ledger = tmp_path / "l.db"
    batchrunner.run(shots, model="fal-ai/veo3.1", simulate=True, ledger=ledger, out=tmp_path)
    frame = batchrunner.results(ledger)
    assert frame.loc[0, "state"] == "done" and frame.loc[0, "manifest.state"] == "New York"
    assert pd.isna(frame.loc[0, "error"]) and frame.loc[0, "manifest.error"] == "none seen"
    table = tmp_path / "x.csv"
    written = CliRunner().invoke(cli, ["export", "--ledger", str(ledger), "-o", str(table)])
    assert written.exit_code == 0, written.output
    exported = pd.read_csv(table)
    assert exported.loc[0, "manifest.state"] == "New York" and exported.loc[0, "state"] == "done"


def test_an_xlsx_export_keeps_text_that_starts_with_an_equals_sign_as_text(
    tmp_path: Path,
) -> None:
    """openpyxl writes a string that starts with "=" as a formula: a prompt came out computed,
    and a note (or a server's error message) could put a working =HYPERLINK into the workbook."""
    import zipfile

    import openpyxl
    from click.testing import CliRunner

    from batchrunner.cli import cli

    link = '=HYPERLINK("http://example.com/x","open me")'
    shots = pd.DataFrame({"prompt": ["=1+1 foxes", "an owl"], "notes": [link, "fine"]})
    ledger = tmp_path / "l.db"
    batchrunner.run(shots, model="fal-ai/veo3.1", simulate=True, ledger=ledger, out=tmp_path)
    book = tmp_path / "jobs.xlsx"
    written = CliRunner().invoke(cli, ["export", "--ledger", str(ledger), "-o", str(book)])
    assert written.exit_code == 0, written.output
    with zipfile.ZipFile(book) as archive:
        assert b"<f>" not in archive.read("xl/worksheets/sheet1.xml")  # no formula at all
    sheet = openpyxl.load_workbook(book).active
    header = [cell.value for cell in sheet[1]]
    prompts = [row[header.index("prompt")] for row in sheet.iter_rows(min_row=2, values_only=True)]
    notes = [row[header.index("notes")] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert prompts == ["=1+1 foxes", "an owl"] and notes == [link, "fine"]


def test_a_run_goes_on_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's event loop is uvloop's (a dependency): its sockets and scheduling are C."""
    from batchrunner.scheduler import Runner

    monkeypatch.chdir(tmp_path)
    loops: list[str] = []
    run = Runner.run

    async def noting_the_loop(self: Runner, *args: object) -> object:
        loops.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        return await run(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Runner, "run", noting_the_loop)
    summary = batchrunner.run([{"prompt": "a red fox"}], model="fal-ai/veo3.1", simulate=True)
    assert summary.exit_code == 0 and loops == ["uvloop"]


def test_plan_in_python_holds_back_what_the_budget_would_as_the_cli_does(tmp_path: Path) -> None:
    """``batchrunner.plan(rows, budget=4)`` planned both $3.20 jobs to submit, where the CLI's
    plan (and ``run``) holds one back: a script checking the plan before spending was told
    it all fits. The Python plan takes the command line's planning options."""
    import json

    from click.testing import CliRunner

    from batchrunner.cli import cli

    shots = [{"id": "a", "prompt": "a fox"}, {"id": "b", "prompt": "an owl"}]
    options = {"model": "fal-ai/veo3.1", "ledger": str(tmp_path / "l.db")}
    for budget in ("budget", "run_budget"):
        planned = batchrunner.plan(shots, **options, **{budget: 4})
        assert (planned.to_submit, planned.to_submit_cost_usd) == (1, 3.2)
        assert [d.action for d in planned.decisions] == ["submit", "held"]
    pd.DataFrame(shots).to_csv(tmp_path / "m.csv", index=False)
    args = ["--budget", "4", "--json", "--model", options["model"], "--ledger", options["ledger"]]
    cli_plan = CliRunner().invoke(cli, ["plan", str(tmp_path / "m.csv"), *args])
    shown = json.loads(cli_plan.stdout)
    assert [d["action"] for d in shown["decisions"]] == ["submit", "held"]
