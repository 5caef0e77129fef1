"""Job states and the transitions allowed between them: the one home of the state machine.

::

    pending ──► submitting ──► queued ──► running ──► completed ──► done
       ▲            │  │          │          │            │
       │            │  └─► unknown (answer lost: maybe a paid job exists)
       │            └────► failed ◄──────────┴────────────┘ (final error, result expired)
       └──────────── failed / cancelled / unknown  (only when the user asks: retry, cancel)

``completed`` means the result JSON is stored in the ledger (the provider drops it after about
an hour); ``done`` means the video is on disk and verified.
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


S = JobState

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # PENDING -> FAILED: the job cannot be sent at all (its local input file changed).
    # PENDING -> PENDING: its input was replaced by an edited row (--replace-changed).
    S.PENDING: frozenset({S.PENDING, S.SUBMITTING, S.FAILED, S.CANCELLED}),
    # SUBMITTING -> PENDING: the request provably never left (connect error after retries).
    S.SUBMITTING: frozenset({S.QUEUED, S.UNKNOWN, S.FAILED, S.PENDING, S.CANCELLED}),
    S.QUEUED: frozenset({S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED}),
    # COMPLETED -> COMPLETED records a failed download attempt (the result is kept).
    S.COMPLETED: frozenset({S.COMPLETED, S.DONE, S.FAILED}),
    # DONE -> COMPLETED: the file went missing; fetch it again from the stored result.
    S.DONE: frozenset({S.COMPLETED}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.UNKNOWN: frozenset({S.PENDING, S.CANCELLED}),
}

# Submitted and not yet completed: these count against --concurrency and are polled.
AT_PROVIDER = frozenset({S.QUEUED, S.RUNNING})


def can_move(old: JobState, new: JobState) -> bool:
    return new in TRANSITIONS[old]
