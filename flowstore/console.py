"""The console scripts `flowstore` and `trainers`, and `python -m` of both.

They import their command-line modules here, inside a guard, because importing them takes
0.1-0.2 s (Typer, numpy, the dataset catalogue) before `run_app` can install its Ctrl-C
handling: a Ctrl-C in that time printed a KeyboardInterrupt traceback instead of the one line
every other interrupted command prints.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def flowstore() -> None:
    """`flowstore`: `flowstore.cli.main`."""
    _run("flowstore.cli")


def trainers() -> None:
    """`trainers`: `trainers.cli.main`."""
    _run("trainers.cli")


def _run(module: str) -> None:
    try:
        importlib.import_module(module).main()
    except KeyboardInterrupt:  # before or after the command's own handling was in place
        sys.stderr.write("error: interrupted\n")
        die_by_sigint()


def die_by_sigint() -> None:
    """End the process as SIGINT ends one that does not catch it, as Python does on a Ctrl-C
    nothing catches, so that a shell loop running the command stops too (bash goes on after
    a child that merely exits 130); the shell shows 130 either way."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    sys.exit(130)  # (only where SIGINT cannot end it)
