"""The Python API: plan and run a manifest, read the results back as a DataFrame.

::

    import batchrunner, pandas as pd

    shots = pd.DataFrame({"prompt": ["a red fox", "a barn owl"], "duration": [4, 8]})
    print(batchrunner.plan(shots, model="fal-ai/veo3.1").cost_usd)      # 4.80
    done = batchrunner.run(shots, model="fal-ai/veo3.1", simulate=True, ledger="shots.db")
    frame = batchrunner.results("shots.db")   # typed columns: bool, Int64, datetimes

A manifest is a file path (CSV, TSV, JSONL, JSON, XLSX, Parquet), a ``pandas.DataFrame`` or a
list of dicts; rows are validated and reported exactly as for a file, with row numbers (a bad
manifest raises :class:`~batchrunner.errors.ManifestError` with every problem). Options are the
CLI's, by their Python names (``concurrency=4``, ``budget=40``, ``matrix={"aspect_ratio": ["16:9",
"9:16"]}``, ``set={"duration": "4s"}``, ``count=2``, ``prompt_template=...``, ``rows="1-3"``); a
``batchrunner.toml`` beside a manifest file is read as the CLI reads it, the arguments win.

Nothing here configures logging, prints or exits. ``run`` works from plain scripts and from a
running event loop (a notebook): there it runs the batch on a worker thread and waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrunner import batch, expand
from batchrunner.config import KEYS, SHAPING_KINDS, TABLES, find_config, load_config
from batchrunner.errors import UsageError
from batchrunner.expand import Expansion
from batchrunner.planner import Plan
from batchrunner.report import Summary
from batchrunner.settings import NAMES, checked
from batchrunner.spelling import did_you_mean

if TYPE_CHECKING:
    import pandas as pd

EXPANSION_OPTIONS = ("set", "matrix", "prompt_template", "count", "dedupe", "strict", "rows")
SETTINGS_OPTIONS = NAMES
# the options named as the command line and batchrunner.toml name them (downloads=2,
# stream=False) where the setting's own name differs: the names the README shows
ALIASES = {key: name for key, name in KEYS.items() if key != name}


def plan(
    manifest: Any,
    *,
    config: str | Path | None = None,
    replace_changed: bool = False,
    **options: Any,
) -> Plan:
    """What ``manifest`` becomes (jobs, price, what the ledger already has, what ``budget``
    and ``run_budget`` hold back): what :func:`run` with the same options would do; sends
    nothing."""
    settings, expansion = _options(manifest, config, options)
    loaded = batch.load(manifest, settings, expansion)
    return batch.plan(loaded, settings, replace_changed=replace_changed)


def run(
    manifest: Any,
    *,
    config: str | Path | None = None,
    token: str | None = None,
    replace_changed: bool = False,
    **options: Any,
) -> Summary:
    """Validate ``manifest``, record its jobs in the ledger and run them to verified files.

    Returns the run's :class:`~batchrunner.report.Summary` (counts, spend, exit code, reasons);
    :func:`results` gives every job's outcome. The key comes from ``token`` or the environment,
    as for the CLI; ``simulate=True`` runs against the built-in simulator.
    """
    from batchrunner.runtime import beside_a_loop

    # a notebook's loop is busy: the batch runs beside it
    return beside_a_loop(_batch(manifest, config, token, replace_changed, options))


async def arun(
    manifest: Any,
    *,
    config: str | Path | None = None,
    token: str | None = None,
    replace_changed: bool = False,
    **options: Any,
) -> Summary:
    """:func:`run`, awaited: for async code (a web app, an ``asyncio`` script), whose
    event loop goes on while the batch runs on a thread with a loop of its own.

    Cancelling the awaiting task stops the batch as Ctrl-C stops one (nothing more is sent,
    the jobs in flight stay recorded: ``resume`` carries on), then the cancellation goes on.
    """
    from batchrunner.runtime import on_a_thread

    # the options are checked here: a wrong one raises before anything is awaited
    return await on_a_thread(_batch(manifest, config, token, replace_changed, options))


def _batch(
    manifest: Any,
    config: str | Path | None,
    token: str | None,
    replace_changed: bool,
    options: dict[str, Any],
) -> Callable[[], Summary]:
    """A run of ``manifest``, its options checked now, to call where it should run."""
    settings, expansion = _options(manifest, config, options)

    def go() -> Summary:
        return batch.run_manifest(
            manifest,
            settings,
            expansion=expansion,
            replace_changed=replace_changed,
            token=token,
        )

    return go


TIMESTAMPS = ("created_at", "submitted_at", "started_at", "completed_at", "done_at", "updated_at")
# The ledger's own columns keep one type whatever a ledger holds (a column with no value yet,
# `error` of a batch all done, `seed` of a model without one, was `object`)
TYPES: dict[str, Any] = {
    **dict.fromkeys(
        ("job_id", "id", "variant", "state", "request_id", "output_path", "sha256", "error",
         "video_url", "warnings", "video_codec", "audio_codec", "poster", "take_of", "model"),
        "string",
    ),
    **dict.fromkeys(
        ("take", "seed", "row", "bytes", "submits", "media_width", "media_height"), "Int64"
    ),
    **dict.fromkeys(
        ("cost_usd", "price_usd", "billed_usd", "billable_units", "media_duration"), "Float64"
    ),
    "media_audio": "boolean",
}  # fmt: skip


def results(ledger: str | Path) -> pd.DataFrame:
    """Every job in ``ledger`` as a DataFrame with typed columns.

    The ledger's columns first (``job_id``, ``id``, ``variant``, ``take``, ``seed``, ``row``,
    ``state``, ``output_path``, costs, times as UTC timestamps, ...), then the request's fields
    and the manifest's own columns with the types they had: booleans as booleans, whole numbers
    as integers (``Int64``, missing values allowed), text as text.
    """
    import pandas as pd

    from batchrunner import export

    with export.open_existing(ledger) as opened:
        records = export.rows(opened)
        jobs = {job.job_id: job for job in opened.jobs()}
    frame = pd.DataFrame.from_records(
        [
            {**r, "created_at": jobs[r["job_id"]].created_at, "done_at": jobs[r["job_id"]].done_at}
            for r in records
        ]
    )
    if frame.empty:
        return frame
    for name in TIMESTAMPS:
        if name in frame:
            frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
    frame = frame.convert_dtypes()
    for name, dtype in TYPES.items():
        if name in frame and frame[name].dtype != dtype:
            with contextlib.suppress(TypeError, ValueError):  # a seed of text: as it reads
                frame[name] = frame[name].astype(dtype)
    return frame


def _options(
    manifest: Any, config: str | Path | None, options: dict[str, Any]
) -> tuple[batch.Settings, Expansion]:
    """Settings and expansion from keyword options over the config file over the defaults."""
    for alias, name in ALIASES.items():
        if alias in options:
            if name in options:
                raise UsageError(f"{alias} and {name} are one option: give one of them")
            options = {name if key == alias else key: v for key, v in options.items()}
    unknown = sorted(set(options) - set(SETTINGS_OPTIONS) - set(EXPANSION_OPTIONS))
    if unknown:
        public = {name: alias for alias, name in ALIASES.items()}
        names = sorted(
            {public.get(n, n) for n in SETTINGS_OPTIONS} - {"retry", "stop_grace"}
            | set(EXPANSION_OPTIONS)
        )
        shown = ", ".join(name + did_you_mean(name, names) for name in unknown)
        raise UsageError(f"unknown option {shown}; options: {', '.join(names)}")
    path = Path(manifest) if isinstance(manifest, str | Path) else Path.cwd() / "rows"
    explicit = Path(config) if config is not None else None
    from_file = load_config(find_config(path, explicit))
    merged = {k: v for k, v in from_file.items() if k not in TABLES}
    merged.update({k: v for k, v in options.items() if k not in ("set", "matrix")})
    for name, kind in SHAPING_KINDS.items():  # checked here as the file's are when read
        if options.get(name) is not None:
            checked(name, kind, options[name])
    settings = batch.Settings(**_only(merged, SETTINGS_OPTIONS))  # typing "45m", paths...
    spec = batch.model_of(settings)
    given = {"set": options.get("set") or {}, "matrix": options.get("matrix") or {}}
    # every row on several models: the loader checks fields and values against each of them
    across = isinstance(given["matrix"], Mapping) and expand.varies_model(
        given["matrix"], from_file
    )
    fields = () if across else spec.fields
    for name, values in given.items():
        if not isinstance(values, Mapping):
            raise UsageError(f"{name} takes a dict of field: value, not {values!r}")
    expansion = expand.build(
        fields,
        from_file,
        defaults=given["set"],
        matrix=given["matrix"],
        prompt_template=merged.get("prompt_template"),
        count=merged.get("count"),
        dedupe=bool(merged.get("dedupe", False)),
        strict=bool(merged.get("strict", False)),
        rows=options.get("rows"),
        check=None if across else spec.value_problem,
    )
    return settings, expansion


def _only(values: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in names}
