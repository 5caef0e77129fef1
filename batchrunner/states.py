"""Job states and the transitions allowed between them: the one home of the state machine.

::

    pending ──► submitting ──► queued ──► running ──► completed ──► done
       ▲  ▲         │  │          │          │           │ ▲
       │  │         │  └─► unknown (answer lost: maybe a paid job exists)
       │  │         └────► failed ◄──────────┤           ▼ │ (retry --downloads)
       │  │                       expired ◄──┘    download_failed (paid; cannot be fetched)
       │  └─ submitting (the request provably never left: not sent, nothing spent)
       └──────────── failed / cancelled / unknown / expired  (only when the user asks: retry)

``completed`` means the result JSON is stored in the ledger (the provider drops it after about
an hour); ``done`` means the video is on disk and verified. ``expired``: the job finished but
its result was gone before it was fetched (paid, lost; ``retry --expired`` buys it again).
``download_failed``: the result is stored but its video can never be downloaded as it is
(``retry --downloads`` tries again without submitting).
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    DOWNLOAD_FAILED = "download_failed"


S = JobState

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # PENDING -> FAILED: the job cannot be sent at all (its local input file changed).
    # PENDING -> PENDING: its input was replaced by an edited row (--replace-changed).
    S.PENDING: frozenset({S.PENDING, S.SUBMITTING, S.FAILED, S.CANCELLED}),
    # SUBMITTING -> PENDING: the request provably never left (connect error after retries).
    S.SUBMITTING: frozenset({S.QUEUED, S.UNKNOWN, S.FAILED, S.PENDING, S.CANCELLED}),
    S.QUEUED: frozenset({S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.RUNNING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    # COMPLETED -> COMPLETED records a failed download attempt (the result is kept).
    S.COMPLETED: frozenset({S.COMPLETED, S.DONE, S.FAILED, S.DOWNLOAD_FAILED}),
    # DONE -> COMPLETED: the file went missing; fetch it again from the stored result.
    S.DONE: frozenset({S.COMPLETED}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.UNKNOWN: frozenset({S.PENDING, S.CANCELLED}),
    S.EXPIRED: frozenset({S.PENDING}),
    S.DOWNLOAD_FAILED: frozenset({S.COMPLETED}),
}

# Submitted and not yet completed: these count against --concurrency and are polled.
AT_PROVIDER = frozenset({S.QUEUED, S.RUNNING})

# Final states short of done: only the user can move these on (retry, cancel).
NEEDS_ATTENTION = (S.FAILED, S.UNKNOWN, S.CANCELLED, S.EXPIRED, S.DOWNLOAD_FAILED)


def can_move(old: JobState, new: JobState) -> bool:
    return new in TRANSITIONS[old]
