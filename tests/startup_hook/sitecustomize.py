"""A test hook, not part of batchrunner: Python imports ``sitecustomize`` at startup from the
path, so a process started with this folder on ``PYTHONPATH`` (``tests/test_startup.py``) stops
when it begins to import the module named in ``BLOCK_IMPORT``. It creates the file named in
``BLOCKED_FILE`` to say it is there, then sleeps until a signal (the test's Ctrl-C) raises in
the middle of that import, as it would in the middle of a slow import on a user's machine."""

import os
import sys
import time

_NAME = os.environ.get("BLOCK_IMPORT")
_SAY = os.environ.get("BLOCKED_FILE")


class _Blocker:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name != _NAME:
            return None
        sys.meta_path.remove(self)
        if _SAY:
            open(_SAY, "w").close()
        deadline = time.monotonic() + 60  # a test that never signals still ends
        while time.monotonic() < deadline:
            time.sleep(0.5)
        return None


if _NAME:
    sys.meta_path.insert(0, _Blocker())
