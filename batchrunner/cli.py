"""The ``batchrunner`` command: a thin skin over :mod:`batchrunner.batch` and friends.

Each command parses its options, calls one library function and prints the outcome. Errors a
user can cause become one readable line (a manifest's problems: one line each) and the exit code
from :class:`batchrunner.errors.ExitCode`; never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click

from batchrunner import batch, export
from batchrunner.errors import BatchrunnerError, ExitCode, ManifestError
from batchrunner.manifest import load_manifest
from batchrunner.models import DEFAULT_MODEL, get_model
from batchrunner.providers import PROVIDERS
from batchrunner.report import Progress, Summary
from batchrunner.simulator import simulate

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):
    """``90``, ``90s``, ``45m``, ``2h`` → seconds."""

    name = "duration"
    units: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        factor = self.units.get(text[-1:], None)
        number = text[:-1] if factor else text
        try:
            seconds = float(number) * (factor or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration (like 90s, 45m, 2h)", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        return seconds


DURATION = Duration()


def friendly_errors(fn: F) -> F:
    """Turn batchrunner errors and Ctrl-C into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ManifestError as exc:
            for problem in exc.problems:
                click.echo(f"{exc.source}: {problem}", err=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BatchrunnerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: state is saved; run `batchrunner resume` to carry on", err=True
            )
            sys.exit(ExitCode.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: int, log_file: str | None) -> Callable[[], None]:
    """Log batchrunner's own messages to stderr (and ``--log-file``); returns the function
    that undoes it when the command ends (so embedding callers and tests see no leftovers)."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("batchrunner")
    previous_level = logger.level
    logger.setLevel(level)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)

    def undo() -> None:
        logger.setLevel(previous_level)
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()

    return undo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchrunner")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for every request).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also write logs to this file.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, log_file: str | None) -> None:
    """Turn a spreadsheet into finished videos through asynchronous queue APIs.

    \b
    Example:
        export QUICKROUTER_API_KEY=...
        batchrunner validate shots.csv
        batchrunner run shots.csv --out videos --ledger shots.db
        batchrunner status --ledger shots.db
    """
    ctx.call_on_close(_setup_logging(verbose, log_file))


ledger_option = click.option(
    "--ledger",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("batchrunner.db"),
    show_default=True,
    help="The SQLite ledger recording every job; reuse it to resume.",
)


max_runtime_option = click.option(
    "--max-runtime",
    type=DURATION,
    default=None,
    help="Stop the whole run cleanly after this long (exit 75); e.g. 45m, 2h.",
)


def _report(summary: Summary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        click.echo(summary.line(), err=True)
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@ledger_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("outputs"),
    show_default=True,
    help="Folder the videos are written to.",
)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Endpoint id.")
@click.option(
    "--provider",
    type=click.Choice(sorted(PROVIDERS)),
    default="quickrouter",
    show_default=True,
    help="API preset (origin and auth scheme).",
)
@click.option("--base-url", help="Override the API origin (http:// only for loopback).")
@click.option(
    "--auth-scheme", type=click.Choice(["bearer", "key"]), help="Override the auth scheme."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Most jobs in flight at the provider.",
)
@click.option(
    "--rps",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    help="Most API requests per second.",
)
@click.option(
    "--downloads",
    "download_concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Most downloads at once.",
)
@click.option(
    "--poll-min",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    help="Shortest pause between status checks of a job (seconds).",
)
@click.option(
    "--poll-max",
    type=click.FloatRange(min=0.01),
    default=15.0,
    show_default=True,
    help="Longest pause between status checks of a job (seconds).",
)
@click.option(
    "--queue-timeout",
    type=DURATION,
    default="30m",
    show_default=True,
    help="Cancel and fail a job waiting in the provider's queue longer than this.",
)
@click.option(
    "--run-timeout",
    type=DURATION,
    default="20m",
    show_default=True,
    help="Cancel and fail a job running longer than this.",
)
@click.option(
    "--simulate", is_flag=True, help="Run against the built-in simulator (no key, no cost)."
)
@click.option(
    "--resubmit-unknown",
    is_flag=True,
    help="Submit again jobs whose earlier submit got no answer (may pay twice).",
)
@max_runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@friendly_errors
def run(manifest: Path, as_json: bool, **options: Any) -> None:
    """Validate MANIFEST, then run every row to a verified video file.

    Safe to repeat: jobs already done are skipped, unfinished ones are picked up first.
    The API key comes from BATCHRUNNER_API_KEY (or QUICKROUTER_API_KEY / FAL_KEY).

    \b
    Example:
        batchrunner run shots.csv --out videos --concurrency 4
        batchrunner run manifests/demo.csv --simulate
    """
    settings = batch.Settings(**options)
    progress = Progress()
    try:
        summary = batch.run_manifest(manifest, settings, observe=progress)
    finally:
        progress.close()
    _report(summary, as_json)


@cli.command()
@ledger_option
@max_runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@friendly_errors
def resume(ledger: Path, max_runtime: float | None, as_json: bool) -> None:
    """Carry on with the ledger's last run: poll, fetch and download what is unfinished.

    \b
    Example:
        batchrunner resume --ledger shots.db
    """
    _report(batch.resume(ledger, max_runtime=max_runtime), as_json)


@cli.command()
@ledger_option
@click.option("--failed/--no-failed", default=None, help="Send failed jobs again (default).")
@click.option("--unknown", is_flag=True, help="Send jobs whose submit got no answer again.")
@max_runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@friendly_errors
def retry(
    ledger: Path, failed: bool | None, unknown: bool, max_runtime: float | None, as_json: bool
) -> None:
    """Submit failed (and, if asked, unknown) jobs again, then resume.

    \b
    Example:
        batchrunner retry --ledger shots.db --failed --unknown
    """
    failed = (not unknown) if failed is None else failed
    _report(batch.retry(ledger, failed=failed, unknown=unknown, max_runtime=max_runtime), as_json)


@cli.command()
@ledger_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def status(ledger: Path, as_json: bool) -> None:
    """Show how many jobs are in each state, the spend, and jobs needing attention.

    \b
    Example:
        batchrunner status --ledger shots.db --json
    """
    info = export.status(ledger)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    counts = ", ".join(f"{n} {state}" for state, n in info["counts"].items()) or "no jobs"
    click.echo(f"{info['ledger']}: {info['total']} jobs ({counts})")
    click.echo(f"estimated spend: ${info['spend_usd']:,.2f}; in flight: {info['in_flight']}")
    last = info["last_run"]
    if last:
        state = "running" if last["finished_at"] is None else f"exit {last['exit_code']}"
        click.echo(
            f"last run: {last['command']} #{last['id']} ({state}); concurrency limit in force "
            f"{last['concurrency_limit']} of {last['concurrency']}"
        )
    for job in info["attention"]:
        click.echo(f"  {job['state']:>9}  row {job['row']}  {job['job_id']}: {job['error']}")
    if info["attention_total"] > len(info["attention"]):
        click.echo(
            f"  ... and {info['attention_total'] - len(info['attention'])} more (see export)"
        )


@cli.command(name="export")
@ledger_option
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write: .csv, .jsonl or .parquet.",
)
@friendly_errors
def export_command(ledger: Path, output: Path) -> None:
    """Write every job (state, request id, file, sha256, cost, manifest columns) to a file.

    \b
    Example:
        batchrunner export --ledger shots.db -o results.csv
    """
    count = export.export(ledger, output)
    click.echo(f"wrote {count} jobs to {output}", err=True)


@cli.command()
@ledger_option
@click.argument("job_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Cancel every unfinished job.")
@friendly_errors
def cancel(ledger: Path, job_ids: tuple[str, ...], everything: bool) -> None:
    """Cancel jobs at the provider (and pending ones in the ledger).

    \b
    Example:
        batchrunner cancel --ledger shots.db shot-03 shot-07
        batchrunner cancel --ledger shots.db --all
    """
    if bool(job_ids) == everything:
        raise click.UsageError("name the jobs to cancel, or pass --all")
    outcome = batch.cancel(ledger, None if everything else list(job_ids))
    for job_id, what in outcome.items():
        click.echo(f"{job_id}: {what}")


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Endpoint id.")
@friendly_errors
def validate(manifest: Path, model: str) -> None:
    """Check MANIFEST without sending anything; list every problem. Exit 0 when clean, 2 if not.

    \b
    Example:
        batchrunner validate shots.xlsx
    """
    loaded = load_manifest(manifest, get_model(model))
    for warning in loaded.warnings:
        click.echo(f"{manifest}: warning: {warning}", err=True)
    cost = sum(row.cost_usd or 0 for row in loaded.rows)
    click.echo(f"{manifest}: {len(loaded.rows)} rows OK; estimated cost ${cost:,.2f}")


cli.add_command(simulate)


def main() -> None:
    cli(prog_name="batchrunner")
