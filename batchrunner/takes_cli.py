"""The ``retry --ids FILE [--new-take] [--dry-run]`` options and what they print (see
:mod:`.takes`); ``retry``'s own ``--budget`` caps them too.

Kept apart from :mod:`batchrunner.cli` so the review → re-roll loop is one small unit: the
options, the plan printed before anything is bought, and the call into the library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from batchrunner.errors import counted

if TYPE_CHECKING:  # the library loads when a command runs, not for `batchrunner --help`
    from batchrunner import takes
    from batchrunner.report import Summary
    from batchrunner.states import JobState

F = TypeVar("F", bound=Callable[..., Any])


def takes_options(fn: F) -> F:
    options = [
        click.option(
            "--ids",
            "ids_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Only the jobs this file lists: a CSV with a job_id column (the review "
            "gallery's download) or one id per line.",
        ),
        click.option(
            "--new-take",
            is_flag=True,
            help="With --ids: buy a new take of each listed job (new id ~tN, fresh seed); "
            "the originals stay.",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Print what would be sent again (or fetched again) and its cost; send nothing.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def retry_ids(
    ledger: Path,
    *,
    ids_file: Path | None,
    new_take: bool,
    unknown: bool,
    budget: float | None,
    run_budget: float | None,
    dry_run: bool,
    max_runtime: float | None,
) -> Summary | None:
    """Print the plan, then run it (None for ``--dry-run``, which sends nothing)."""
    from batchrunner import takes
    from batchrunner.report import Progress

    if ids_file is None:
        raise click.UsageError("--new-take needs --ids FILE (the jobs to make new takes of)")
    ids = takes.read_ids(ids_file)
    if dry_run:
        planned = takes.preview(ledger, ids, new_take=new_take, unknown=unknown)
        announce(planned, budget, run_budget)
        click.echo("dry run: nothing was recorded or sent", err=True)
        return None
    with Progress() as progress:
        return takes.retry_ids(
            ledger,
            ids,
            new_take=new_take,
            unknown=unknown,
            budget=budget,
            run_budget=run_budget,
            max_runtime=max_runtime,
            announce=lambda plan: announce(plan, budget, run_budget),
            observe=progress,
        )


LISTED = 20  # jobs listed one a line before what is bought; the rest counted


def _more(listed: int) -> None:
    if listed > LISTED:
        click.echo(
            f"  ... and {listed - LISTED} more (`batchrunner status --all` lists them)", err=True
        )


def retry_states_preview(
    ledger: Path,
    states: list[JobState],
    downloads: bool,
    budget: float | None,
    run_budget: float | None,
) -> None:
    """``retry --dry-run`` without ``--ids``: what would be sent again and fetched again."""
    from batchrunner import takes

    announce(takes.preview_states(ledger, states, downloads=downloads), budget, run_budget)
    click.echo("dry run: nothing was recorded or sent", err=True)


def announce(plan: takes.Plan, budget: float | None, run_budget: float | None) -> None:
    """What is about to be bought (and fetched again), one line per job, then the total — on
    stderr."""
    from batchrunner.planner import money

    if plan.new_takes or plan.under_way:
        click.echo(f"new takes to submit: {len(plan.new_takes)}, {money(plan.cost_usd)}", err=True)
        for job in plan.new_takes:
            seed = job.input.get("seed")
            click.echo(
                f"  {job.job_id}  row {job.row}  new take of {job.take_of}"
                + (f", seed {seed}" if seed is not None else "")
                + f": {money(job.price_usd)}",
                err=True,
            )
        for take in plan.under_way:
            click.echo(
                f"  {take.take_of}: its new take {take.job_id} is not done yet ({take.state}): "
                "this run finishes it, and buys no other",
                err=True,
            )
        for endpoint in plan.no_seed:
            click.echo(
                f"  note: {endpoint} has no seed field; its new takes repeat the same request "
                "(the provider may still return a different video)",
                err=True,
            )
    elif plan.requeue:
        click.echo(f"jobs to send again: {len(plan.requeue)}, {money(plan.cost_usd)}", err=True)
        for job in plan.requeue[:LISTED]:
            click.echo(
                f"  {job.job_id}  row {job.row}  ({job.state}): {money(job.price_usd)}", err=True
            )
        _more(len(plan.requeue))
    if plan.left_alone:
        n = len(plan.left_alone)
        ids = ", ".join(job.job_id for job in plan.left_alone[:LISTED])
        more = f" and {n - LISTED} more" if n > LISTED else ""
        where = (
            f"outside the last run's --rows {plan.rows}" if plan.rows else "no longer in the sheet"
        )
        click.echo(
            f"left alone: {counted(n, 'job')} whose {'row is' if n == 1 else 'rows are'} "
            f"{where} ({ids}{more}); to send {'it' if n == 1 else 'one'} anyway, list "
            "its id in a file for `batchrunner retry --ids FILE`",
            err=True,
        )
    if not (plan.new_takes or plan.under_way or plan.requeue or plan.refetch):
        click.echo("nothing to send or fetch again", err=True)
    if plan.refetch:
        click.echo(
            f"videos to fetch again: {len(plan.refetch)} (stored results: nothing is bought)",
            err=True,
        )
        for job in plan.refetch[:LISTED]:
            click.echo(f"  {job.job_id}  row {job.row}  ({job.state})", err=True)
        _more(len(plan.refetch))
    if plan.pending:
        click.echo(
            f"also pending in the ledger: {counted(plan.pending, 'job')}, "
            f"{money(plan.pending_usd)}",
            err=True,
        )
    line = f"spent so far: {money(plan.spent_usd)}"
    kept = budget is None and plan.budget is not None
    budget = plan.budget if budget is None else budget  # the ledger's, which a retry keeps
    asked = round(plan.cost_usd + plan.pending_usd, 4)  # pending jobs are sent too
    cap, fix = None, ""  # the cap reached before all of it is bought, and how to lift it
    if budget is not None:
        left = round(max(0.0, budget - plan.spent_usd), 4)
        line += f"; --budget {money(budget)}{' (kept from the last run)' if kept else ''}"
        line += f" leaves {money(left)}"
        if asked > left:
            cap, fix = (
                f"--budget {money(budget)}",
                f"; --budget {plan.spent_usd + asked:.2f} buys it all",
            )
    if run_budget is not None:
        line += f"; --run-budget {money(run_budget)} caps this run"
        if asked > run_budget and cap is None:
            cap = f"--run-budget {money(run_budget)}"
    click.echo(line, err=True)
    if cap is not None:
        click.echo(
            f"not all of it fits: {money(asked)} is asked for (pending jobs included); the "
            f"jobs past {cap} stay pending (exit 75){fix}",
            err=True,
        )
