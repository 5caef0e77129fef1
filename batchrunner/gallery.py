"""``report.html``: a static review gallery of a ledger — see what you bought, pick re-rolls.

One self-contained page (inline CSS, JS and data; no network, no CDN) that opens from
``file://`` or any static host. Videos, posters and thumbnails are *relative links* from the
page's folder, so keep the output folder and the ledger's ``.media`` folder where they are
(or host their common parent)::

    ledger ──► cards (one per job: poster, prompt, inputs, ids, state, warnings, cost, media)
           ──► header (counts by state, spend, elapsed, model)
           ──► page template (gallery_page.html) + the cards as inline JSON ──► report.html

The page renders cards in batches as you scroll (``IntersectionObserver``; images are
``loading="lazy"``), so a 2,000-job ledger opens at once; it filters by state, warnings and
any column that varies (matrix fields, metadata columns), searches prompts, sorts by row, cost
or state, and downloads the selected cards as a CSV of job ids that
``batchrunner retry --ids FILE --new-take`` turns into new takes (:mod:`batchrunner.takes`).

Input images: a local file gets a small JPEG thumbnail in ``<ledger>.media/thumbs/`` (made once
per image, by its sha256); an http(s) URL is shown as it is (only when online). A done job's
poster whose file is gone (``<ledger>.media`` deleted to save space, or not copied along with
the ledger) is made again from its video, where it would have been saved.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import anyio

from batchrunner.errors import DownloadError, UsageError
from batchrunner.jobs import Job, now
from batchrunner.ledger import OPTIONS_FROM, Ledger
from batchrunner.models import ModelSpec, lookup
from batchrunner.paths import not_over_an_input, written_whole
from batchrunner.states import JobState
from batchrunner.verify import Expected, media_dir, poster_path

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
THUMB_BOX = 160  # input-image thumbnails fit in this many pixels square
MAX_FACET_VALUES = 60  # a column with more distinct values is searchable, not a filter
_NOT_FACETS = {"prompt", "negative_prompt", "seed"}
_TAKE = re.compile(r"(?:^|~)t(\d+)$")


def report(ledger_path: str | Path, destination: str | Path | None = None) -> Path:
    """Write the gallery of the ledger at ``ledger_path``; returns the file written.

    ``destination`` defaults to ``report.html`` in the last run's output folder (else beside
    the ledger). Reads only: safe while a run holds the ledger.
    """
    path = Path(ledger_path)
    if not path.exists():
        raise UsageError(f"no ledger at {path}")
    with Ledger.open(path, create=False) as ledger:
        target = Path(destination) if destination is not None else default_destination(ledger)
        not_over_an_input(target, ledger.inputs())
        try:
            return write_report(ledger, target)
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from exc


def write_after_run(ledger: Ledger, out: Path) -> Path | None:
    """The gallery a run leaves in its output folder; a failure to write it costs only the
    page (logged), never the run's outcome."""
    try:
        return write_report(ledger, Path(out) / REPORT_NAME)
    except Exception as exc:  # the run's results are in the ledger whatever happens here
        logger.warning("could not write the review gallery in %s: %s", out, exc)
        return None


def default_destination(ledger: Ledger) -> Path:
    from batchrunner.settings import stored_out

    options = (ledger.last_run(OPTIONS_FROM) or {}).get("options", {})
    out = stored_out(options) if options.get("out") else None
    return Path(out) / REPORT_NAME if out else ledger.path.with_name(REPORT_NAME)


def write_report(ledger: Ledger, destination: Path) -> Path:
    """Render the page for ``ledger`` at ``destination`` (written whole, then renamed)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    pieces = render(ledger, destination.parent)
    with written_whole(destination) as part, part.open("w", encoding="utf-8") as page:
        page.writelines(pieces)
    logger.info("wrote the review gallery %s", destination)
    return destination


def render(ledger: Ledger, folder: Path) -> Iterator[str]:
    """The page's HTML in pieces, with links relative to ``folder`` (where it will be written).

    The data goes out a card at a time, never as one string: a ledger of 100,000 jobs is an
    80 MB page, which as one JSON text (then escaped, then put in the template) was held four
    times over."""
    links = _Links(folder)
    media = media_dir(ledger.path)
    thumbs = _Thumbs(media / "thumbs", links)
    posters = _Posters(media, links)
    specs: dict[str, ModelSpec | None] = {}
    cards = []
    for job in ledger.jobs():  # one at a time: only the cards are kept (20,000 jobs: 100 MB)
        if job.endpoint not in specs:
            specs[job.endpoint] = lookup(job.endpoint)
        cards.append(card(job, links, thumbs, specs[job.endpoint], posters))
    posters.make(cards)
    retry = f"batchrunner retry --ledger {_shell(str(ledger.path))} --ids selected.csv --new-take"
    template = resources.files("batchrunner").joinpath("gallery_page.html").read_text("utf-8")
    title = f"batchrunner — {ledger.path.name}"
    head, _, tail = template.replace("{{TITLE}}", _html(title)).partition("{{DATA}}")
    yield head
    # {"summary":…,"facets":…,"cards":[…],"retry":…}: the cards in between, one at a time
    yield _json({"summary": summary(ledger, cards, specs), "facets": facets(cards)})[:-1]
    yield ',"cards":['
    yield from (("," if n else "") + _json(one) for n, one in enumerate(cards))
    yield '],"retry":' + _json(retry) + "}"
    yield tail


def _json(value: Any) -> str:
    """``value`` as JSON for the page's data block, where ``<`` is written ``\\u003c``: a
    prompt's ``</script>`` cannot end the block."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c")


