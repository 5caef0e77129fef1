"""The plan: exactly which requests a manifest becomes, what they cost, what is already done.

Made without any network: ``batchrunner plan`` and ``run --dry-run`` print it; ``run`` records
its jobs in the ledger. The estimate is the sum of the registry's per-job prices, broken down by
the fields that drive price (``ModelSpec.price_fields``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchrunner.errors import UsageError
from batchrunner.ledger import Ledger, NewJob
from batchrunner.manifest import Manifest, materialize
from batchrunner.states import JobState


def to_jobs(manifest: Manifest) -> list[NewJob]:
    """The ledger's view of each planned job."""
    return [
        NewJob(
            job_id=row.job_id,
            endpoint=manifest.endpoint_id,
            input=row.payload,
            row=row.row,
            line=row.line,
            variant=row.variant,
            files={name: asdict(f) for name, f in row.files.items()},
            output_name=row.output,
            metadata=row.metadata,
            price_usd=row.cost_usd,
        )
        for row in manifest.rows
    ]


@dataclass
class Plan:
    source: str
    endpoint: str
    rows: int  # data rows in the manifest
    jobs: int  # after expansion
    cost_usd: float | None  # the estimate for every job; None when some job has no price
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    in_ledger: dict[str, int] = field(default_factory=dict)  # state -> jobs of this plan
    to_submit: int = 0
    to_submit_cost_usd: float | None = None
    unpriced: int = 0
    spent_usd: float = 0.0  # already committed in the ledger, all jobs
    price_confirmed: bool | None = None  # None: no price rule at all
    price_note: str = ""

    def lines(self) -> list[str]:
        """The plan for people, one fact per line."""
        out = [
            f"{self.source}: {self.rows} rows -> {self.jobs} jobs for {self.endpoint}",
            f"estimated cost: {money(self.cost_usd)}"
            + (f" ({self.unpriced} jobs have no price)" if self.unpriced else ""),
        ]
        if self.price_confirmed is False:
            out.append(
                f"price unconfirmed: {self.price_note or 'fal.ai does not publish it'}; check "
                f"https://fal.ai/models/{self.endpoint} before spending, or set it with "
                "`batchrunner models price`"
            )
        for group in self.breakdown:
            fields = ", ".join(
                f"{k}={v}" for k, v in group.items() if k not in ("jobs", "cost_usd")
            )
            out.append(f"  {group['jobs']:>5} x {fields or 'all'}: {money(group['cost_usd'])}")
        if self.in_ledger:
            states = ", ".join(f"{n} {s}" for s, n in sorted(self.in_ledger.items()))
            out.append(f"already in the ledger: {states}; skipped by run")
        out.append(
            f"to submit: {self.to_submit} jobs, {money(self.to_submit_cost_usd)}"
            f"; spent so far in the ledger: {money(self.spent_usd)}"
        )
        return out


def money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def make_plan(manifest: Manifest, ledger_path: Path | None = None) -> Plan:
    spec = manifest.spec
    groups: Counter[tuple[Any, ...]] = Counter()
    group_cost: dict[tuple[Any, ...], float] = {}
    for row in manifest.rows:
        key = tuple(row.payload.get(name) for name in spec.price_fields)
        groups[key] += 1
        group_cost[key] = group_cost.get(key, 0.0) + (row.cost_usd or 0.0)
    breakdown = [
        {
            **dict(zip(spec.price_fields, key, strict=True)),
            "jobs": n,
            "cost_usd": _money(group_cost[key]),
        }
        for key, n in sorted(groups.items(), key=lambda item: -item[1])
    ]
    unpriced = sum(1 for row in manifest.rows if row.cost_usd is None)
    states, spent = _ledger_states(ledger_path, [row.job_id for row in manifest.rows])
    fresh = [row for row in manifest.rows if row.job_id not in states]
    return Plan(
        source=str(manifest.source),
        endpoint=manifest.endpoint_id,
        rows=manifest.records,
        jobs=len(manifest.rows),
        cost_usd=None if unpriced else _money(sum(r.cost_usd or 0.0 for r in manifest.rows)),
        breakdown=breakdown if spec.price_fields else [],
        in_ledger=dict(Counter(states.values())),
        to_submit=len(fresh),
        to_submit_cost_usd=None
        if any(r.cost_usd is None for r in fresh)
        else _money(sum(r.cost_usd or 0.0 for r in fresh)),
        unpriced=unpriced,
        spent_usd=spent,
        price_confirmed=spec.price.confirmed if spec.price else None,
        price_note=spec.price.note if spec.price else "",
    )


def _ledger_states(path: Path | None, job_ids: list[str]) -> tuple[dict[str, str], float]:
    if path is None or not Path(path).exists():
        return {}, 0.0
    with Ledger.open(path, create=False) as ledger:
        states = {job_id: JobState(state).value for job_id, state in ledger.states(job_ids).items()}
        return states, ledger.spend()


def write_bodies(manifest: Manifest, destination: Path) -> int:
    """One JSON line per job: its id, row, variant and the exact request body (local images as
    the ``data:`` URIs that would be sent)."""
    try:
        with open(destination, "w", encoding="utf-8") as handle:
            for row in manifest.rows:
                record = {
                    "job_id": row.job_id,
                    "row": row.row,
                    "variant": row.variant,
                    "endpoint": manifest.endpoint_id,
                    "cost_usd": row.cost_usd,
                    "input": materialize(row.payload, row.files),
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write {destination}: {exc.strerror or exc}") from exc
    return len(manifest.rows)


def _money(value: float) -> float:
    return round(value, 4)
