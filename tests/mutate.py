"""Break each README guarantee on purpose and check that its tests notice (``make mutate``).

Each :class:`Mutation` is one small, named change that breaks one guarantee: an exact snippet of
the source and what replaces it, and the tests that should then fail. For each one this tool
copies the repository (without ``.venv``, ``.git`` and build output) to a scratch folder, applies
the change there, and runs those tests with this interpreter. The copy is first on ``PYTHONPATH``
and the working folder, so pytest *and* the ``python -m batchrunner`` processes that tests start
import the mutated copy (checked before each run). The verdicts:

* ``caught``   the tests failed (pytest exit 1), as they should;
* ``SURVIVED`` the tests passed with the guarantee broken: a test is missing;
* ``STALE``    the snippet is not in the source exactly once (the code moved on: update the
  mutation), or the tests could not be collected (pytest exit 2-5: a renamed test?).

First, the union of all listed tests runs once on an unmutated copy: a mutation only counts as
caught when its tests pass without it. Exit status 0 only when every mutation is caught.

    python -m tests.mutate              # everything, two at a time
    python -m tests.mutate -k budget    # mutations whose name contains "budget"
    python -m tests.mutate --list       # what would run

This is a tool for developers, not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "outputs", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    ".hypothesis", "*.db", "*.db-wal", "*.db-shm", "*.lock", "*.egg-info",
)  # fmt: skip
RUN_TIMEOUT = 900  # seconds for one mutation's tests; pytest's own per-test timeout is 120 s

# Tests, by file, so the list below stays readable.
BUDGET = "tests/test_budget.py::"
CLIENT = "tests/test_client.py::"
DOWNLOADER = "tests/test_downloader.py::"
FAULTS = "tests/test_faults.py::"
LEDGER = "tests/test_ledger.py::"
RUN = "tests/test_run.py::"
SCHEDULER = "tests/test_scheduler.py::"
STREAMS = "tests/test_streams.py::"
TRANSPORT = "tests/test_transport.py::"
UNATTENDED = "tests/test_unattended.py::"
RUN_ERRORS = "tests/test_run_errors.py::"
PATHS = "tests/test_paths.py::"
INSPECTOR = "tests/test_inspector.py::"
EXPAND = "tests/test_expand.py::"
TAKES = "tests/test_relabelled.py::"
MODEL_COLUMN = "tests/test_model_column.py::"


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str  # the README bullet it breaks
    file: str
    original: str  # must occur exactly once in `file`
    replacement: str
    tests: tuple[str, ...]


MUTATIONS: list[Mutation] = [
    # --- A kill loses nothing
    Mutation(
        "recorded-job-sent-before-its-commit",
        "A kill loses nothing",
        "batchrunner/scheduler.py",
        "            await recording.written(index)\n",
        "            pass  # MUTANT: sent before its chunk of the manifest is committed\n",
        (RUN + "test_a_run_submits_while_its_jobs_are_still_being_recorded",),
    ),
    Mutation(
        "in-flight-jobs-not-polled-on-start",
        "A kill loses nothing",
        "batchrunner/scheduler.py",
        "            if job.origin != self.origin:\n",
        "            if True:  # MUTANT: every in-flight job is skipped\n",
        (
            UNATTENDED + "test_max_runtime_stops_with_75_and_a_later_run_finishes",
            RUN + "test_sigkill_mid_batch_then_resume_loses_and_rebuys_nothing",
        ),
    ),
    Mutation(
        "max-runtime-leaves-jobs-in-flight",
        "Ctrl-C / SIGTERM stop cleanly",
        "batchrunner/runtime.py",
        "    runner.close(\n",
        "    runner.stop(  # MUTANT: jobs in flight left to expire\n",
        (UNATTENDED + "test_max_runtime_stops_with_75_and_a_later_run_finishes",),
    ),
    Mutation(
        "submitting-left-unsettled-on-start",
        "A kill loses nothing",
        "batchrunner/scheduler.py",
        "        for job in self.ledger.jobs([S.SUBMITTING]):\n",
        "        for job in []:  # MUTANT: a cut-off submit stays `submitting` forever\n",
        (UNATTENDED + "test_a_second_ctrl_c_leaves_at_once",),
    ),
    Mutation(
        "download-not-resumed-with-range",
        "A kill loses nothing",
        "batchrunner/downloader.py",
        '    headers = {"Range": f"bytes={offset}-"} if offset else {}\n',
        "    headers: dict[str, str] = {}  # MUTANT: always from the start\n",
        (DOWNLOADER + "test_cut_download_resumes_with_range",),
    ),
    # --- Nothing is bought twice without your say-so
    Mutation(
        "unknown-resubmitted-without-asking",
        "Nothing is bought twice without your say-so",
        "batchrunner/scheduler.py",
        "        if self.options.resubmit_unknown:\n",
        "        if True:  # MUTANT\n",
        (RUN + "test_ambiguous_submit_is_unknown_and_resent_only_on_request",),
    ),
    Mutation(
        "lost-submit-answer-retried",
        "Nothing is bought twice without your say-so",
        "batchrunner/client.py",
        'idempotent=op != "submit"',
        "idempotent=True",
        (
            FAULTS + "test_lost_submit_answer_becomes_unknown_and_is_not_resent",
            RUN + "test_ambiguous_submit_is_unknown_and_resent_only_on_request",
        ),
    ),
    Mutation(
        "lost-answer-on-the-wire-called-never-sent",
        "Nothing is bought twice without your say-so",
        "batchrunner/wire.py",
        "            self._stop(_Lost(httpx.ReadError, str(exc) or type(exc).__name__))\n",
        "            self._stop(_Lost(httpx.ConnectError, str(exc)))  # MUTANT\n",
        (TRANSPORT + "test_the_lean_path_fails_with_the_same_httpx_error_as_the_httpx_path",),
    ),
    Mutation(
        "a-rows-variants-that-are-one-request-bought-twice",
        "Nothing is bought twice without your say-so",
        "batchrunner/rows.py",
        "        if matrix and b.row is not None:  # matrix values that mean the same (8s and 8)\n",
        "        if False:  # MUTANT: each variant is taken for a request of its own\n",
        (EXPAND + "test_variants_of_a_row_that_are_one_request_are_refused_not_bought_twice",),
    ),
    # --- `unknown` happens only when a submit's answer was lost
    Mutation(
        "submit-intent-committed-after-the-post",
        "`unknown` happens only when a submit's answer was lost",
        "batchrunner/scheduler.py",
        "        try:\n"
        "            job = await self.commits.transition(\n"
        "                job.job_id,\n"
        "                S.SUBMITTING,\n"
        "                expect=S.PENDING,\n"
        '                detail="submit intent",\n'
        "                submits=job.submits + 1,\n"
        "                cost_usd=job.price_usd,  # reserved: from here on the job may be billed\n"
        "                # a pending job with a cost was sent before"
        " and may have been billed for it\n"
        "                earlier_usd=job.spent_usd,\n"
        "                billed_usd=None,  # what was billed for an earlier send"
        " is in earlier_usd now\n"
        "                billable_units=None,\n"
        "                error=None,\n"
        "            )\n"
        "        except TransitionError:  # `cancel JOB_ID` beside this run got to it first\n"
        "            job = self.ledger.get(job.job_id)\n"
        '            logger.info("job %s: not sent: it is %s", job.job_id, job.state)\n'
        "            return job\n"
        "        try:\n"
        "            answer = await self._submit_shielded(job, body)\n",
        "        try:  # MUTANT: POST first, record the intent afterwards\n"
        "            posted: Any = await self._submit_shielded(job, body)\n"
        "        except Exception as exc:\n"
        "            posted = exc\n"
        "        try:\n"
        "            job = await self.commits.transition(\n"
        "                job.job_id,\n"
        "                S.SUBMITTING,\n"
        "                expect=S.PENDING,\n"
        '                detail="submit intent",\n'
        "                submits=job.submits + 1,\n"
        "                cost_usd=job.price_usd,  # reserved: from here on the job may be billed\n"
        "                # a pending job with a cost was sent before"
        " and may have been billed for it\n"
        "                earlier_usd=job.spent_usd,\n"
        "                billed_usd=None,  # what was billed for an earlier send"
        " is in earlier_usd now\n"
        "                billable_units=None,\n"
        "                error=None,\n"
        "            )\n"
        "        except TransitionError:  # `cancel JOB_ID` beside this run got to it first\n"
        "            job = self.ledger.get(job.job_id)\n"
        '            logger.info("job %s: not sent: it is %s", job.job_id, job.state)\n'
        "            return job\n"
        "        try:\n"
        "            if isinstance(posted, Exception):\n"
        "                raise posted\n"
        "            answer = posted\n",
        (SCHEDULER + "test_the_submit_intent_and_its_price_are_committed_before_the_post",),
    ),
    Mutation(
        "never-sent-submit-called-ambiguous",
        "`unknown` happens only when a submit's answer was lost",
        "batchrunner/answers.py",
        "    if isinstance(exc, NEVER_SENT):\n        return TransientError(",
        "    if False:  # MUTANT\n        return TransientError(",
        (CLIENT + "test_submit_is_retried_when_the_request_never_left",),
    ),
    # --- Results are stored the moment a job completes
    Mutation(
        "result-json-not-stored-at-completed",
        "Results are stored the moment a job completes",
        "batchrunner/scheduler.py",
        '            "detail": "result stored",\n            "result": result,\n',
        '            "detail": "result stored",\n',
        (
            SCHEDULER + "test_the_result_is_stored_before_the_download_starts",
            UNATTENDED + "test_unwritable_output_keeps_results_and_resume_downloads",
        ),
    ),
    Mutation(
        "failed-download-fails-the-job",
        "Results are stored the moment a job completes",
        "batchrunner/scheduler.py",
        "                S.COMPLETED,\n                detail=NOT_A_VIDEO if",
        "                S.FAILED,  # MUTANT\n                detail=NOT_A_VIDEO if",
        (UNATTENDED + "test_unwritable_output_keeps_results_and_resume_downloads",),
    ),
    Mutation(
        "completed-jobs-not-downloaded-on-start",
        "Results are stored the moment a job completes",
        "batchrunner/scheduler.py",
        "        downloads = self.ledger.job_ids([S.COMPLETED])\n",
        "        downloads: list[str] = []  # MUTANT\n",
        (UNATTENDED + "test_unwritable_output_keeps_results_and_resume_downloads",),
    ),
    Mutation(
        "a-replaced-video-left-where-the-new-one-goes",
        "Results are stored the moment a job completes",
        "batchrunner/ledger.py",
        '{column: _link_aside(path, f"@{retired + 1}") for',
        "{column: None for",  # MUTANT: the kept video stays under the name
        (BUDGET + "test_replace_changed_and_rows_that_disappeared",),
    ),
    Mutation(
        "a-file-with-a-second-name-taken-for-this-download",
        "Results are stored the moment a job completes",
        "batchrunner/downloader.py",
        "and there.st_nlink == 1\n",
        "and True  # MUTANT\n",
        (DOWNLOADER + "test_a_file_of_the_right_size_with_a_second_name_is_another_job_s",),
    ),
    Mutation(
        "a-second-ledger-buys-over-the-first-s-files",
        "Results are stored the moment a job completes",
        "batchrunner/batch.py",
        "    _check_nothing_in_the_way(manifest, decisions, settings.out, ledger)\n",
        "    pass  # MUTANT\n",
        (RUN + "test_a_second_ledger_never_buys_into_another_ledger_s_files",),
    ),
    Mutation(
        "another-batch-s-video-written-over-by-resume",
        "Results are stored the moment a job completes",
        "batchrunner/downloader.py",
        "        found = not mine and _found_there(dest)\n",
        "        found = False  # MUTANT: whatever is there is written over\n",
        (
            "tests/test_unattended.py::"
            "test_resume_never_takes_or_overwrites_videos_another_batch_saved_meanwhile",
        ),
    ),
    Mutation(
        "a-done-video-that-went-missing-is-left-missing",
        "Results are stored the moment a job completes",
        "batchrunner/scheduler.py",
        "            if not _file_ok(Path(output_path), size):\n",
        "            if False:  # MUTANT: done is trusted, whatever became of the file\n",
        (RUN + "test_a_done_video_deleted_or_cut_is_fetched_again_not_bought_again",),
    ),
    Mutation(
        "a-cut-done-video-is-taken-for-whole",
        "Results are stored the moment a job completes",
        "batchrunner/scheduler.py",
        "    return stat.S_ISREG(found.st_mode) and (size is None or found.st_size == size)\n",
        "    return stat.S_ISREG(found.st_mode)  # MUTANT: any size will do\n",
        (RUN + "test_a_done_video_deleted_or_cut_is_fetched_again_not_bought_again",),
    ),
    # --- A video is renamed into place only when it is whole
    Mutation(
        "downloaded-size-not-checked",
        "A video is renamed into place only when whole",
        "batchrunner/downloader.py",
        "    if want is not None and size < want:\n"
        '        raise _Cut(f"got {size} of {want} bytes")\n'
        "    if want is not None and size != want:\n"
        "        part.unlink()\n"
        '        raise _SizeMismatch(f"got {size} bytes, expected {want}; the partial file was '
        'removed")\n',
        "    # MUTANT: the .part file is renamed unchecked\n",
        (
            DOWNLOADER + "test_a_200_that_ends_short_without_content_length_is_resumed_not_kept",
            DOWNLOADER + "test_a_body_shorter_than_its_content_length_is_resumed_not_kept",
            DOWNLOADER + "test_a_body_longer_than_the_results_file_size_is_refused",
        ),
    ),
    Mutation(
        "wrong-range-written-into-the-file",
        "A video is renamed into place only when whole",
        "batchrunner/downloader.py",
        "if response.status_code == 206 and not resumed and _range_start(response) != 0:",
        "if False:  # MUTANT",
        (DOWNLOADER + "test_a_206_for_a_range_not_asked_for_is_not_written_into_the_file",),
    ),
    # --- Transient provider trouble is retried, within a budget
    Mutation(
        "retry-after-ignored",
        "Transient provider trouble is retried, within a budget",
        "batchrunner/retry.py",
        "            wait = max(wait, min(error.retry_after, self.max_retry_after))\n",
        "            pass  # MUTANT\n",
        (FAULTS + "test_429_with_retry_after_waits_at_least_that_long",),
    ),
    Mutation(
        "retry-budget-one-try-too-many",
        "Transient provider trouble is retried, within a budget",
        "batchrunner/retry.py",
        "            if attempt >= policy.attempts or",
        "            if attempt > policy.attempts or",  # MUTANT
        (FAULTS + "test_unreadable_200_is_retried_then_fails_with_the_body",),
    ),
    Mutation(
        "gateway-502-not-retried",
        "Transient provider trouble is retried, within a budget",
        "batchrunner/answers.py",
        "GATEWAY_CODES = (502, 503, 504)\n",
        "GATEWAY_CODES = (503, 504)  # MUTANT\n",
        (FAULTS + "test_ingress_errors_are_retried",),
    ),
    Mutation(
        "dropped-poll-not-retried",
        "Transient provider trouble is retried, within a budget",
        "batchrunner/answers.py",
        '    return TransientError(f"the connection to the API failed ({what})")\n',
        '    return FinalError(f"the connection to the API failed ({what})")  # MUTANT\n',
        (FAULTS + "test_dropped_connections_on_polls_are_retried",),
    ),
    Mutation(
        "final-422-retried",
        "Transient provider trouble is retried, within a budget",
        "batchrunner/answers.py",
        '        return FinalError(said(f"the API rejected the input ({code})"), status=code)\n',
        '        return TransientError(said(f"rejected ({code})"), status=code)  # MUTANT\n',
        (RUN + "test_24_rows_with_two_refused_prompts",),
    ),
    # --- Throttling lowers concurrency; --concurrency is the ceiling
    Mutation(
        "throttling-never-lowers-the-limit",
        "Throttling lowers concurrency",
        "batchrunner/adaptive.py",
        "        self._set(max(1.0, self.value / 2, floor))\n",
        "        self._set(self.value)  # MUTANT\n",
        (UNATTENDED + "test_throttling_reseller_is_driven_at_its_cap_without_a_429_storm",),
    ),
    Mutation(
        "concurrency-ceiling-x100",
        "Throttling lowers concurrency",
        "batchrunner/adaptive.py",
        "        self.ceiling = max(1, ceiling)\n",
        "        self.ceiling = max(1, ceiling) * 100  # MUTANT\n",
        (
            RUN + "test_concurrency_caps_jobs_in_flight_at_the_server",
            SCHEDULER + "test_the_concurrency_limit_opens_two_slots_per_submit_up_to_the_ceiling",
        ),
    ),
    # --- A finished job is noticed at once, by stream or by polling
    Mutation(
        "completed-on-the-stream-ignored",
        "A finished job is noticed at once, by stream or by polling",
        "batchrunner/scheduler.py",
        '                        if status.status == "COMPLETED":\n'
        '                            return job, status, ""\n',
        "                        pass  # MUTANT: wait for the stream to end, then poll\n",
        (
            STREAMS
            + "test_a_finished_jobs_result_is_fetched_when_completed_arrives_four_requests_a_job",
        ),
    ),
    Mutation(
        "stream-not-offered-fails-the-job",
        "A finished job is noticed at once, by stream or by polling",
        "batchrunner/scheduler.py",
        "            except StreamNotOfferedError:\n"
        '                return job, None, "not offered"\n',
        "            except StreamNotOfferedError:  # MUTANT: no fallback\n"
        '                return self._fail(job, job.state, "no stream"), None, "stopped"\n',
        (STREAMS + "test_streams_not_offered_fall_back_to_polling_and_the_origin_is_remembered",),
    ),
    # --- Stuck jobs are cancelled
    Mutation(
        "stuck-job-not-cancelled-at-the-provider",
        "Stuck jobs are cancelled",
        "batchrunner/scheduler.py",
        "            answer = await self.client.cancel(job.endpoint, job.request_id, "
        "url=job.cancel_url)\n",
        '            answer = "not sent"  # MUTANT\n',
        (UNATTENDED + "test_stuck_jobs_are_cancelled_at_the_provider_and_failed",),
    ),
    Mutation(
        "overdue-on-resume-cancelled-unseen",
        "Stuck jobs are cancelled",
        "batchrunner/scheduler.py",
        "        if self._overdue(job):\n",
        "        if False:  # MUTANT\n",
        (UNATTENDED + "test_a_run_resumed_long_after_it_stopped_fetches_what_finished_meanwhile",),
    ),
    Mutation(
        "a-job-waiting-its-turn-called-stuck",
        "Stuck jobs are cancelled",
        "batchrunner/scheduler.py",
        "        return waited if moved is None else min(waited, time.time() - moved)\n",
        "        return waited  # MUTANT\n",
        (UNATTENDED + "test_a_job_waiting_its_turn_in_the_queue_is_not_stuck",),
    ),
    # --- Ctrl-C / SIGTERM stop cleanly
    Mutation(
        "stop-cuts-off-the-submit-under-way",
        "Ctrl-C / SIGTERM stop cleanly",
        "batchrunner/scheduler.py",
        "        with anyio.CancelScope(shield=True), anyio.CancelScope() as grace:\n",
        "        with anyio.CancelScope(), anyio.CancelScope() as grace:  # MUTANT\n",
        (SCHEDULER + "test_a_stop_lets_the_submit_under_way_answer_and_records_it",),
    ),
    Mutation(
        "second-ctrl-c-ignored",
        "Ctrl-C / SIGTERM stop cleanly",
        "batchrunner/runtime.py",
        "            if runner.stopped is not None:\n                if errors.leave_at_once",
        "            if False:  # MUTANT\n                if errors.leave_at_once",
        (UNATTENDED + "test_a_second_ctrl_c_leaves_at_once",),
    ),
    # --- Account and network trouble stops the run, not the jobs
    Mutation(
        "refused-key-fails-every-job",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/answers.py",
        "        return KeyRefusedError(f\"{code} {said() or 'key refused'}\", status=code)\n",
        '        return FinalError(f"{code} {said()}", status=code)  # MUTANT\n',
        (
            RUN_ERRORS
            + "test_a_wrong_key_stops_the_run_and_the_same_command_finishes_after_the_fix",
        ),
    ),
    Mutation(
        "locked-account-stops-following-in-flight-jobs",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/errors.py",
        '    """The account may not start billable work: locked, out of balance (403/402)."""\n'
        "\n"
        "    follow_in_flight = True\n",
        '    """The account may not start billable work: locked, out of balance (403/402)."""\n'
        "\n"
        "    follow_in_flight = False  # MUTANT\n",
        (RUN_ERRORS + "test_a_balance_that_runs_out_leaves_the_rest_pending_until_topped_up",),
    ),
    Mutation(
        "stopped-unsent-submit-called-unknown",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        "        if not wire.busy:\n",
        "        if False:  # MUTANT\n",
        (RUN_ERRORS + "test_a_stop_while_submits_wait_to_retry_a_connection_leaves_them_pending",),
    ),
    # --- A download that can never succeed ends
    Mutation(
        "permanent-download-failure-retried-forever",
        "A download that can never succeed ends",
        "batchrunner/scheduler.py",
        "            if isinstance(exc, DownloadError) and exc.permanent and not out_of_reach:\n",
        "            if False:  # MUTANT\n",
        (RUN_ERRORS + "test_broken_downloads_end_with_their_reason_and_do_not_stop_the_others",),
    ),
    # --- plan predicts run
    Mutation(
        "plan-skips-pending-jobs",
        "`plan` predicts `run`",
        "batchrunner/planner.py",
        "    if state is JobState.PENDING or (state is JobState.UNKNOWN and resubmit_unknown):\n",
        "    if False:  # MUTANT\n",
        (
            "tests/test_planner.py::test_plan_predicts_exactly_what_run_submits_follows_holds_and_refuses",
        ),
    ),
    # --- One runner per ledger
    Mutation(
        "ledger-not-locked",
        "One runner per ledger",
        "batchrunner/lock.py",
        "            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
        "            pass  # MUTANT\n",
        (UNATTENDED + "test_second_runner_exits_3_naming_the_holder_while_status_still_works",),
    ),
    Mutation(
        "an-output-folder-shared-by-two-batches",
        "One runner per ledger",
        "batchrunner/lock.py",
        "        self.path = Path(os.path.realpath(out)) / self.NAME\n",
        '        self.path = Path(os.path.realpath(out)) / f"{self.NAME}{id(self)}"  # MUTANT\n',
        (RUN + "test_two_ledgers_never_write_into_one_output_folder_at_once",),
    ),
    Mutation(
        "cancel-beside-moves-a-job-being-sent",
        "One runner per ledger",
        "batchrunner/batch.py",
        "JobState.CANCELLED, expect=job.state, detail=",
        "JobState.CANCELLED, detail=",  # MUTANT
        (UNATTENDED + "test_a_cancel_that_read_a_job_before_the_batch_sent_it_moves_nothing",),
    ),
    Mutation(
        "submit-intent-refusal-crashes-the-run",
        "One runner per ledger",
        "batchrunner/scheduler.py",
        "        except TransitionError:  # `cancel JOB_ID` beside this run got to it first\n",
        "        except ZeroDivisionError:  # MUTANT\n",
        (UNATTENDED + "test_a_job_cancelled_as_the_batch_was_about_to_send_it_is_not_sent",),
    ),
    Mutation(
        "cancel-signals-a-pid-from-another-machine",
        "One runner per ledger",
        "batchrunner/lock.py",
        '        and holder.get("host") == socket.gethostname()\n',
        "        # MUTANT: a pid recorded on another machine is signalled here\n",
        (LEDGER + "test_a_lock_holder_sigterm_would_not_stop_cleanly_is_never_signalled",),
    ),
    Mutation(
        "a-dropped-network-is-not-waited-for",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/reach.py",
        "        return self.patience if self.answered_once else self.first\n",
        "        return self.first  # MUTANT: 10 s, however long the API had been answering\n",
        (UNATTENDED + "test_a_network_that_drops_mid_run_is_waited_for_and_the_run_finishes",),
    ),
    # --- The budget is never exceeded
    Mutation(
        "run-budget-counts-earlier-runs",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "self.options.run_budget, ledger.night_spend))\n",
        "self.options.run_budget, ledger.spend))  # MUTANT: earlier runs count too\n",
        (BUDGET + "test_a_run_budget_caps_each_night_and_the_ledger_budget_the_whole",),
    ),
    Mutation(
        "spend-counts-the-estimate-not-the-bill",
        "The budget is never exceeded",
        "batchrunner/ledger.py",
        '_LATEST = "max(coalesce(cost_usd, 0), coalesce(billed_usd, 0))"\n',
        '_LATEST = "coalesce(cost_usd, 0)"  # MUTANT\n',
        (BUDGET + "test_what_the_provider_billed_above_the_estimate_counts_against_the_budget",),
    ),
    Mutation(
        "budget-running-sum-misses-the-bill",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "                    cap.spent += usd\n",
        "                    pass  # MUTANT\n",
        (BUDGET + "test_what_the_provider_billed_above_the_estimate_counts_against_the_budget",),
    ),
    Mutation(
        "budget-check-and-reservation-interleave",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "        if not self._affordable(job):\n            return job\n",
        "        if not self._affordable(job):\n            return job\n"
        "        await anyio.sleep(0)  # MUTANT: other workers may check before we reserve\n",
        (BUDGET + "test_budget_check_and_reservation_cannot_interleave",),
    ),
    Mutation(
        "budget-strict-comparison",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "        return self.spent + price <= self.limit + 1e-9\n",
        "        return self.spent + price < self.limit  # MUTANT\n",
        (BUDGET + "test_a_budget_that_is_an_exact_multiple_of_the_price_buys_exactly_that_many",),
    ),
    Mutation(
        "budget-without-float-tolerance",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "        return self.spent + price <= self.limit + 1e-9\n",
        "        return self.spent + price <= self.limit  # MUTANT\n",
        (BUDGET + "test_a_budget_that_is_an_exact_multiple_of_the_price_buys_exactly_that_many",),
    ),
    Mutation(
        "budget-forgets-intents-still-gathering",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "            self.spent = self.total() + reserved\n",
        "            self.spent = self.total()  # MUTANT\n",
        (BUDGET + "test_budget_check_and_reservation_cannot_interleave",),
    ),
    Mutation(
        "budget-bound-never-summed-again",
        "The budget is never exceeded",
        "batchrunner/scheduler.py",
        "        if self.spent is None or self.spent + price > self.limit + 1e-9:\n",
        "        if self.spent is None:  # MUTANT\n",
        (BUDGET + "test_a_reservation_given_back_is_spendable_again",),
    ),
    # --- The key goes only to the configured origin
    Mutation(
        "token-sent-to-any-origin",
        "The key goes only to the configured API origin",
        "batchrunner/client.py",
        "        return _is_origin(url, self._api.origin)\n",
        "        return True  # MUTANT\n",
        (RUN + "test_a_foreign_origin_that_is_contacted_gets_no_token",),
    ),
    Mutation(
        "returned-urls-not-rebased",
        "The key goes only to the configured API origin",
        "batchrunner/client.py",
        '    return origin + base.path.rstrip("/") + path_and_query\n',
        "    return str(target)  # MUTANT\n",
        (RUN + "test_token_never_reaches_foreign_or_media_origins",),
    ),
    Mutation(
        "redirects-followed",
        "The key goes only to the configured API origin",
        "batchrunner/transport.py",
        "                headers=request.headers.multi_items(),\n"
        "                data=content or None,\n"
        "                allow_redirects=False,\n",
        "                headers=request.headers.multi_items(),\n"
        "                data=content or None,\n"
        "                allow_redirects=True,  # MUTANT\n",
        (TRANSPORT + "test_a_redirect_is_answered_not_followed",),
    ),
    Mutation(
        "redirects-followed-on-the-lean-path",
        "The key goes only to the configured API origin",
        "batchrunner/transport.py",
        "                headers=headers,\n"
        "                data=content or None,\n"
        "                allow_redirects=False,\n",
        "                headers=headers,\n"
        "                data=content or None,\n"
        "                allow_redirects=True,  # MUTANT\n",
        (TRANSPORT + "test_through_a_proxy_the_lean_path_answers_a_redirect_too",),
    ),
    # --- A file that crashes or hangs the decoder costs its check, not the run
    Mutation(
        "a-crashed-check-ends-the-run",
        "A file that crashes or hangs the decoder costs its check, not the run",
        "batchrunner/inspector.py",
        "            except WorkerGone as gone:\n",
        "            except ZeroDivisionError as gone:  # MUTANT\n",
        (
            INSPECTOR + "test_a_run_outlives_a_decoder_that_crashes_and_resume_finishes_the_job",
            INSPECTOR + "test_a_worker_that_crashes_costs_the_check_not_the_run",
        ),
    ),
    Mutation(
        "a-worker-that-did-not-answer-lent-again",
        "A file that crashes or hangs the decoder costs its check, not the run",
        "batchrunner/inspector.py",
        "                if answered:\n",
        "                if True:  # MUTANT\n",
        (
            INSPECTOR + "test_a_worker_that_hangs_is_killed_and_the_check_fails",
            INSPECTOR + "test_a_check_cancelled_midway_never_lends_its_worker_again",
        ),
    ),
    # --- Videos are written inside --out only
    Mutation(
        "dot-dot-names-allowed",
        "Videos are written inside --out only",
        "batchrunner/paths.py",
        '    if any(part in ("", ".", "..") for part in parts):\n',
        "    if False:  # MUTANT\n",
        (PATHS + "test_unsafe_names_are_refused", PATHS + "test_any_name_either_refused_or_inside"),
    ),
    Mutation(
        "a-link-at-a-download-s-part-written-through",
        "Videos are written inside --out only",
        "batchrunner/paths.py",
        "        found = os.lstat(path)\n",
        "        found = os.stat(path)  # MUTANT\n",
        (PATHS + "test_links_put_at_a_downloads_or_a_posters_name_are_not_written_through",),
    ),
    Mutation(
        "links-below-the-output-folder-not-followed",
        "Videos are written inside --out only",
        "batchrunner/paths.py",
        "            if stat.S_ISLNK(os.lstat(below).st_mode):\n",
        "            if False:  # MUTANT\n",
        (
            PATHS + "test_a_link_anywhere_below_the_folder_is_followed_and_checked",
            PATHS + "test_a_run_never_writes_through_a_symlink_out_of_its_folder",
        ),
    ),
    Mutation(
        "a-long-id-names-a-file-too-long-to-write",
        "Videos are written inside --out only",
        "batchrunner/paths.py",
        "    if name and len(name.encode()) <= SAFE_NAME_CHARS:\n",
        "    if name:  # MUTANT: any length\n",
        (RUN + "test_ids_no_file_name_can_hold_as_they_are_still_get_their_own_video_and_poster",),
    ),
    Mutation(
        "ids-a-file-name-cannot-keep-apart-share-a-poster",
        "Videos are written inside --out only",
        "batchrunner/verify.py",
        "    if name != job_id.lower():\n",
        "    if False:  # MUTANT: the safe name alone\n",
        (RUN + "test_ids_no_file_name_can_hold_as_they_are_still_get_their_own_video_and_poster",),
    ),
    Mutation(
        "an-output-cell-of-any-length",
        "Videos are written inside --out only",
        "batchrunner/paths.py",
        "    if longest > MAX_NAME_BYTES:\n",
        "    if False:  # MUTANT\n",
        (PATHS + "test_an_output_name_too_long_for_a_file_system_is_refused",),
    ),
    Mutation(
        "a-cancel-taken-on-trust",
        "Nothing is bought twice without your say-so",
        "batchrunner/batch.py",
        "                answers |= await _how_they_ended(client, accepted) if accepted else {}\n",
        "                pass  # MUTANT\n",
        (UNATTENDED + "test_a_cancel_the_running_job_does_not_heed_loses_nothing",),
    ),
    Mutation(
        "a-renamed-row-bought-again",
        "Nothing is bought twice without your say-so",
        "batchrunner/planner.py",
        "    renamed = _renamed(manifest, ledger, stored) if ledger and not replace_changed "
        "else {}\n",
        "    renamed: dict[str, tuple[str, tuple[str, ...]]] = {}  # MUTANT\n",
        (
            "tests/test_planner.py::test_a_row_whose_id_changed_is_not_bought_again_under_the_new_id",
        ),
    ),
    Mutation(
        "an-id-less-sheet-bought-again-on-another-model",
        "Nothing is bought twice without your say-so",
        "batchrunner/planner.py",
        "        found.update(_another_way(new, ledger, named))\n",
        "        pass  # MUTANT\n",
        ("tests/test_planner.py::test_an_id_less_sheet_sent_to_another_model_is_not_bought_again",),
    ),
    Mutation(
        "bought-again-when-count-or-matrix-change",
        "Nothing is bought twice without your say-so",
        "batchrunner/batch.py",
        "    manifest = as_recorded(manifest, ledger)  # jobs held under an earlier label\n",
        "    pass  # MUTANT\n",
        (
            TAKES + "test_raising_count_from_1_to_2_buys_one_more_take_of_each_row",
            TAKES + "test_lowering_count_to_1_buys_nothing",
            TAKES + "test_a_matrix_of_a_fields_default_buys_only_the_new_values",
            TAKES + "test_a_take_bought_by_a_gallery_reroll_is_that_take_of_count",
        ),
    ),
    Mutation(
        "a-full-disk-is-each-jobs-problem",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        "                self.halt(OutputUnwritableError(str(exc)))  # every later download would "
        "fail\n",
        "                pass  # MUTANT\n",
        (UNATTENDED + "test_a_full_disk_stops_buying_and_keeps_every_paid_result",),
    ),
    Mutation(
        "overdue-on-the-clock-alone",
        "Stuck jobs are cancelled",
        "batchrunner/scheduler.py",
        "            # a fresh status before anything else, an overdue job's too: it may have "
        "finished\n",
        "            if why == 'overdue':  # MUTANT\n"
        "                return await self._give_up(job, self._overdue(job) or why)\n",
        (
            STREAMS
            + "test_a_job_that_finished_while_its_stream_said_nothing_is_fetched_not_cancelled",
        ),
    ),
    Mutation(
        "a-dead-media-host-is-each-jobs-problem",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        "        if len(alike) < SAME_DOWNLOAD_FAILURES_TO_STOP:\n",
        "        if True:  # MUTANT\n",
        (RUN + "test_a_media_host_out_of_reach_stops_the_buying_and_keeps_every_result",),
    ),
    Mutation(
        "old-lost-files-stop-every-nightly-run",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        "        if isinstance(self.run_error, MediaUnreachableError) or job_id not in "
        "self._fetched:\n",
        "        if isinstance(self.run_error, MediaUnreachableError):  # MUTANT\n",
        (RUN + "test_old_results_whose_files_are_refused_do_not_stop_a_later_run_buying",),
    ),
    Mutation(
        "a-full-ledger-disk-is-a-traceback",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/runtime.py",
        "        raise refused from exc  # nothing more may be done that the ledger cannot "
        "record\n",
        "        raise  # MUTANT\n",
        (UNATTENDED + "test_a_ledger_whose_disk_fills_stops_the_run_with_one_line",),
    ),
    Mutation(
        "an-export-over-the-manifest",
        "Videos are written inside --out only",
        "batchrunner/export.py",
        "        not_over_an_input(destination, ledger.inputs())\n",
        "        pass  # MUTANT\n",
        ("tests/test_cli.py::test_no_output_is_written_over_the_manifest_or_the_ledger",),
    ),
    Mutation(
        "a-moved-image-fails-every-job",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        "            return job  # stays pending: the next run sends it once the file is right\n",
        '            return self._fail(job, S.PENDING, f"input file problem: {exc}")  # MUTANT\n',
        (UNATTENDED + "test_jobs_whose_image_went_away_stay_pending_with_one_reason",),
    ),
    Mutation(
        "a-redirect-fails-the-job",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/answers.py",
        "        return RedirectedError(\n",
        "        return FinalError(  # MUTANT\n",
        (RUN_ERRORS + "test_a_redirect_stops_the_run_and_fails_no_job",),
    ),
    Mutation(
        "a-web-page-answering-submits-is-taken-for-the-api",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        "                return self._not_the_api(unknown, exc)  # a web page answered: "
        "no queue API\n",
        "                return unknown  # MUTANT\n",
        (RUN_ERRORS + "test_a_base_url_that_answers_a_web_page_stops_the_run_and_spends_nothing",),
    ),
    Mutation(
        "the-same-failure-bought-forty-times",
        "Account and network trouble stops the run, not the jobs",
        "batchrunner/scheduler.py",
        '            self.halt(RepeatedFailureError(f"{shown}: {reason}"))\n',
        "            pass  # MUTANT\n",
        ("tests/test_run.py::test_the_first_jobs_failing_alike_stop_the_buying",),
    ),
    Mutation(
        "deleted-rows-bought-anyway",
        "Nothing is bought twice without your say-so",
        "batchrunner/scheduler.py",
        "        return ids, self.ledger.sendable_keys() if self.sending else []\n",
        "        return ids, self.ledger.job_keys([S.PENDING]) if self.sending else []  # MUTANT\n",
        ("tests/test_planner.py::test_rows_deleted_before_they_were_sent_are_not_bought",),
    ),
    Mutation(
        "held-jobs-keep-a-stale-price",
        "The budget is never exceeded",
        "batchrunner/batch.py",
        "        reprice_pending(ledger)  # also what `prepare` put back (`retry`)\n",
        "        pass  # MUTANT\n",
        (BUDGET + "test_jobs_recorded_before_models_price_changed_are_bought_at_the_new_price",),
    ),
    Mutation(
        "deleted-failed-rows-retried",
        "Nothing is bought twice without your say-so",
        "batchrunner/batch.py",
        "        for job in ledger.in_sheet(wanted):  # not a job whose row was deleted: "
        "--ids sends it\n",
        "        for job in ledger.jobs(wanted):  # MUTANT\n",
        (
            "tests/test_planner.py::test_a_failed_row_deleted_from_the_sheet_no_longer_fails_the_night",
        ),
    ),
    Mutation(
        "a-timeout-cancel-taken-on-trust",
        "Nothing is bought twice without your say-so",
        "batchrunner/scheduler.py",
        "            ended = (await how_they_end(self.client, [job])).get(job.job_id)\n",
        '            return self._fail(job, job.state, f"{reason}; {answer}")  # MUTANT\n',
        (
            UNATTENDED + "test_a_stuck_job_that_finishes_despite_its_cancel_is_fetched_not_failed",
            UNATTENDED + "test_a_stuck_job_still_going_after_its_cancel_stays_followed",
        ),
    ),
    Mutation(
        "xlsx-text-as-formula",
        "What a manifest or a server says stays text",
        "batchrunner/export.py",
        '                _text_not_formulas(writer.sheets["jobs"], frame)\n',
        "                pass  # MUTANT\n",
        (
            "tests/test_api.py::test_an_xlsx_export_keeps_text_that_starts_with_an_equals_sign_as_text",
        ),
    ),
    # --- A ledger that is not ours, newer, or corrupt is refused and left alone
    Mutation(
        "foreign-sqlite-file-taken-as-a-ledger",
        "A foreign, newer or corrupt ledger is refused",
        "batchrunner/migrations.py",
        "    if not applied:\n",
        "    if False:  # MUTANT\n",
        (UNATTENDED + "test_unusable_ledger_exits_2_and_is_left_alone",),
    ),
    Mutation(
        "newer-ledger-accepted",
        "A foreign, newer or corrupt ledger is refused",
        "batchrunner/migrations.py",
        "    if newer:\n",
        "    if False:  # MUTANT\n",
        (LEDGER + "test_refuses_a_ledger_from_a_newer_version",),
    ),
    Mutation(
        "near-miss-column-kept-as-metadata",
        "Nothing unpriced or misspelt is bought",
        "batchrunner/columns.py",
        "            twin = near_miss(name, present)\n"
        "            near = near_miss(name, absent, parts=True) or synonym(name, absent)\n",
        "            twin, near = None, None  # MUTANT: every unknown column is metadata\n",
        (
            "tests/test_models.py::test_a_near_miss_column_exits_2_naming_the_field_and_sends_nothing",
        ),
    ),
    Mutation(
        "another-word-for-a-field-kept-as-metadata",
        "Nothing unpriced or misspelt is bought",
        "batchrunner/columns.py",
        " or synonym(name, absent)\n",
        "\n",  # MUTANT: `seconds`, `sound`, `Model ID` are metadata, the defaults bought
        (
            "tests/test_manifest.py::test_a_column_that_is_a_field_cut_short_or_with_a_unit_is_an_error",
        ),
    ),
    Mutation(
        "rehearsal-and-real-jobs-share-a-ledger",
        "Nothing is bought twice without your say-so",
        "batchrunner/batch.py",
        "    simulated = origins.pop(SIMULATOR_ORIGIN, 0)\n",
        "    simulated = origins.clear() or 0  # MUTANT: any ledger goes\n",
        ("tests/test_cli.py::test_a_rehearsal_and_a_real_batch_never_share_a_ledger",),
    ),
    Mutation(
        "retry-dry-run-buys",
        "Nothing is bought twice without your say-so",
        "batchrunner/cli.py",
        '    if by_ids["dry_run"]:\n',
        "    if False:  # MUTANT: --dry-run taken and ignored\n",
        (
            "tests/test_takes.py::test_retry_dry_run_without_ids_lists_what_it_would_send_and_sends_nothing",
        ),
    ),
    Mutation(
        "stopped-run-not-carried",
        "The budget is never exceeded",
        "batchrunner/ledger.py",
        "            if finished is not None and code not in _STOPPED_SHORT:\n",
        "            if finished is not None:  # MUTANT: only a killed run is carried on\n",
        (
            "tests/test_budget.py::test_a_resume_after_a_kill_counts_the_killed_runs_spend_against_the_run_budget",
        ),
    ),
    Mutation(
        "model-cell-ignored",
        "Nothing unpriced or misspelt is bought",
        "batchrunner/manifest.py",
        "            text = given or spec.endpoint_id\n",
        "            text = spec.endpoint_id  # MUTANT: every row on --model\n",
        (
            MODEL_COLUMN + "test_each_row_is_checked_against_its_own_model",
            MODEL_COLUMN + "test_a_sheet_of_several_models_runs_end_to_end",
        ),
    ),
    Mutation(
        "a-csv-cut-mid-row-is-bought",
        "Nothing unpriced or misspelt is bought",
        "batchrunner/cells.py",
        "        if short is not None and not ended:\n",
        "        if False:  # MUTANT: a half-written last row is read with empty cells\n",
        ("tests/test_manifest.py::test_a_bad_manifest_names_row_line_and_column",),
    ),
    Mutation(
        "a-key-no-header-carries-is-taken",
        "`unknown` happens only when a submit's answer was lost",
        "batchrunner/providers.py",
        "    if foreign is not None:  # “quotes”, a dash or a letter a word processor put there\n",
        "    if False:  # MUTANT\n",
        (
            RUN_ERRORS
            + "test_a_key_pasted_with_typographic_quotes_sends_nothing_and_marks_nothing_unknown",
        ),
    ),
    Mutation(
        "an-unwritable-header-called-unknown",
        "`unknown` happens only when a submit's answer was lost",
        "batchrunner/answers.py",
        "    if isinstance(exc, httpx.LocalProtocolError):  # a header no HTTP can carry: "
        "refused unsent\n",
        "    if False:  # MUTANT: taken for a submit whose answer was lost\n",
        (TRANSPORT + "test_a_header_no_http_carries_is_refused_unsent_and_stops_the_run",),
    ),
]


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # caught, SURVIVED, STALE, ERROR
    seconds: float
    detail: str = ""


def problem(mutation: Mutation, root: Path = ROOT) -> str | None:
    """Why ``mutation`` cannot be applied to the source under ``root``, or None."""
    path = root / mutation.file
    if not path.is_file():
        return f"{mutation.file} does not exist"
    found = path.read_text(encoding="utf-8").count(mutation.original)
    if found != 1:
        return f"the snippet occurs {found} times in {mutation.file} (expected exactly once)"
    return None


def scratch_copy(parent: Path) -> Path:
    copy = parent / "repo"
    shutil.copytree(ROOT, copy, ignore=IGNORED)
    return copy


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONSAFEPATH", None)
    env["COLUMNS"] = "300"  # pytest's summary lines keep the assertion that failed
    return env


def check_imports_copy(copy: Path, env: dict[str, str]) -> None:
    """Fail loudly if ``python -m batchrunner`` in the copy would import another tree."""
    probe = "import batchrunner, sys; sys.stdout.write(batchrunner.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, env=env, capture_output=True, text=True, check=True
    ).stdout
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the scratch copy imports batchrunner from {found}, not {copy}")


def run_tests(copy: Path, tests: Sequence[str], *, fail_fast: bool = True) -> tuple[int, str]:
    env = environment(copy)
    check_imports_copy(copy, env)
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--basetemp={copy.parent / 'tmp'}", *(["-x"] if fail_fast else []), *tests,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        return -1, f"timed out after {RUN_TIMEOUT} s: {exc}"
    return done.returncode, done.stdout + done.stderr


def try_mutation(mutation: Mutation, keep: bool) -> Outcome:
    started = time.monotonic()
    parent = Path(tempfile.mkdtemp(prefix=f"batchrunner-mutate-{mutation.name}-"))
    try:
        copy = scratch_copy(parent)
        why = problem(mutation, copy)
        if why is not None:
            return Outcome(mutation, "STALE", 0.0, why)
        target = copy / mutation.file
        text = target.read_text(encoding="utf-8")
        target.write_text(text.replace(mutation.original, mutation.replacement), "utf-8")
        code, output = run_tests(copy, mutation.tests)
        seconds = time.monotonic() - started
        if code == 1:
            failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
            return Outcome(mutation, "caught", seconds, failed[0] if failed else "")
        if code == 0:
            return Outcome(mutation, "SURVIVED", seconds, "every listed test passed")
        if code in (2, 3, 4, 5):  # interrupted, internal error, usage error, nothing collected
            return Outcome(mutation, "STALE", seconds, _tail(output))
        return Outcome(mutation, "ERROR", seconds, _tail(output))
    finally:
        if not keep:
            shutil.rmtree(parent, ignore_errors=True)


def baseline(mutations: Sequence[Mutation]) -> tuple[bool, str]:
    """Every listed test passes on an unmutated copy (else "caught" would mean nothing)."""
    tests = sorted({test for m in mutations for test in m.tests})
    parent = Path(tempfile.mkdtemp(prefix="batchrunner-mutate-baseline-"))
    try:
        code, output = run_tests(scratch_copy(parent), tests, fail_fast=False)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    return code == 0, _tail(output, 40)


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def table(outcomes: Sequence[Outcome], *, why: bool = False) -> str:
    """One row per mutation, grouped by guarantee; its tests one per line."""
    rows: list[tuple[str, str, str, str]] = []
    guarantee = None
    for o in outcomes:
        if o.mutation.guarantee != guarantee:
            guarantee = o.mutation.guarantee
            rows.append((f"[{guarantee}]", "", "", ""))
        tests = [t.split("::")[-1] for t in o.mutation.tests]
        rows.append((o.mutation.name, o.verdict, f"{o.seconds:.0f}", tests[0]))
        rows.extend(("", "", "", test) for test in tests[1:])
        if why and o.detail:
            rows.append(("", "", "", f"  -> {o.detail[:250]}"))
    header = ("mutation", "result", "s", "tests")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]

    def line(row: tuple[str, str, str, str]) -> str:
        name, verdict, seconds, tests = row
        cells = [name.ljust(widths[0]), verdict.ljust(widths[1]), seconds.rjust(widths[2])]
        return " | ".join([*cells, tests]).rstrip()

    rule = "-+-".join("-" * w for w in widths) + "-+-" + "-" * 5
    return "\n".join([line(header), rule, *map(line, rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="only", action="append", help="names containing this")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutations run at once (2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("-v", "--why", action="store_true", help="show the failure that caught it")
    args = parser.parse_args(argv)

    chosen = [m for m in MUTATIONS if not args.only or any(k in m.name for k in args.only)]
    if not chosen:
        print("no mutation matches", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.guarantee}]  {m.file}\n    {' '.join(m.tests)}")
        return 0

    started = time.monotonic()
    stale = [Outcome(m, "STALE", 0.0, why) for m in chosen if (why := problem(m)) is not None]
    runnable = [m for m in chosen if all(o.mutation is not m for o in stale)]
    if not args.no_baseline:
        print("baseline: the listed tests on an unmutated copy ...", flush=True)
        passed, output = baseline(runnable)
        if not passed:
            print(f"the tests fail without any mutation; fix that first:\n{output}")
            return 2
    outcomes = list(stale)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(try_mutation, m, args.keep) for m in runnable]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            name, seconds = outcome.mutation.name, outcome.seconds
            print(f"{outcome.verdict:8} {name} ({seconds:.0f} s)", flush=True)
    outcomes.sort(key=lambda o: chosen.index(o.mutation))
    print()
    print(table(outcomes, why=args.why))
    for o in outcomes:
        if o.verdict != "caught":
            print(f"\n{o.verdict}: {o.mutation.name} ({o.mutation.file})\n{o.detail}")
    caught = sum(o.verdict == "caught" for o in outcomes)
    print(
        f"\n{caught} of {len(outcomes)} mutations caught in {time.monotonic() - started:.0f} s "
        f"({args.jobs} at a time)"
    )
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
