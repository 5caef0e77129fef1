"""The ``batchrunner`` command: a thin skin over :mod:`batchrunner.batch` and friends.

Each command parses its options, calls one library function and prints the outcome. Errors a
user can cause become one readable line (a manifest's problems: one line each) and the exit code
from :class:`batchrunner.errors.ExitCode`; never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from batchrunner import errors, expand, settings
from batchrunner import models as registry
from batchrunner.config import CONFIG_NAME, TABLES, find_config, load_config
from batchrunner.errors import BatchrunnerError, ExitCode, ManifestError, Problem, counted
from batchrunner.expand import MAX_TAKES, Expansion, parse_matrix, parse_settings
from batchrunner.models import get_model
from batchrunner.settings import Settings
from batchrunner.simulator import simulate
from batchrunner.takes_cli import announce, retry_ids, retry_states_preview, takes_options

# What runs a command (HTTP, the ledger, pandas, PyAV) is imported by the command that needs
# it, inside its function: `batchrunner --help` and a mistyped option load only click and the
# option declarations.
if TYPE_CHECKING:
    from batchrunner.manifest import Manifest
    from batchrunner.planner import Plan
    from batchrunner.report import Summary

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):
    """``90``, ``90s``, ``45m``, ``2h`` → seconds (:func:`batchrunner.settings.seconds`)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return settings.seconds(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def friendly_errors(fn: F) -> F:
    """Turn batchrunner errors and Ctrl-C into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ManifestError as exc:
            for problem in exc.problems:  # the errors, then what only warns, marked so
                if problem.severity == "error":
                    click.echo(f"{exc.source}: {problem}", err=True)
            for problem in exc.problems:
                if problem.severity != "error":
                    click.echo(f"{exc.source}: warning: {problem}", err=True)
            click.echo(f"error: {exc.summary}", err=True)
            if exc.meanwhile:
                click.echo(exc.meanwhile, err=True)
            if kwargs.get("as_json") and not isinstance(exc, _Refused):
                _echo_failure(exc, exc.summary, exc.problems)
            sys.exit(exc.exit_code)
        except BatchrunnerError as exc:
            click.echo(f"error: {exc}", err=True)
            if kwargs.get("as_json"):
                _echo_failure(exc, str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            said = _interrupted(fn.__name__, kwargs.get("ledger"))
            click.echo(said, err=True)
            if kwargs.get("as_json"):
                click.echo(json.dumps({"exit_code": int(ExitCode.INTERRUPTED), "error": said}))
            sys.exit(ExitCode.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def _interrupted(command: str, ledger: Path | None) -> str:
    """What a Ctrl-C outside a batch's own loop (which stops cleanly and sums up) leaves: a
    command that reads changes nothing; one that writes has recorded every step it took."""
    if command == "run":
        return "interrupted: what was sent is recorded; run the same command again to carry on"
    if command in ("resume", "retry"):
        from batchrunner.report import ledger_option as ledger_flag

        where = ledger_flag(str(ledger)) if ledger is not None else ""
        return f"interrupted: what was sent is recorded; `batchrunner resume{where}` carries on"
    if command == "cancel":
        return "interrupted: each cancel made is recorded; run the same command for the rest"
    return "interrupted"


def _echo_failure(
    exc: BatchrunnerError, error: str, problems: Sequence[Problem] | None = None
) -> None:
    """With ``--json``, a command that fails before it has a summary still prints one object on
    stdout (a nightly ``--json >> runs.jsonl`` keeps a line for that night too): the errors
    as ``problems`` and what only warns as ``warnings``, as ``validate --json`` keeps them."""
    failure: dict[str, Any] = {"exit_code": int(exc.exit_code), "error": error}
    if problems is not None:
        failure["problems"] = [str(p) for p in problems if p.severity == "error"]
        failure["warnings"] = [str(p) for p in problems if p.severity != "error"]
    if getattr(exc, "meanwhile", None):  # a refused manifest: the jobs bought before
        failure["meanwhile"] = exc.meanwhile  # type: ignore[attr-defined]
    click.echo(json.dumps(failure))


def _setup_logging(
    verbose: int, log_file: str | None, *, stderr: bool = True
) -> Callable[[], None]:
    """Log batchrunner's own messages to stderr (and ``--log-file``); returns the function
    that undoes it when the command ends (so embedding callers and tests see no leftovers).
    ``stderr=False`` adds only the file and a lower level (the options after a subcommand)."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)] if stderr else []
    if log_file:
        refused = _not_a_log(Path(log_file))
        if refused is not None:
            raise click.BadParameter(refused, param_hint="'--log-file'")
        try:
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise click.BadParameter(f"cannot write {log_file}: {exc.strerror}") from None
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("batchrunner")
    previous_level = logger.level
    if stderr or verbose:
        logger.setLevel(min(level, logger.level or logging.WARNING))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)

    def undo() -> None:
        logger.setLevel(previous_level)
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()

    return undo


