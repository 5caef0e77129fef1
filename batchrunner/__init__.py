"""batchrunner: a spreadsheet in, verified video files out, through asynchronous queue APIs."""

from __future__ import annotations

__version__ = "0.1.0"
