"""What people see: progress bars while a run works, one summary line when it ends."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from tqdm import tqdm

from batchrunner.errors import ExitCode
from batchrunner.ledger import Ledger
from batchrunner.states import JobState


@dataclass(frozen=True)
class Summary:
    """The outcome of a command that ran jobs, and the exit code it implies."""

    total: int
    counts: dict[str, int]
    spend_usd: float
    billed_usd: float = 0.0  # what the provider reported billing (x-fal-billable-units)
    billed_jobs: int = 0
    submitted: int = 0
    downloaded: int = 0
    exit_code: int = 0
    stopped: str | None = None  # why the run stopped early, when it did
    gallery: str | None = None  # the review page written at the end (batchrunner.gallery)

    @classmethod
    def from_ledger(
        cls,
        ledger: Ledger,
        *,
        submitted: int = 0,
        downloaded: int = 0,
        stopped: tuple[ExitCode, str] | None = None,
    ) -> Summary:
        counts = {state.value: n for state, n in ledger.counts().items()}
        total = sum(counts.values())
        if stopped is not None:
            code = stopped[0]
        elif counts.get(JobState.DONE.value, 0) == total:
            code = ExitCode.OK
        else:
            code = ExitCode.JOBS_NOT_DONE
        reason = stopped[1] if stopped else None
        billed, billed_jobs = ledger.billed()
        return cls(
            total,
            counts,
            ledger.spend(),
            billed,
            billed_jobs,
            submitted,
            downloaded,
            int(code),
            reason,
        )

    def line(self) -> str:
        order = [s.value for s in JobState]
        parts = [f"{self.counts[s]} {s}" for s in order if self.counts.get(s)]
        line = (
            f"{self.total} jobs: {', '.join(parts) or 'none'}; "
            f"this run submitted {self.submitted}, downloaded {self.downloaded}; "
            f"estimated spend ${self.spend_usd:,.2f}"
        )
        if self.billed_jobs:
            line += f", billed ${self.billed_usd:,.2f} ({self.billed_jobs} jobs reported)"
        if self.gallery:
            line += f"\nreview: {self.gallery}"
        return line if self.stopped is None else f"stopped early: {self.stopped}\n{line}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """Three tqdm bars on stderr (submitted / completed / downloaded), only on a terminal."""

    STAGES = ("submitted", "completed", "downloaded")

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.bars: dict[str, tqdm[Any]] = {}

    def start(self, total: int) -> None:
        if not self.enabled or not total:
            return
        for position, stage in enumerate(self.STAGES):
            self.bars[stage] = tqdm(
                total=total, desc=f"{stage:>10}", position=position, file=self.stream, leave=True
            )

    def __call__(self, stage: str) -> None:
        bar = self.bars.get(stage)
        if bar is not None:
            bar.update(1)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
