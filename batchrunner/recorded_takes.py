"""A row's takes are the jobs the ledger holds for them, whatever labelled them.

Takes are numbered from the row's own job. ``--count`` labels them only when a row has several
(``fox~t1``, ``fox~t2``, with seeds of their own); with one take the job is the row's own
(``fox``). ``retry --new-take`` numbers from the row's own job too (``fox`` → ``fox~t2``), with
a seed it picks. So a take the ledger holds can be planned again under another name or seed:

* **the first take, when --count changes** to or from 1: ``fox`` is take 1 of ``--count 2``,
  not a new ``fox~t1`` to buy, and ``fox~t1`` is the one take of ``--count 1``;
* **a take bought by** ``retry --new-take`` (``fox~t2``, its seed its own) is take 2 of
  ``--count 2``, not an edited row to refuse.

:func:`as_recorded` gives such planned rows the recorded job's id, variant label, output name
and request, before the planner looks at them: ``plan`` and ``run`` then see what they are
(done, on their way, failed and left for ``retry``) instead of new jobs to buy twice. A planned
row and a recorded job are one take only when they ask the same model the same thing, the seed
aside (takes differ by seed alone), with the same files and matrix values; anything else is
planned as it was (an edited row is still refused or bought, as without a change of --count).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from batchrunner import identity
from batchrunner.manifest import Manifest, ManifestRow, relabelled_output

if TYPE_CHECKING:
    from batchrunner.ledger import Job, Ledger

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
    """``manifest`` with each planned take the ledger holds under another name or seed made
    that job (see the module's docstring); the same manifest when there is none."""
    firsts, retakes = ledger.take_ids()
    takes = {row.job_id: split_label(row.variant)[1] for row in manifest.rows if row.variant}
    swaps: dict[str, Job] = {}
    if any(take is not None for take in takes.values()):
        swaps.update(_first_takes_now_labelled(manifest, ledger, takes))
        swaps.update(_bought_by_new_take(manifest, ledger, takes, set(retakes)))
    if firsts:
        swaps.update(_first_takes_once_labelled(manifest, ledger, takes, firsts))
    if not swaps:
        return manifest
    extension = manifest.spec.default_extension
    rows = [
        row if row.job_id not in swaps else _as_job(row, swaps[row.job_id], extension)
        for row in manifest.rows
    ]
    renamed = [(job_id, job.job_id) for job_id, job in swaps.items() if job_id != job.job_id]
    if renamed:
        logger.info(
            "%s: the first take of %d row(s) is the job an earlier --count named (%s is %s); "
            "it is not bought again",
            manifest.source,
            len(renamed),
            *renamed[0],
        )
    return dataclasses.replace(manifest, rows=rows)


def _first_takes_now_labelled(
    manifest: Manifest, ledger: Ledger, takes: Mapping[str, int | None]
) -> dict[str, Job]:
    """Planned first takes (``fox~t1``) the ledger lacks, whose row ran with one take
    (``fox``)."""
    firsts = [row for row in manifest.rows if takes.get(row.job_id) == 1]
    held = ledger.states([row.job_id for row in firsts])
    missing = [row for row in firsts if row.job_id not in held]
    if not missing:
        return {}
    endpoint = manifest.endpoint_id
    forms = {
        row.job_id: _plain_forms(row.job_id, endpoint, row.payload, _shas(row)) for row in missing
    }
    named = {row.job_id for row in manifest.rows}
    found = ledger.find([form for each in forms.values() for form in each if form not in named])
    swaps = {}
    for row in missing:
        twin = next((found[form] for form in forms[row.job_id] if form in found), None)
        if twin is not None and _one_take(row, endpoint, twin, made_by_retry=False):
            swaps[row.job_id] = twin
    return swaps


def _first_takes_once_labelled(
    manifest: Manifest, ledger: Ledger, takes: Mapping[str, int | None], firsts: list[str]
) -> dict[str, Job]:
    """Planned rows of one take (``fox``) the ledger lacks, whose row ran with several
    (``fox~t1``, among ``firsts``)."""
    named = {row.job_id for row in manifest.rows}
    unnamed = [job_id for job_id in firsts if job_id not in named]
    by_form: dict[str, Job] = {}
    for job in ledger.find(unnamed).values():
        for form in _plain_forms(job.job_id, job.endpoint, job.input, _shas(job)):
            by_form.setdefault(form, job)
    ones = [row for row in manifest.rows if row.job_id in by_form and takes.get(row.job_id) is None]
    held = ledger.states([row.job_id for row in ones])
    return {
        row.job_id: by_form[row.job_id]
        for row in ones
        if row.job_id not in held
        and _one_take(row, manifest.endpoint_id, by_form[row.job_id], made_by_retry=False)
    }


def _bought_by_new_take(
    manifest: Manifest, ledger: Ledger, takes: Mapping[str, int | None], retakes: set[str]
) -> dict[str, Job]:
    """Planned takes 2 and up the ledger holds as bought by ``retry --new-take`` (among
    ``retakes``), with its seed."""
    later = [
        row for row in manifest.rows if row.job_id in retakes and (takes.get(row.job_id) or 0) >= 2
    ]
    found = ledger.find([row.job_id for row in later])
    return {
        row.job_id: job
        for row in later
        if (job := found.get(row.job_id)) is not None
        and job.input != row.payload
        and _one_take(row, manifest.endpoint_id, job, made_by_retry=True)
    }


def _plain_forms(
    job_id: str, endpoint: str, payload: Mapping[str, Any], shas: Mapping[str, str]
) -> set[str]:
    """The ids the one take of a row may have, from its first take of several: the id cell's
    (``fox~t1`` → ``fox``), else the request's, seeded by the row (the same seed) or not (the
    take's own seed dropped)."""
    forms = {
        identity.job_id(endpoint, payload, shas),
        identity.job_id(endpoint, _unseeded(payload), shas),
    }
    if job_id.endswith("~t1"):
        forms.add(job_id[: -len("~t1")])
    return forms


def _one_take(row: ManifestRow, endpoint: str, job: Job, *, made_by_retry: bool) -> bool:
    """Whether ``job`` is the take ``row`` plans: the same model, matrix values, files and
    request, the seed aside; made by ``retry --new-take`` or by a manifest, as asked."""
    return (
        (job.take_of is not None) == made_by_retry
        and job.endpoint == endpoint
        and split_label(job.variant)[0] == split_label(row.variant)[0]
        and _request(endpoint, row.payload, _shas(row))
        == _request(job.endpoint, job.input, _shas(job))
    )


def _as_job(row: ManifestRow, job: Job, extension: str) -> ManifestRow:
    """``row`` as the recorded take ``job``: its id, label, output name and request."""
    return dataclasses.replace(
        row,
        job_id=job.job_id,
        variant=job.variant,
        payload=job.input,
        output=relabelled_output(row.output, row.variant, job.variant, extension),
    )


def _request(endpoint: str, payload: Mapping[str, Any], shas: Mapping[str, str]) -> str:
    return identity.input_hash(endpoint, _unseeded(payload), shas)


def _unseeded(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in payload.items() if name != "seed"}


def _shas(take: ManifestRow | Job) -> dict[str, str]:
    """Each local file's sha256 (a planned row holds local files, a job their fields)."""
    return {
        key: file["sha256"] if isinstance(file, Mapping) else file.sha256
        for key, file in take.files.items()
    }
