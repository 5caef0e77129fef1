"""The ``batchrunner`` command's entry point (``python -m batchrunner`` and the console script).

It imports nothing of its own before it can hear a Ctrl-C: the command's modules (click, the
option declarations, the registry) take a moment to import, and a Ctrl-C meanwhile ends the
process as one at any other moment does (one line, exit 130), not with a traceback from the
middle of an import. From there on :func:`batchrunner.cli.main` handles it.
"""

import sys

INTERRUPTED = 130  # batchrunner.errors.ExitCode.INTERRUPTED, not imported: that is an import


def main() -> None:
    try:
        from batchrunner.cli import main as command
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED)
    command()


if __name__ == "__main__":
    main()
