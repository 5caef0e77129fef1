"""Read-only views of a ledger: ``status`` and ``export`` (safe while a run holds the lock)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrunner.errors import UsageError, counted
from batchrunner.jobs import Job
from batchrunner.ledger import BATCHES, Ledger
from batchrunner.paths import not_over_an_input, written_whole
from batchrunner.states import AT_PROVIDER, NEEDS_ATTENTION, JobState

if TYPE_CHECKING:
    import pandas as pd

EXPORT_COLUMNS = [
    "job_id",
    "id",
    "variant",
    "take",
    "seed",
    "row",
    "state",
    "request_id",
    "output_path",
    "sha256",
    "error",
    "cost_usd",
    "price_usd",
    "billed_usd",
    "billable_units",
    "bytes",
    "video_url",
    "submits",
    "submitted_at",
    "completed_at",
    # what the file turned out to be (batchrunner.verify); warnings joined with "; "
    "warnings",
    "media_duration",
    "media_width",
    "media_height",
    "media_audio",
    "video_codec",
    "audio_codec",
    "poster",
    "take_of",  # the job a new take re-rolls (`retry --new-take`, the gallery's re-roll)
    "model",  # the endpoint the job ran on (last: the columns before it keep their places)
]
FORMATS = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".xlsx"}  # what a manifest may be


def open_existing(path: str | Path) -> Ledger:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no ledger at {path}")
    return Ledger.open(path, create=False)


def status(ledger_path: str | Path, *, limit: int = 20, every: bool = False) -> dict[str, Any]:
    """Counts by state, spend, the last run, and the jobs that need the user's attention
    (``every``: every job, whatever its state)."""
    with open_existing(ledger_path) as ledger:
        counts = {s.value: n for s, n in ledger.counts().items()}
        attention = [  # not a job whose row was deleted: listed below, left alone
            {"job_id": j.job_id, "row": j.row, "state": j.state.value, "error": j.error}
            for j in (
                ledger.jobs() if every else ledger.in_sheet([*NEEDS_ATTENTION, JobState.COMPLETED])
            )
            if every or j.state is not JobState.COMPLETED or j.error  # completed: download failed
        ]
        warned = [
            {"job_id": j.job_id, "row": j.row, "warnings": j.warnings} for j in ledger.warned()
        ]
        if every:
            limit = len(attention)
        in_flight = sum(counts.get(s.value, 0) for s in AT_PROVIDER)
        unsettled = (JobState.SUBMITTING, *AT_PROVIDER, JobState.COMPLETED)
        # what `resume` would do anything with: jobs to send, to follow, or to download
        resumable = ledger.waiting()[0] + sum(counts.get(s.value, 0) for s in unsettled)
        billed, billed_jobs = ledger.billed()
        last = ledger.last_run(BATCHES)
        holder = _held(ledger, last)
        gone = [
            {"job_id": j.job_id, "row": j.row, "state": j.state.value}
            for j in ledger.not_in_last_manifest()
        ]
        return {
            "ledger": str(ledger.path),
            "total": sum(counts.values()),
            "counts": counts,
            "models": ledger.by_model(),  # endpoint -> jobs, counts by state, spend
            "in_flight": in_flight,
            "resumable": resumable,
            "spend_usd": ledger.spend(),
            "billed_usd": billed,
            "billed_jobs": billed_jobs,
            "last_run": None
            if last is None
            else {
                k: last.get(k)
                for k in ("id", "command", "started_at", "finished_at", "exit_code", "origin")
            }
            | {
                "concurrency": last["options"].get("concurrency"),
                "concurrency_limit": last.get("concurrency_limit"),
            }
            | _what_it_said(last)
            | {
                "held_by": holder,  # it is going on: the batch that holds the ledger, described
                # it never ended (killed, crashed, its machine went down): nothing holds it
                "never_ended": last["finished_at"] is None and holder is None,
                "waiting_for_network": _waiting(last, holder),
            },
            "not_in_manifest": gone[:limit],
            "not_in_manifest_total": len(gone),
            "not_in_manifest_rows": ledger.rows_taken(),  # --rows: the others are not gone
            "attention": attention[:limit],
            "attention_total": len(attention),
            "warnings": warned[:limit],  # done, but the file differs from the request
            "warnings_total": len(warned),
        }


def status_lines(info: dict[str, Any]) -> list[str]:
    """``batchrunner status``'s text from :func:`status` (and :func:`runs` as ``info["runs"]``):
    counts, spend, the last run and what it said at its end, then the jobs that need the user,
    each with its row and reason, ids in one column."""
    lines: list[str] = []
    counts = ", ".join(f"{n} {state}" for state, n in info["counts"].items()) or "no jobs"
    lines.append(f"{info['ledger']}: {counted(info['total'], 'job')} ({counts})")
    billed = (
        f"; billed ${info['billed_usd']:,.2f} ({counted(info['billed_jobs'], 'job')} reported)"
        if info["billed_jobs"]
        else ""
    )
    lines.append(
        f"estimated spend: ${info['spend_usd']:,.2f}{billed}; in flight: {info['in_flight']}"
    )
    if len(info["models"]) > 1:  # a sheet of several models: how each one went
        for endpoint, model in info["models"].items():
            states = ", ".join(f"{n} {state}" for state, n in model["counts"].items())
            jobs = counted(model["jobs"], "job")
            lines.append(f"  {endpoint}: {jobs} ({states}), ${model['spend_usd']:,.2f}")
    last = info["last_run"]
    if last:
        state = f"exit {last['exit_code']}"
        if last["held_by"]:
            state = f"running: {last['held_by']}"
        elif last["never_ended"]:
            state = "never ended"
        throttled = last["concurrency_limit"]
        lines.append(
            f"last run: {last['command']} #{last['id']} ({state})"
            + (
                f"; the provider throttled it (429): concurrency limit {throttled} of "
                f"{last['concurrency']}"
                if throttled is not None
                else ""
            )
        )
        if last["waiting_for_network"]:
            lines.append(f"  {_waiting_line(last['waiting_for_network'])}")
        if last["never_ended"]:
            lines.append(
                "  it was killed, crashed or its machine went down before it could say so; "
                + (
                    f"nothing it sent is lost: `batchrunner resume --ledger {info['ledger']}` "
                    "carries on"
                    if info["resumable"]
                    else "nothing is left for `resume` to do"
                )
            )
        if last["exit_code"]:  # what it said at its end, for the morning after a cron night
            if last["stopped"]:
                lines.append(f"  stopped early: {last['stopped']}")
            for reason in last["reasons"]:
                lines.append(f"  {reason}")
            said = last["next_command"]
            if said and (info["resumable"] or "batchrunner resume" not in said):
                lines.append(f"  next: {said}")  # not a resume with nothing left to do
    listed = [*info["attention"], *info["warnings"]]
    wide = max((len(str(job["row"])) for job in listed), default=0)  # ids in one column
    for job in info["attention"]:
        reason = f": {job['error']}" if job["error"] else ""
        lines.append(f"  {job['state']:>9}  row {job['row']!s:<{wide}}  {job['job_id']}{reason}")
    for job in info["warnings"]:
        said = "; ".join(job["warnings"])
        lines.append(f"  {'warning':>9}  row {job['row']!s:<{wide}}  {job['job_id']}: {said}")
    if info["warnings_total"] > len(info["warnings"]):
        lines.append(f"  ... and {info['warnings_total'] - len(info['warnings'])} more warnings")
    if info["not_in_manifest_total"]:
        rows = info["not_in_manifest_rows"]
        where = f"outside the last run's --rows {rows}" if rows else "no longer in the manifest"
        total = info["not_in_manifest_total"]
        lines.append(
            f"{counted(total, 'job')} {'is' if total == 1 else 'are'} {where} (left alone): "
            + ", ".join(job["job_id"] for job in info["not_in_manifest"])
        )
    if info["attention_total"] > len(info["attention"]):
        lines.append(
            f"  ... and {info['attention_total'] - len(info['attention'])} more (see export)"
        )
    if "runs" in info:
        lines.extend(runs_lines(info["runs"]))
    return lines


def runs_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line a run, under ``runs:``: ``#3  run  2026-12-02 01:30  1h12m  exit 75  ...``."""
    from batchrunner.planner import money

    lines = ["runs:" if runs else "runs: none yet"]
    for run in runs:
        started = str(run["started_at"] or "")[:16].replace("T", " ")
        took = _took(run["started_at"], run["finished_at"])
        ended = f"exit {run['exit_code']}"
        if run["held_by"]:
            ended = "running"
        elif run["never_ended"]:
            ended = "never ended"
        line = f"  #{run['id']:<4} {run['command']:<7} {started}  {took:>7}  {ended:<11}"
        if run["submitted"] is not None:
            line += f"  submitted {run['submitted']:>5}  downloaded {run['downloaded']:>5}"
        if run["run_spend_usd"] is not None:
            line += f"  committed {money(run['run_spend_usd'])}"
        if run["waiting_for_network"]:
            line += f"  {_waiting_line(run['waiting_for_network'])}"
        lines.append(line.rstrip())
    return lines


