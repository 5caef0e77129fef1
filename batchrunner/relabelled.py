"""Jobs the ledger holds under another label: what a changed ``--count`` or ``--matrix`` plans
again.

A variant label names a row's matrix values and take (``720p~t2``); a row with an ``id`` cell
has it in its job ids (``fox~720p~t2``). Change those options and labels change, while some
requests do not:

* **--count 1 → 2**: take 1 is ``fox~t1`` now, and ``fox`` was bought; **2 → 1**: the other way
  round. A take has a seed of its own (the row's, plus the take number less one, or one derived
  from the row), so a row's first take asks what its one take asked, the seed aside.
* **a --matrix of a field's default** (``resolution=720p,1080p``, where 720p is the default):
  ``fox~720p`` asks exactly what ``fox`` asked.
* **a take bought by** ``retry --new-take`` (``fox~t2``, with a seed it picked) is take 2 of
  ``--count 2``.

:func:`as_recorded` gives each such planned job the recorded job's id, label, output name and
request before the planner looks at it: ``plan`` and ``run`` then see what it is (done, on its
way, failed and left for ``retry``) instead of a new job buying the same video again, or a row
to refuse. A recorded job stands for a planned one only when it is of the same row (the same id
cell; for a row without one, its first take's request) and asks the same model the same thing
with the same files: exactly, or the seed aside when both are the same take and a seed was
picked for it. Anything else is planned as before: an edited row, or a renamed id, is still
refused (:func:`batchrunner.planner.decide`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from batchrunner import identity
from batchrunner.manifest import Manifest
from batchrunner.rows import ManifestRow, relabelled_output

if TYPE_CHECKING:
    from batchrunner.jobs import Job
    from batchrunner.ledger import Ledger

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^(?:(?P<stem>.*)~)?t(?P<take>\d+)$", re.DOTALL)


def split_label(label: str) -> tuple[str, int | None]:
    """A variant label's matrix part and take: ``16:9~t2`` → ``("16:9", 2)``, ``t1`` →
    ``("", 1)``, ``16:9`` → ``("16:9", None)`` (a row's only take)."""
    match = _LABEL.match(label)
    if match is None:
        return label, None
    return match.group("stem") or "", int(match.group("take"))


def as_recorded(manifest: Manifest, ledger: Ledger) -> Manifest:
    """``manifest`` with each planned job the ledger holds under another label (or, bought by
    ``retry --new-take``, another seed) made that job; the same manifest when there is none."""
    rows = manifest.rows
    if not any(row.variant for row in rows) and not ledger.has_labels():
        return manifest  # nothing was ever labelled: nothing can be relabelled
    labels = ledger.labels()
    named = {row.job_id for row in rows}
    unnamed = {
        job_id: variant
        for job_id, (variant, take_of) in labels.items()
        if take_of is None and job_id not in named
    }
    rerolled = [
        row
        for row in rows
        if row.job_id in labels and labels[row.job_id][1] is not None and _take(row.variant) > 1
    ]
    if not unnamed and not rerolled:
        return manifest  # every recorded job is planned under its own label (a new ledger too)
    missing = [row for row in rows if row.job_id not in labels]
    candidates = _candidates(missing, unnamed, ledger)
    wanted = {job_id for ids in candidates.values() for job_id in ids}
    found = ledger.find([*wanted, *(row.job_id for row in rerolled)])
    swaps: dict[str, Job] = {}
    taken: set[str] = set()  # a recorded job stands for one planned job at most
    for row in missing:
        for job_id in candidates.get(row.job_id, ()):
            job = found[job_id]
            if job_id not in taken and _same_request(row, job):
                swaps[row.job_id] = job
                taken.add(job_id)
                break
    for row in rerolled:
        job = found[row.job_id]
        if job.input != row.payload and _same_request(row, job):
            swaps[row.job_id] = job
    if not swaps:
        return manifest
    renamed = [(job_id, job.job_id) for job_id, job in swaps.items() if job_id != job.job_id]
    if renamed:
        logger.info(
            "%s: %d planned job(s) are jobs the ledger holds under an earlier --count or --matrix "
            "label (%s is %s); they are not bought again",
            manifest.source,
            len(renamed),
            *renamed[0],
        )
    as_jobs = [
        row
        if row.job_id not in swaps
        else _as_job(row, swaps[row.job_id], manifest.spec_of(row).default_extension)
        for row in rows
    ]
    return dataclasses.replace(manifest, rows=as_jobs)


def _candidates(
    missing: list[ManifestRow], unnamed: Mapping[str, str], ledger: Ledger
) -> dict[str, list[str]]:
    """For each planned job the ledger lacks, the recorded jobs of its row that this manifest
    does not name (``unnamed``: id → label): those of its id cell, and for a row without one
    (its job ids are hashes of the request) the first take's twin under the other --count."""
    by_base: dict[str, list[str]] = {}
    for job_id, variant in unnamed.items():
        by_base.setdefault(_base(job_id, variant), []).append(job_id)
    found = {row.job_id: list(by_base.get(_base(row.job_id, row.variant), ())) for row in missing}
    for row in missing:
        if split_label(row.variant)[1] == 1:  # j…~t1 was bought as j… with one take
            forms = _one_take_ids(row.endpoint, row.payload, _shas(row))
            found[row.job_id] += [form for form in forms if form in unnamed]
    ones = {row.job_id for row in missing if split_label(row.variant)[1] is None}
    firsts = [job_id for job_id, variant in unnamed.items() if split_label(variant)[1] == 1]
    if ones and firsts:  # j… was bought as j…~t1, the first of several takes
        for job in ledger.find(firsts).values():
            for form in _one_take_ids(job.endpoint, job.input, _shas(job)):
                if form in ones:
                    found[form].append(job.job_id)
    return found


def _one_take_ids(endpoint: str, payload: Mapping[str, Any], shas: Mapping[str, str]) -> set[str]:
    """The ids the one take of a row without an id cell may have, from the request of its
    first take of several: with the row's own seed (the take's is the same) or with none (the
    take's dropped)."""
    return {
        identity.job_id(endpoint, payload, shas),
        identity.job_id(endpoint, _unseeded(payload), shas),
    }


def _same_request(row: ManifestRow, job: Job) -> bool:
    """Whether ``job`` asks what ``row`` plans: the same model and files, and the same request,
    the seed aside when both are the same take of their row and a seed was picked for one
    (a take of several, or a re-roll)."""
    if job.endpoint != row.endpoint or _shas(job) != _shas(row):
        return False
    picked = split_label(row.variant)[1] is not None or split_label(job.variant)[1] is not None
    if _take(row.variant) == _take(job.variant) and (picked or job.take_of is not None):
        return _unseeded(job.input) == _unseeded(row.payload)
    return bool(job.input == row.payload)


def _as_job(row: ManifestRow, job: Job, extension: str) -> ManifestRow:
    """``row`` as the recorded ``job``: its id, label, output name and request."""
    return dataclasses.replace(
        row,
        job_id=job.job_id,
        variant=job.variant,
        payload=job.input,
        output=relabelled_output(row.output, row.variant, job.variant, extension),
    )


def _base(job_id: str, variant: str) -> str:
    """A job id without its label: the row's id cell (``fox~720p~t2`` → ``fox``); a hash id
    (a row without an id cell) is its own."""
    mark = f"~{variant}"
    return job_id[: -len(mark)] if variant and job_id.endswith(mark) else job_id


def _take(variant: str) -> int:
    """The take a label names; a row's only take is take 1."""
    return split_label(variant)[1] or 1


def _unseeded(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in payload.items() if name != "seed"}


def _shas(take: ManifestRow | Job) -> dict[str, str]:
    """Each local file's sha256 (a planned row holds local files, a job their fields)."""
    return {
        key: file["sha256"] if isinstance(file, Mapping) else file.sha256
        for key, file in take.files.items()
    }
