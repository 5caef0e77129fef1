"""batchrunner: a spreadsheet in, verified video files out, through asynchronous queue APIs.

The Python API (see :mod:`batchrunner.api`)::

    batchrunner.plan(manifest, **options)    -> Plan
    batchrunner.run(manifest, **options)     -> Summary
    await batchrunner.arun(manifest, ...)    -> Summary (async code: its loop goes on)
    batchrunner.results(ledger)              -> pandas.DataFrame

Errors a caller may catch: ``batchrunner.BatchrunnerError`` (every one), ``UsageError`` (an
option, a path, a key), ``ManifestError`` (a manifest's problems, each with its row),
``LedgerError`` (a ledger that cannot be opened or written).

Imported on first use, so ``import batchrunner`` (and the CLI's ``--help``) stays light. The
library logs (the ``batchrunner`` loggers) and never prints: its records reach whatever logging
the caller sets up, and nothing when there is none (a ``NullHandler``, not Python's last-resort
handler writing warnings to stderr).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "BatchrunnerError",
    "LedgerError",
    "ManifestError",
    "Plan",
    "Summary",
    "UsageError",
    "__version__",
    "arun",
    "plan",
    "results",
    "run",
]
_ERRORS = ("BatchrunnerError", "LedgerError", "ManifestError", "UsageError")

logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from batchrunner.api import arun, plan, results, run
    from batchrunner.errors import BatchrunnerError, LedgerError, ManifestError, UsageError
    from batchrunner.planner import Plan
    from batchrunner.report import Summary


def __getattr__(name: str) -> Any:
    if name in ("plan", "run", "arun", "results"):
        from batchrunner import api

        return getattr(api, name)
    if name == "Plan":
        from batchrunner.planner import Plan

        return Plan
    if name == "Summary":
        from batchrunner.report import Summary

        return Summary
    if name in _ERRORS:
        from batchrunner import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'batchrunner' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What a notebook's tab completion offers: the API, imported on first use, too."""
    return sorted({*globals(), *__all__})