def card(
    job: Job, links: _Links, thumbs: _Thumbs, spec: ModelSpec | None, posters: _Posters
) -> dict[str, Any]:
    """What one job's card shows (keys are short: 2,000 of them go into the page)."""
    media = job.media or {}
    video = job.output_path if job.state is JobState.DONE else None
    # the model is a filter once a ledger holds jobs of two (a facet needs two values)
    values = {"model": job.endpoint, **_facet_values(job.input), **_facet_values(job.metadata)}
    take = _TAKE.search(job.variant or "")
    return {
        "id": job.job_id,
        "row": job.row,
        "variant": job.variant,
        "take": int(take.group(1)) if take else 1,
        "take_of": job.take_of,
        "seed": job.input.get("seed"),
        "state": job.state.value,
        "error": job.error,
        "warnings": job.warnings,
        "price": job.price_usd,
        "cost": job.spent_usd,
        "billed": job.billed_usd,
        "video": links(video) if video else None,
        "poster": posters.of(job, video),
        "prompt": job.input.get("prompt") if isinstance(job.input.get("prompt"), str) else "",
        "inputs": _inputs(job, links, thumbs, spec),
        "values": values,
        "media": {k: media.get(k) for k in ("duration", "width", "height", "audio")}
        | {"codecs": "/".join(c for c in (media.get("video_codec"), media.get("audio_codec")) if c)}
        if media
        else None,
    }


def summary(ledger: Ledger, cards: list[dict[str, Any]], models: Iterable[str]) -> dict[str, Any]:
    """The header: counts by state, money, elapsed time, models, when and from what."""
    counts = Counter(one["state"] for one in cards)
    runs = [
        dict(r)
        for r in ledger.db.table("runs").rows_where(
            "command in ('run', 'resume', 'retry')", order_by="id"
        )
    ]
    elapsed = sum(
        _seconds_between(r["started_at"], r["finished_at"]) for r in runs if r["finished_at"]
    )
    billed, billed_jobs = ledger.billed()
    return {
        "ledger": str(ledger.path),
        "total": len(cards),
        "counts": {s.value: counts[s.value] for s in JobState if counts[s.value]},
        "warned": sum(1 for one in cards if one["warnings"]),
        "spend": ledger.spend(),
        "estimate": round(sum(one["price"] or 0 for one in cards), 4),
        "billed": billed,
        "billed_jobs": billed_jobs,
        "elapsed": round(elapsed, 1),  # the runs' durations added up, not the idle time between
        "runs": len(runs),
        "models": sorted(models),
        "generated": now(),
    }


def facets(cards: list[dict[str, Any]]) -> dict[str, list[list[Any]]]:
    """Columns worth filtering by: those with 2..MAX_FACET_VALUES distinct values, each value
    with its count, in first-seen order (manifest order)."""
    seen: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for one in cards:
        for name, value in one["values"].items():
            seen[name][value] += 1
    return {
        name: [[value, n] for value, n in counter.items()]
        for name, counter in seen.items()
        if 2 <= len(counter) <= MAX_FACET_VALUES
    }


def _facet_values(values: dict[str, Any]) -> dict[str, str]:
    return {
        name: _text(value)
        for name, value in values.items()
        if name not in _NOT_FACETS
        and isinstance(value, str | int | float | bool)
        and not (
            isinstance(value, str) and (value.startswith(("data:", "/", "http")) or len(value) > 80)
        )
    }


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _inputs(
    job: Job, links: _Links, thumbs: _Thumbs, spec: ModelSpec | None
) -> list[dict[str, str]]:
    """Each input image: ``src`` (a thumbnail or the URL), ``href`` (the original), ``name``
    (its field) and ``label``, its file's name: what the page shows in its place when a URL
    does not load (offline, or a signed link that has expired)."""
    shown: list[dict[str, str]] = []
    for key, file in job.files.items():
        path = file.get("path")
        if not path:
            continue
        src = thumbs.of(Path(path), str(file.get("sha256") or ""))
        href = links(path)
        shown.append({"src": src or href, "href": href, "name": key, "label": Path(path).name})
    for name in spec.file_fields if spec else ():
        value = job.input.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith(("http://", "https://")):
                label = unquote(urlsplit(item).path.rstrip("/").rpartition("/")[2]) or item
                shown.append({"src": item, "href": item, "name": name, "label": label})
    return shown