def _waiting_line(waiting: dict[str, Any]) -> str:
    """``waiting for the network since 14:03 (api.quickrouter.ai unreachable)``, the time in
    the machine's own zone."""
    from datetime import datetime

    since = datetime.fromisoformat(waiting["since"]).astimezone().strftime("%H:%M")
    return f"waiting for the network since {since} ({', '.join(waiting['hosts'])} unreachable)"


def _took(started: str | None, finished: str | None) -> str:
    from datetime import datetime

    if not started or not finished:
        return ""
    seconds = int(
        (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    )
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def runs(ledger_path: str | Path) -> list[dict[str, Any]]:
    """Every run of the ledger, oldest first: when, what, how it ended (``held_by``: going on
    now; ``never_ended``: killed, crashed), and what it submitted, downloaded and committed:
    counted from the ledger for a batch that did not say (``None`` for a ``cancel``)."""
    listed = []
    with open_existing(ledger_path) as ledger:
        found = ledger.db.execute(
            "select id, command, started_at, finished_at, exit_code, summary, waiting_since, "
            "waiting_for from runs order by id"
        ).fetchall()
        last = ledger.last_run(BATCHES)
        holder = _held(ledger, last)
        summed: dict[int, float] | None = None  # for runs that did not record theirs
        moved: dict[int, tuple[int, int]] | None = None
        for number, command, started, finished, code, said, since, hosts in found:
            try:
                summary = json.loads(said or "{}")
            except ValueError:
                summary = {}
            if finished is None and command in BATCHES:  # it never said: count what it did
                moved = ledger.moves_by_run() if moved is None else moved
                summary["submitted"], summary["downloaded"] = moved.get(number, (0, 0))
            spent = summary.get("run_spend_usd")  # recorded as it ended: exact
            if spent is None and "submitted" in summary:  # an older batchrunner's, or unended
                summed = ledger.spend_by_run() if summed is None else summed
                spent = summed.get(number, 0.0)
            held_by = holder if last is not None and number == last["id"] else None
            listed.append(
                {
                    "id": number,
                    "command": command,
                    "started_at": started,
                    "finished_at": finished,
                    "exit_code": code,
                    "held_by": held_by,
                    "never_ended": finished is None and held_by is None,
                    "waiting_for_network": _waiting(
                        {"waiting_since": since, "waiting_for": hosts}, held_by
                    ),
                    "submitted": summary.get("submitted"),
                    "downloaded": summary.get("downloaded"),
                    "run_spend_usd": spent,
                }
            )
    return listed


def _held(ledger: Ledger, last: dict[str, Any] | None) -> str | None:
    """The batch holding the ledger now, described, when ``last`` (its latest batch run) has
    not ended: it is going on; None when it ended, or never will (killed, crashed, its machine
    went down: nothing holds the ledger)."""
    if last is None or last["finished_at"] is not None:
        return None
    from batchrunner.lock import batch_holding

    return batch_holding(ledger.path)


def _waiting(run: dict[str, Any], holder: str | None) -> dict[str, Any] | None:
    """What a run going on (``holder``) is waiting for: the network, since when (UTC) and to
    which hosts (:class:`batchrunner.reach.Waits`); None when it waits for nothing, or has
    ended (one killed mid-wait waits no more)."""
    since, hosts = run.get("waiting_since"), run.get("waiting_for")
    if holder is None or not since:
        return None
    return {"since": since, "hosts": (hosts or "").split(", ")}


def _what_it_said(run: dict[str, Any]) -> dict[str, Any]:
    """Why a run ended as it did, from its stored summary: the stop line, the first reasons
    (some, like input files gone, are on no job) and the next command."""
    try:
        summary = json.loads(run.get("summary") or "{}")
    except ValueError:
        summary = {}
    return {
        "stopped": summary.get("stopped"),
        "reasons": summary.get("reasons") or [],
        "next_command": summary.get("next_command"),
    }


def rows(ledger: Ledger) -> list[dict[str, Any]]:
    """One flat record per job: the fixed columns, then the manifest's own columns."""
    records = []
    order = ledger.manifest_columns()
    for job in ledger.jobs():
        record: dict[str, Any] = {
            **identity(job.job_id, job.variant, job.input.get("seed")),
            "take_of": job.take_of,
            "row": job.row,
            "state": job.state.value,
            "request_id": job.request_id,
            "output_path": job.output_path,
            "sha256": job.sha256,
            "error": job.error,
            "cost_usd": job.spent_usd,
            "price_usd": job.price_usd,
            "billed_usd": job.billed_usd,
            "billable_units": job.billable_units,
            "bytes": job.bytes,
            "video_url": job.video_url,
            "submits": job.submits,
            "submitted_at": job.submitted_at,
            "completed_at": job.completed_at,
            **media_columns(job),
            "model": job.endpoint,
        }
        manifest_columns = dict(job.input)  # local files as their paths
        if job.output_name:
            manifest_columns["output"] = job.output_name
        manifest_columns.update(job.metadata)
        ranked = sorted(
            manifest_columns, key=lambda c: order.index(c) if c in order else len(order)
        )
        for key in ranked:  # the manifest's own order, then fields it did not name
            name = key if key not in record or key in SAME_FACT else f"{MANIFEST_PREFIX}{key}"
            record.setdefault(name, manifest_columns[key])  # never hides a ledger column
        records.append(record)
    return records


# A manifest column named like a ledger column (a sheet's US "state", its own "error" notes)
# is exported as "manifest.state": neither hides the other. The request's seed is the same fact.
MANIFEST_PREFIX = "manifest."
SAME_FACT = frozenset({"seed"})


def _text_not_formulas(sheet: Any, frame: pd.DataFrame) -> None:
    """Text that starts with ``=`` written as text: openpyxl takes it for a formula, so a prompt
    or a manifest note (``=1+1``) came out computed, and a server's error message could put a
    working ``=HYPERLINK(...)`` into the workbook a person opens."""
    for column, name in enumerate(frame.columns, start=1):
        values = frame[name]
        if values.dtype.kind != "O":  # numbers, flags, times: no text in them
            continue
        formulas = values.map(lambda value: isinstance(value, str) and value[:1] == "=")
        for row in formulas.to_numpy().nonzero()[0]:
            sheet.cell(row=int(row) + 2, column=column).data_type = "s"  # row 1: the header


def media_columns(job: Job) -> dict[str, Any]:
    """The verified facts of a job's file as flat columns (None until it is downloaded)."""
    media = job.media or {}
    return {
        "warnings": "; ".join(job.warnings) or None,
        "media_duration": media.get("duration"),
        "media_width": media.get("width"),
        "media_height": media.get("height"),
        "media_audio": media.get("audio"),
        "video_codec": media.get("video_codec"),
        "audio_codec": media.get("audio_codec"),
        "poster": job.poster,
    }


def identity(job_id: str, variant: str, seed: Any) -> dict[str, Any]:
    """``job_id`` split for people: the row's id, the variant label, the take, the seed."""
    take = next((int(p[1:]) for p in variant.split("~") if p[:1] == "t" and p[1:].isdigit()), 1)
    own = job_id.removesuffix(f"~{variant}") if variant else job_id
    return {"job_id": job_id, "id": own, "variant": variant, "take": take, "seed": seed}


def _whole_numbers(frame: pd.DataFrame, records: list[dict[str, Any]]) -> None:
    """Columns of whole numbers with gaps (a take's seed, a pending job's bytes and frame size)
    kept whole: pandas makes them floats, and seed 723923284 was written ``723923284.0``."""
    for name in frame.columns[frame.dtypes == "float64"]:
        if all(_whole(record.get(name)) for record in records):
            frame[name] = frame[name].astype("Int64")


def _whole(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def export(ledger_path: str | Path, destination: str | Path) -> int:
    """Write every job to ``destination`` (.csv, .tsv, .json, .jsonl, .parquet or .xlsx: the
    formats a manifest is read from); returns the count."""
    destination = Path(destination)
    if destination.suffix.lower() not in FORMATS:
        raise UsageError(
            f"cannot export to {destination.name!r}: use one of {', '.join(sorted(FORMATS))}"
        )
    with open_existing(ledger_path) as ledger:
        not_over_an_input(destination, ledger.inputs())
        records = rows(ledger)
    import pandas as pd  # only exports need it: `status` stays light

    frame = pd.DataFrame.from_records(records)
    _whole_numbers(frame, records)
    extra = [c for c in frame.columns if c not in EXPORT_COLUMNS]
    frame = frame.reindex(columns=EXPORT_COLUMNS + extra)
    suffix = destination.suffix.lower()
    lists = [c for c in extra if frame[c].map(lambda v: isinstance(v, list)).any()]
    if suffix not in (".json", ".jsonl"):  # a list cell as JSON text, as a manifest may give it
        frame[lists] = frame[lists].map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    try:
        with written_whole(destination) as part:
            if suffix in (".csv", ".tsv"):
                frame.to_csv(part, index=False, sep="\t" if suffix == ".tsv" else ",")
            elif suffix == ".xlsx":  # made in memory: a zip failing on disk cries in __del__
                book = io.BytesIO()
                with pd.ExcelWriter(book, engine="openpyxl") as writer:
                    frame.to_excel(writer, index=False, sheet_name="jobs")
                    _text_not_formulas(writer.sheets["jobs"], frame)
                part.write_bytes(book.getvalue())
            elif suffix in (".json", ".jsonl"):  # an array of objects, or one a line
                lines = suffix == ".jsonl"
                frame.to_json(part, orient="records", lines=lines, force_ascii=False, indent=None)
            else:
                frame.astype({c: "string" for c in extra}).to_parquet(part, index=False)
    except OSError as exc:
        raise UsageError(f"cannot write {destination}: {exc.strerror or exc}") from exc
    return len(frame)