def _not_a_log(path: Path) -> str | None:
    """Why ``path`` may not take a log, whose lines are appended: a manifest's kind of file
    (the next night reads them as rows, and buys them), a ledger, a video."""
    from batchrunner.cells import FORMATS
    from batchrunner.paths import MP4_SUFFIXES, OTHER_VIDEO_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in FORMATS:
        what = f"a manifest's kind of file ({suffix}): a run would read its lines as rows"
    elif suffix in (".db", ".sqlite", ".sqlite3"):
        what = f"a ledger's kind of file ({suffix})"
    elif suffix in MP4_SUFFIXES | OTHER_VIDEO_SUFFIXES:
        what = f"a video ({suffix})"
    else:
        try:
            with path.open("rb") as file:
                if file.read(16) != b"SQLite format 3\0":
                    return None
        except OSError:
            return None  # none there yet (or unreadable: the handler says so)
        what = "a SQLite database (a ledger?)"
    return f"{path} is {what}; a log's lines are added to its end: name it {path.stem}.log"


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


def _command_logging(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``-v`` and ``--log-file`` after the subcommand work as they do before it."""
    verbose = value if param.name == "verbose" else 0
    log_file = value if param.name == "log_file" else None
    if verbose or log_file:
        ctx.call_on_close(_setup_logging(verbose, log_file, stderr=False))


def log_options(fn: F) -> F:
    """Accept the logging options where users put them: `batchrunner run ... --log-file F`."""
    fn = click.option(
        "--log-file",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_command_logging,
        help="Also write logs to this file.",
    )(fn)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_command_logging,
        help="More log output (-vv for every request).",
    )(fn)


def _click_type(kind: str) -> Any:
    """The click type an :class:`~batchrunner.settings.Option` kind names."""
    name, _, rest = kind.partition(":")
    if name == "path":
        return click.Path(dir_okay=False, path_type=Path)
    if name == "dir":
        return click.Path(file_okay=False, path_type=Path)
    if name == "choice":
        return click.Choice(rest.split(","))
    if name == "int":
        low, high = rest.split(":")
        return click.IntRange(int(low), int(high))
    if name == "float":
        return click.FloatRange(min=float(rest))
    if name == "duration":
        return DURATION
    return None


# the settings `batchrunner run` takes on its command line (the manifest's options come apart)
RUN_SETTINGS = (
    "ledger", "out", "provider", "base_url", "auth_scheme", "concurrency", "rps", "streams",
    "stream_stall", "download_concurrency", "poll_min", "poll_max", "queue_timeout",
    "run_timeout", "simulate", "resubmit_unknown", "max_runtime", "budget", "run_budget",
)  # fmt: skip

PLAN_SETTINGS = ("ledger", "budget", "run_budget", "resubmit_unknown")  # what run will buy
# how run buys it: plan (and validate, all of run's) take these too, unshown and unused, so
# that a run command previews as it stands with `run` changed to `plan` (rather than "no such
# option --concurrency")
HOW_TO_RUN = tuple(name for name in RUN_SETTINGS if name not in PLAN_SETTINGS)


def settings_options(*names: str, hidden: bool = False) -> Callable[[F], F]:
    """The click options of these settings, built from their one declaration
    (:mod:`batchrunner.settings`): flag, type, default and help (``hidden``: not in ``--help``)."""
    declared, defaults = settings.options(), settings.Settings()

    def decorate(fn: F) -> F:
        for name in reversed(names):
            how, flag = declared[name], settings.flag_of(name)
            assert flag is not None, f"{name} has no command-line flag"
            default = getattr(defaults, name)
            if how.kind == "flag":
                toggle = "/" in flag  # --stream/--no-stream is a flag already
                kind: dict[str, Any] = {"show_default": True} if toggle else {"is_flag": True}
                fn = click.option(
                    flag, name, default=default, help=how.help, hidden=hidden, **kind
                )(fn)
                continue
            fn = click.option(
                flag,
                name,
                type=_click_type(how.kind),
                default=how.shown if how.shown is not None else default,
                show_default=default is not None,
                help=how.help,
                hidden=hidden,
            )(fn)
        return fn

    return decorate


ledger_option = settings_options("ledger")
max_runtime_option = settings_options("max_runtime")
budget_options = settings_options("budget", "run_budget")


def run_only_flags(*flags: str) -> Callable[[F], F]:
    """Run's ``flags`` that change nothing in a check or a plan, taken unshown (and unused) by
    ``validate`` and ``plan`` beside :data:`HOW_TO_RUN`: a run command checks as it stands."""

    def decorate(fn: F) -> F:
        for flag in flags:
            name = flag.strip("-").replace("-", "_") + "_unused"
            fn = click.option(flag, name, is_flag=True, hidden=True, expose_value=False)(fn)
        return fn

    return decorate


def manifest_options(fn: F) -> F:
    """What shapes the jobs a manifest becomes: shared by run, plan and validate."""
    options = [
        click.option(
            "--count",
            type=click.IntRange(1, MAX_TAKES),
            help="Takes of every row, each with its own seed (a count column overrides it).",
        ),
        click.option(
            "--matrix",
            multiple=True,
            metavar="FIELD=V1,V2",
            help="Every row for every value (repeat for a grid): --matrix aspect_ratio=16:9,9:16; "
            "model=ID1,ID2 runs every row on each model.",
        ),
        click.option(
            "--prompt-template",
            help="Build each prompt from the row's columns: 'A {subject} in the style of {style}'.",
        ),
        click.option(
            "--set",
            "set_values",
            multiple=True,
            metavar="FIELD=VALUE",
            help="Fill FIELD where its cell is empty (repeatable): --set duration=8s",
        ),
        click.option(
            "--rows",
            metavar="SPEC",
            help="Only these rows, numbered as plan and errors number them: --rows 1-3,7 "
            "to try a few before the batch; visible: those a workbook shows (not hidden by a "
            "filter).",
        ),
        click.option("--dedupe", is_flag=True, help="Keep identical rows (no id) once."),
        click.option("--strict", is_flag=True, help="Unknown columns are errors, not warnings."),
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"Settings file (default: {CONFIG_NAME} beside the manifest, if present).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return settings_options("model", "allow_unregistered", "price_per_job", "sheet", "check_urls")(
        fn
    )


def _expansion(ctx: click.Context, manifest: Path, params: dict[str, Any]) -> Expansion:
    """Merge the config file into ``params`` (the command line wins) and build the expansion."""
    config = load_config(find_config(manifest, params.pop("config_path")))
    by_name = {p.name: p for p in ctx.command.params}
    for name, value in config.items():
        source = ctx.get_parameter_source(name)
        if name in params and name not in TABLES and source in (ParameterSource.DEFAULT, None):
            params[name] = by_name[name].type_cast_value(ctx, value)
    spec = get_model(
        params["model"],
        allow_unregistered=params["allow_unregistered"],
        price_per_job=params["price_per_job"],
    )
    matrix = params.pop("matrix")
    # every row on several models: the loader checks fields and values against each of them
    across = expand.varies_model(matrix, config)
    fields = () if across else spec.fields
    return expand.build(
        fields,
        config,
        check=None if across else spec.value_problem,
        defaults=parse_settings(params.pop("set_values"), ()),  # their fields: build's
        matrix=dict(parse_matrix(matrix, ())),
        prompt_template=params.pop("prompt_template"),
        count=params.pop("count"),
        dedupe=params.pop("dedupe"),
        strict=params.pop("strict"),
        rows=params.pop("rows"),
    )


def _model_settings(options: dict[str, Any]) -> Settings:
    """The settings plan and validate need: which model, how to read the manifest."""
    names = ("model", "allow_unregistered", "price_per_job", "sheet", "check_urls")
    return Settings(**{name: options[name] for name in names})


def _print_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(plan), indent=2))
    else:
        for line in plan.lines():
            click.echo(line)


def _report(summary: Summary, as_json: bool) -> None:
    """Quiet on success, loud otherwise: whatever stdout carries (the line, or JSON with
    --json), a run that is not all done also explains itself on stderr, so cron mails it."""
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    if summary.exit_code != 0:
        click.echo(summary.attention(), err=True)
    elif not as_json:
        click.echo(summary.line())
    sys.exit(summary.exit_code)


@cli.command()
@log_options
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@settings_options(*RUN_SETTINGS)
@manifest_options
@click.option(
    "--replace-changed",
    is_flag=True,
    help="A row whose id is in the ledger with other content replaces that job, even once "
    "sent (a row never sent takes its edits without this flag).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan only: nothing sent or recorded.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.pass_context
@friendly_errors
def run(
    ctx: click.Context,
    manifest: Path,
    as_json: bool,
    dry_run: bool,
    replace_changed: bool,
    **options: Any,
) -> None:
    """Validate MANIFEST, then run every row to a verified video file.

    Safe to repeat: jobs already done are skipped, unfinished ones are picked up first.
    The API key comes from BATCHRUNNER_API_KEY (or QUICKROUTER_API_KEY / FAL_KEY).

    \b
    Example:
        batchrunner run shots.csv --out videos --concurrency 4 --budget 120
        batchrunner run shots.csv --matrix aspect_ratio=16:9,9:16 --count 2 --dry-run
        batchrunner run manifests/demo.csv --simulate
    """
    from batchrunner import batch
    from batchrunner.report import Progress

    expansion = _expansion(ctx, manifest, options)
    settings = Settings(**options)
    if dry_run:
        loaded = batch.load(manifest, settings, expansion)
        _show_plan(loaded, settings, as_json, replace_changed=replace_changed)
        if not as_json:
            click.echo("dry run: nothing was recorded or sent")
        return
    with Progress() as progress:
        summary = batch.run_manifest(
            manifest,
            settings,
            expansion=expansion,
            replace_changed=replace_changed,
            observe=progress,
        )
    _report(summary, as_json)


@cli.command(name="plan")
@log_options
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@settings_options(*PLAN_SETTINGS)
@settings_options(*HOW_TO_RUN, hidden=True)
@run_only_flags("--dry-run")
@manifest_options
@click.option(
    "--replace-changed",
    is_flag=True,
    help="Plan as run --replace-changed would: edited rows replace their jobs.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "-o",
    "--output",
    "bodies",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the exact request bodies, one JSON line per job.",
)
@click.pass_context
@friendly_errors
def plan_command(
    ctx: click.Context,
    manifest: Path,
    as_json: bool,
    bodies: Path | None,
    replace_changed: bool,
    **options: Any,
) -> None:
    """Show what MANIFEST becomes without sending anything: jobs, price, and per job what
    `run` with the same options will do (the same planner decides both). Run's other options
    (--out, --concurrency, --simulate...) are taken and change nothing here, so a run
    command previews as it stands with `run` changed to `plan`.

    \b
    Example:
        batchrunner plan shots.csv --matrix resolution=720p,1080p --count 3
        batchrunner plan shots.csv --json -o plan.jsonl
    """
    from batchrunner import batch
    from batchrunner.paths import not_over_an_input
    from batchrunner.planner import write_bodies

    expansion = _expansion(ctx, manifest, options)
    settings = Settings(
        **_model_settings(options).__dict__ | {k: options[k] for k in PLAN_SETTINGS}
    )
    loaded = batch.load(manifest, settings, expansion, log_warnings=False)
    for warning in loaded.warnings:
        click.echo(f"{manifest}: warning: {warning}", err=True)
    if bodies is not None:
        inputs = [(manifest, "the manifest"), (settings.ledger, "the ledger")]
        not_over_an_input(bodies, [(Path(p), what) for p, what in inputs])
        count = write_bodies(loaded, bodies, settings.ledger)
        click.echo(f"wrote the request bodies of {counted(count, 'job')} to {bodies}", err=True)
    _show_plan(loaded, settings, as_json, replace_changed=replace_changed)


def _show_plan(
    loaded: Manifest, settings: Settings, as_json: bool, *, replace_changed: bool
) -> None:
    """Print the plan; edited rows run would refuse end it like run: exit 2, each named."""
    from batchrunner import batch
    from batchrunner.planner import refusals

    plan = batch.plan(loaded, settings, replace_changed=replace_changed)
    _print_plan(plan, as_json)
    problems = refusals(plan.decisions, loaded)
    if problems:
        raise _Refused(str(loaded.source), problems)


class _Refused(ManifestError):
    """Edited rows the plan just printed refuses: its ``--json`` already holds them."""


@cli.command()
@log_options
@ledger_option
@max_runtime_option
@budget_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@friendly_errors
def resume(
    ledger: Path,
    max_runtime: float | None,
    budget: float | None,
    run_budget: float | None,
    as_json: bool,
) -> None:
    """Carry on with the ledger's last run: poll, fetch and download what is unfinished.

    \b
    Example:
        batchrunner resume --ledger shots.db
    """
    from batchrunner import batch
    from batchrunner.report import Progress

    with Progress() as progress:
        summary = batch.resume(
            ledger,
            max_runtime=max_runtime,
            budget=budget,
            run_budget=run_budget,
            observe=progress,
        )
    _report(summary, as_json)


@cli.command()
@log_options
@ledger_option
@click.option("--failed/--no-failed", default=None, help="Send failed jobs again (default).")
@click.option("--unknown", is_flag=True, help="Send jobs whose submit got no answer again.")
@click.option("--cancelled", is_flag=True, help="Send cancelled jobs again.")
@click.option("--expired", is_flag=True, help="Buy again jobs whose result expired unfetched.")
@click.option(
    "--downloads",
    is_flag=True,
    help="Fetch download_failed videos again (nothing is submitted or paid).",
)
@max_runtime_option
@budget_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@takes_options
@friendly_errors
def retry(
    ledger: Path,
    failed: bool | None,
    unknown: bool,
    cancelled: bool,
    expired: bool,
    downloads: bool,
    max_runtime: float | None,
    budget: float | None,
    run_budget: float | None,
    as_json: bool,
    **by_ids: Any,
) -> None:
    """Submit failed (and, if asked, unknown, cancelled or expired) jobs again, then resume.
    With --ids, only the jobs a file lists (the review gallery's CSV); with --new-take, a new
    take of each.

    New submits are priced against --budget and --run-budget like any other. Without
    options: failed jobs.

    \b
    Example:
        batchrunner retry --ledger shots.db --failed --unknown
        batchrunner retry --ledger shots.db --cancelled --expired --budget 50
        batchrunner retry --ledger shots.db --downloads
        batchrunner retry --ledger shots.db --ids selected.csv --new-take --budget 60
    """
    from batchrunner import batch
    from batchrunner.report import Progress

    if by_ids["ids_file"] is not None or by_ids["new_take"]:
        summary = retry_ids(
            ledger,
            unknown=unknown,
            max_runtime=max_runtime,
            budget=budget,
            run_budget=run_budget,
            **by_ids,
        )
        if summary is not None:  # None: --dry-run
            _report(summary, as_json)
        return
    others = unknown or cancelled or expired or downloads
    failed = (not others) if failed is None else failed
    flags = {"failed": failed, "unknown": unknown, "cancelled": cancelled, "expired": expired}
    if by_ids["dry_run"]:
        retry_states_preview(ledger, batch.retry_states(**flags), downloads, budget, run_budget)
        return
    with Progress() as progress:
        summary = batch.retry(
            ledger,
            failed=failed,
            unknown=unknown,
            cancelled=cancelled,
            expired=expired,
            downloads=downloads,
            max_runtime=max_runtime,
            budget=budget,
            run_budget=run_budget,
            observe=progress,
            announce=lambda plan: announce(plan, budget, run_budget),
        )
    _report(summary, as_json)


@cli.command()
@log_options
@ledger_option
@click.option("--all", "every", is_flag=True, help="List every job, not only those needing you.")
@click.option(
    "--runs", "history", is_flag=True, help="List every run: when, how it ended, what it cost."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def status(ledger: Path, every: bool, history: bool, as_json: bool) -> None:
    """Show how many jobs are in each state, the spend, and jobs needing attention.

    \b
    Example:
        batchrunner status --ledger shots.db --json
        batchrunner status --ledger shots.db --all
        batchrunner status --ledger shots.db --runs
    """
    from batchrunner import export

    info = export.status(ledger, every=every)
    if history:
        info["runs"] = export.runs(ledger)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for line in export.status_lines(info):
        click.echo(line)


@cli.command(name="export")
@log_options
@ledger_option
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write: .csv, .tsv, .json, .jsonl, .parquet or .xlsx.",
)
@friendly_errors
def export_command(ledger: Path, output: Path) -> None:
    """Write every job (state, request id, file, sha256, cost, manifest columns) to a file.

    \b
    Example:
        batchrunner export --ledger shots.db -o results.csv
    """
    from batchrunner import export

    count = export.export(ledger, output)
    click.echo(f"wrote {counted(count, 'job')} to {output}", err=True)


@cli.command(name="report")
@ledger_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The page to write (default: report.html in the last run's --out folder).",
)
@friendly_errors
def report_command(ledger: Path, output: Path | None) -> None:
    """Write the review gallery: one static HTML page with a card per job (poster, prompt,
    inputs, state, warnings, cost), filters, search, and a CSV of selected jobs for
    `retry --ids FILE --new-take`. Every run writes it too.

    \b
    Example:
        batchrunner report --ledger shots.db
        batchrunner report --ledger shots.db -o review/day2.html
    """
    from batchrunner import gallery

    written = gallery.report(ledger, output)
    click.echo(f"wrote {written}", err=True)


@cli.command()
@log_options
@ledger_option
@click.argument("job_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Cancel every unfinished job.")
@friendly_errors
def cancel(ledger: Path, job_ids: tuple[str, ...], everything: bool) -> None:
    """Cancel jobs at the provider (and pending ones in the ledger).

    With --all, a run, resume or retry busy with the ledger is stopped first, as
    by Ctrl-C: it buys nothing more and keeps what it sent. Jobs named are
    cancelled beside it, and it keeps running with the others: it never sends a
    job cancelled before it was sent, and records how the others end.

    \b
    Example:
        batchrunner cancel --ledger shots.db shot-03 shot-07
        batchrunner cancel --ledger shots.db --all
    """
    from batchrunner import batch
    from batchrunner.report import ledger_option as ledger_flag

    if bool(job_ids) == everything:
        raise click.UsageError("name the jobs to cancel, or pass --all")
    outcome = batch.cancel(ledger, None if everything else list(job_ids))
    for job_id, what in outcome.jobs.items():
        click.echo(f"{job_id}: {what}")
    if not outcome.jobs and not outcome.stopped:  # --all: said, not silence
        click.echo(f"nothing to cancel: no job of {ledger} is pending or at the provider")
    if outcome.running:
        click.echo(
            f"the batch busy with the ledger ({outcome.running}) keeps running with the others",
            err=True,
        )
    if outcome.stopped and outcome.unfinished:
        click.echo(
            f"the batch that was busy with the ledger is stopped; "
            f"`batchrunner resume{ledger_flag(str(ledger))}` carries on with its "
            f"{outcome.unfinished} unfinished jobs",
            err=True,
        )


@cli.command()
@log_options
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@manifest_options
@settings_options(*RUN_SETTINGS, hidden=True)
@run_only_flags("--dry-run", "--replace-changed")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.pass_context
@friendly_errors
def validate(ctx: click.Context, manifest: Path, as_json: bool, **options: Any) -> None:
    """Check MANIFEST without sending anything; list every problem. Exit 0 when clean, 2 if not.
    Run's options are taken too, so a run command checks as it stands with `run` changed to
    `validate`.

    \b
    Example:
        batchrunner validate shots.xlsx --sheet "Day 2"
        batchrunner validate shots.csv --strict --json
    """
    from batchrunner import batch

    expansion = _expansion(ctx, manifest, options)
    loaded = batch.load(manifest, _model_settings(options), expansion, log_warnings=False)
    for warning in loaded.warnings:
        click.echo(f"{manifest}: warning: {warning}", err=True)
    cost = round(sum(row.cost_usd or 0 for row in loaded.rows), 4)
    unpriced = sum(row.cost_usd is None for row in loaded.rows)
    specs = {e: loaded.specs.get(e) or loaded.spec for e in loaded.endpoints}
    unconfirmed = sorted(e for e, spec in specs.items() if spec.price and not spec.price.confirmed)
    if as_json:  # what a script checking sheets before the night wants; failures: friendly_errors
        said = {
            "exit_code": 0, "manifest": str(manifest), "rows": loaded.records,
            "jobs": len(loaded.rows), "models": sorted(loaded.endpoints),
            "cost_usd": None if unpriced else cost, "unpriced_jobs": unpriced,
            "price_unconfirmed": unconfirmed,
            "warnings": [str(warning) for warning in loaded.warnings],
        }  # fmt: skip
        click.echo(json.dumps(said))
        return
    jobs = f" -> {counted(len(loaded.rows), 'job')}" if len(loaded.rows) != loaded.records else ""
    if len(loaded.endpoints) > 1:
        jobs += f" for {len(loaded.endpoints)} models"
    price = (
        f"${cost:,.2f}" if not unpriced else f"unknown ({counted(unpriced, 'job')} without a price)"
    )
    if unconfirmed:  # as `plan` says it: an inferred price may be off
        price += f"; price unconfirmed for {', '.join(unconfirmed)} (`batchrunner plan` says more)"
    rows = counted(loaded.records, "row")
    click.echo(f"{manifest}: {rows}{loaded.taken} OK{jobs}; estimated cost {price}")


cli.add_command(simulate)


# ---------------------------------------------------------------------- models


@cli.group()
def models() -> None:
    """The model registry: the endpoints batchrunner validates and prices.

    Shipped models are built in; `models add` writes your own to the folder in
    $BATCHRUNNER_MODELS_DIR (default ~/.config/batchrunner/models), which wins over them.

    \b
    Example:
        batchrunner models list
        batchrunner models show fal-ai/veo3.1/image-to-video
        batchrunner models add openapi.json --price "0.50/video"
    """


def _model_summary(spec: registry.ModelSpec) -> dict[str, Any]:
    example = spec.cost(spec.complete({}))
    return {
        "endpoint_id": spec.endpoint_id,
        "title": spec.title,
        "price": spec.price.describe() if spec.price else None,
        "price_confirmed": spec.price.confirmed if spec.price else None,
        "price_with_defaults_usd": example,
        "origin": spec.origin,
    }


@models.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def models_list(as_json: bool) -> None:
    """List every registered endpoint with its price rule.

    \b
    Example:
        batchrunner models list --json
    """
    from batchrunner.planner import money

    summaries = [_model_summary(spec) for _, spec in sorted(registry.registry().items())]
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
        return
    width = max(len(s["endpoint_id"]) for s in summaries)
    for s in summaries:
        flag = "" if s["price_confirmed"] else "  [price unconfirmed]"
        origin = "" if s["origin"] == "shipped" else f"  (from {s['origin']})"
        cost = money(s["price_with_defaults_usd"])
        click.echo(f"{s['endpoint_id']:<{width}}  {cost:>7}  {s['title']}{flag}{origin}")
    click.echo(
        f"{len(summaries)} models (price: one job with the model's defaults; "
        f"`models show ID` for its rule); your own go in {registry.user_dir()}",
        err=True,
    )


@models.command(name="show")
@click.argument("endpoint_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def models_show(endpoint_id: str, as_json: bool) -> None:
    """Show a model's fields (types, defaults, choices, limits) and its price rule.

    \b
    Example:
        batchrunner models show fal-ai/veo3.1/reference-to-video
    """
    spec = registry.get_model(endpoint_id)
    fields = registry.describe_fields(spec)
    if as_json:
        price = spec.price.to_json() if spec.price else None
        info = {**_model_summary(spec), "output_field": spec.output_field, "fields": fields}
        click.echo(json.dumps({**info, "price_rule": price, "source": spec.source}, indent=2))
        return
    click.echo(f"{spec.endpoint_id}  ({spec.title}; {spec.origin})")
    click.echo(f"source: {spec.source}")
    for note in spec.notes:
        click.echo(f"note: {note}")
    for f in fields:
        parts = [f["kind"], "required" if f["required"] else ""]
        if f["default"] is not None:
            parts.append(f"default {f['default']!r}")
        if f["choices"]:
            parts.append("one of " + ", ".join(f["choices"]))
        parts += [
            f"at most {v / 2**20:g} MB" if k == "max_file_bytes" else f"{k} {v}"
            for k, v in f["limits"].items()
        ]
        click.echo(f"  {f['name']:<24} " + "; ".join(p for p in parts if p))
    click.echo(f"output: result.{spec.output_field}.url")
    if spec.price is None:
        click.echo("price: unknown")
        return
    click.echo(f"price: {spec.price.describe()}")
    if not spec.price.confirmed:
        click.echo(f"price unconfirmed: {spec.price.note or 'not on fal.ai'}")
    elif spec.price.note:
        click.echo(f"price note: {spec.price.note}")
    if spec.price.source:
        click.echo(f"price source: {spec.price.source}")


@models.command(name="add")
@click.argument("document", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--price", required=True, metavar="RULE", help="The price rule (see README).")
@click.option(
    "--replace",
    is_flag=True,
    help="Overwrite a model you added before, or override a shipped one of the same id.",
)
@friendly_errors
def models_add(document: Path, price: str, replace: bool) -> None:
    """Import an endpoint from fal's OpenAPI document (openapi.json?endpoint_id=...).

    \b
    Example:
        batchrunner models add luma-ray-2.json --price "0.50/video if resolution=540p; 1.00/video"
        batchrunner models add kling.json --price "0.35 + 0.07/s over 5s"
        batchrunner models add veo3-i2v.json --price "0.40/s" --replace
    """
    spec, path = registry.add_model(document, price, replace=replace)
    click.echo(f"added {spec.endpoint_id} ({len(spec.fields)} fields) to {path}")
    click.echo(f"price: {spec.price.describe() if spec.price else 'unknown'}")
    if isinstance(spec.audio, str):
        click.echo(f"audio: {spec.audio} switches sound on; each clip is checked for it")
    shipped = registry.shipped_model(spec.endpoint_id)
    if shipped is not None:
        click.echo(
            f"replaced: the shipped {spec.endpoint_id} ({registry.describe_entry(shipped)}) "
            f"is overridden by this file; delete {path} to go back to it"
        )


@models.command(name="price")
@click.argument("endpoint_id")
@click.argument("rule")
@friendly_errors
def models_price(endpoint_id: str, rule: str) -> None:
    """Give a model another price rule (e.g. one fal's page now confirms).

    \b
    Example:
        batchrunner models price fal-ai/veo3.1/fast "0.35/s if resolution=4k; 0.10/s"
    """
    spec, path = registry.set_price(endpoint_id, rule)
    click.echo(f"{spec.endpoint_id}: price {spec.price.describe() if spec.price else '?'}")
    click.echo(f"written to {path}", err=True)


def main() -> None:
    errors.leave_at_once = os._exit  # a second Ctrl-C leaves at once: the ledger is committed
    cli(prog_name="batchrunner")
