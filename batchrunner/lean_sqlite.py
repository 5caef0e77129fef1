"""sqlite-utils without pandas: the ledger's import, made cheap.

``sqlite_utils.db`` imports pandas and numpy when they are installed (only to map their column
types), which costs about 0.3 s and 100 MB — more than the rest of ``batchrunner --help``,
``status`` or ``validate``. The ledger never hands pandas objects to sqlite-utils (every value
it writes is a ``str``, ``int``, ``float`` or ``None``; its tables come from migrations), so
sqlite-utils is imported here with those two hidden: import ``sqlite_utils`` from this module.
If pandas is already loaded (a command that reads a manifest), nothing is hidden.
"""

from __future__ import annotations

import sys

_HIDDEN = ("pandas", "numpy")


def _import_without_pandas() -> None:
    hidden = [name for name in _HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import sqlite_utils
        import sqlite_utils.migrations  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]


_import_without_pandas()

import sqlite_utils  # noqa: E402
from sqlite_utils.migrations import Migrations  # noqa: E402

__all__ = ["Migrations", "sqlite_utils"]
