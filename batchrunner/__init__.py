"""batchrunner: a spreadsheet in, verified video files out, through asynchronous queue APIs.

The Python API (see :mod:`batchrunner.api`)::

    batchrunner.plan(manifest, **options)    -> Plan
    batchrunner.run(manifest, **options)     -> Summary
    batchrunner.results(ledger)              -> pandas.DataFrame

Imported on first use, so ``import batchrunner`` (and the CLI's ``--help``) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Plan", "Summary", "__version__", "plan", "results", "run"]

if TYPE_CHECKING:
    from batchrunner.api import plan, results, run
    from batchrunner.planner import Plan
    from batchrunner.report import Summary


def __getattr__(name: str) -> Any:
    if name in ("plan", "run", "results"):
        from batchrunner import api

        return getattr(api, name)
    if name == "Plan":
        from batchrunner.planner import Plan

        return Plan
    if name == "Summary":
        from batchrunner.report import Summary

        return Summary
    raise AttributeError(f"module 'batchrunner' has no attribute {name!r}")
