"""Ctrl-C while ``batchrunner`` is still starting (importing its modules, before any command
runs) ends quietly with exit 130, as it does at any other moment.

The process is real (``python -m batchrunner`` and the installed console script) and so is the
signal; ``tests/startup_hook`` holds the process inside an import until it comes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim_helpers import wait_until

HOOK = Path(__file__).parent / "startup_hook"
CONSOLE_SCRIPT = Path(sys.executable).parent / "batchrunner"


@pytest.mark.parametrize("entry", ["python -m batchrunner", "console script"])
@pytest.mark.parametrize("module", ["click", "batchrunner.simulator", "batchrunner.cli"])
def test_ctrl_c_while_starting_ends_quietly_with_exit_130(
    tmp_path: Path, entry: str, module: str
) -> None:
    blocked = tmp_path / "blocked"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HOOK), os.environ.get("PYTHONPATH", "")]),
        "BLOCK_IMPORT": module,
        "BLOCKED_FILE": str(blocked),
    }
    start = (
        [sys.executable, "-m", "batchrunner"] if entry.startswith("python") else [CONSOLE_SCRIPT]
    )
    proc = subprocess.Popen(
        [*start, "status", "--ledger", str(tmp_path / "none.db")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(blocked.exists, timeout=30, what=f"the import of {module}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
    assert err.decode().strip() == "interrupted"
    assert out == b""


def test_the_entry_point_exits_with_the_documented_code() -> None:
    """The entry point may not import the exit-code enum before it can hear a Ctrl-C: it
    spells 130 itself, and must agree with it."""
    from batchrunner.__main__ import INTERRUPTED
    from batchrunner.errors import ExitCode

    assert INTERRUPTED == ExitCode.INTERRUPTED