class _Thumbs:
    """Small JPEGs of local input images, made once per image (named by its sha256)."""

    def __init__(self, folder: Path, links: _Links):
        self.folder = folder
        self.links = links
        self.made: dict[str, str | None] = {}

    def of(self, image: Path, sha256: str) -> str | None:
        key = sha256[:20] or re.sub(r"[^A-Za-z0-9]", "_", str(image))[-40:]
        if key not in self.made:
            self.made[key] = self._make(image, self.folder / f"{key}.jpg")
        return self.made[key]

    def _make(self, image: Path, dest: Path) -> str | None:
        if not dest.exists():
            try:
                from PIL import Image, ImageOps

                with Image.open(image) as opened:
                    small = ImageOps.exif_transpose(opened) or opened
                    small.thumbnail((THUMB_BOX, THUMB_BOX))
                    with written_whole(dest) as part:  # a name of its own: no one's link
                        small.convert("RGB").save(part, "JPEG", quality=80)
            except (OSError, ValueError) as exc:  # gone, unreadable, not an image Pillow knows
                logger.info("no thumbnail for %s: %s", image, exc)
                return None
        return self.links(str(dest))


class _Posters:
    """Each done job's poster. One whose file is gone is made again from its video by
    :meth:`make`, after every card is built: in the media check's worker processes, as a run
    checks clips (a decoder that crashes or hangs on a file costs that poster, not the page)."""

    def __init__(self, media: Path, links: _Links):
        self.media = media
        self.links = links
        self.wanted: dict[str, tuple[Path, Path]] = {}  # job id -> (video, poster to make)

    def of(self, job: Job, video: str | None) -> str | None:
        if job.poster and self.links.present(job.poster):
            return self.links(job.poster)
        if video is None:
            return None
        # where the run saves it, seen from here (the ledger may have been moved since)
        dest = poster_path(self.media, job.job_id)
        if self.links.present(str(dest)):
            return self.links(str(dest))
        if os.path.isfile(video):
            self.wanted[job.job_id] = (Path(video), dest)
        return None

    def make(self, cards: list[dict[str, Any]]) -> None:
        """Make the posters :meth:`of` found gone, and show them on their cards."""
        if not self.wanted:
            return
        from batchrunner.runtime import beside_a_loop

        made = beside_a_loop(lambda: anyio.run(_made_posters, list(self.wanted.values())))
        by_id = dict(zip(self.wanted, made, strict=True))
        for one in cards:
            if by_id.get(one["id"]):
                one["poster"] = self.links(str(by_id[one["id"]]))


async def _made_posters(wanted: list[tuple[Path, Path]]) -> list[str | None]:
    """Each ``(video, poster)``'s poster made, or None where it could not be."""
    from batchrunner.inspector import Inspectors, checking_processes

    inspectors = Inspectors(checking_processes(len(wanted)))
    made: list[str | None] = [None] * len(wanted)

    async def one(index: int, video: Path, dest: Path) -> None:
        try:
            made[index] = (await inspectors.inspect(video, Expected(), dest)).poster
        except DownloadError as exc:  # it does not decode, or its check crashed
            logger.info("no poster for %s: %s", video, exc)

    async with anyio.create_task_group() as group:
        for index, (video, dest) in enumerate(wanted):
            group.start_soon(one, index, video, dest)
    return made


class _Links:
    """Paths as URLs relative to the page's ``folder`` (an absolute ``file:`` URI across
    drives). Each path's own folder is worked out once: the videos of a gallery share one,
    so do their posters (20,000 cards: 0.4–0.5 s of ``os.path.relpath`` → 0.07–0.1 s)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._prefixes: dict[str, str] = {}
        self._listed: dict[str, set[str]] = {}

    def present(self, path: str) -> bool:
        """Whether the file is still there (a poster folder deleted by hand): each folder is
        listed once, not each file stat-ed."""
        head, name = os.path.split(path)
        names = self._listed.get(head)
        if names is None:
            try:
                names = set(os.listdir(head or os.curdir))
            except OSError:
                names = set()
            self._listed[head] = names
        return name in names

    def __call__(self, path: str) -> str:
        head, name = os.path.split(path)
        prefix = self._prefixes.get(head)
        if prefix is None:
            prefix = self._prefixes[head] = self._prefix(head or os.curdir)
        return prefix + quote(name)

    def _prefix(self, head: str) -> str:
        """``head`` relative to the page's folder, as a URL ending in ``/`` (or nothing)."""
        try:
            relative = Path(os.path.relpath(head, self.folder)).as_posix()
        except ValueError:
            return Path(head).resolve().as_uri() + "/"
        return "" if relative == "." else quote(relative) + "/"


def _seconds_between(first: str, last: str) -> float:
    start, end = datetime.fromisoformat(first), datetime.fromisoformat(last)
    return max(0.0, (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds())


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _shell(text: str) -> str:
    return (
        text
        if re.fullmatch(r"[A-Za-z0-9_./~:@%+=-]+", text)
        else "'" + text.replace("'", "'\\''") + "'"
    )
