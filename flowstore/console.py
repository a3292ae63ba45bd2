"""The console scripts `flowstore` and `trainers`, and `python -m` of both.

They import their command-line modules here, inside a guard, because importing them takes
0.1-0.2 s (Typer, numpy, the dataset catalogue) before `run_app` can install its Ctrl-C
handling: a Ctrl-C in that time printed a KeyboardInterrupt traceback instead of the one line
every other interrupted command prints.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
from typing import Sequence


def flowstore() -> None:
    """`flowstore`: `flowstore.cli.main`.

    OpenBLAS (numpy's, and OpenCV's own copy) gets one thread unless the user says otherwise:
    flowstore does no linear algebra worth threads (its parallelism is one sample per Dask
    worker), and each copy otherwise maps buffers for every core at import, 40 MiB and more,
    and under an address-space limit (`ulimit -v`) the import of OpenCV that starts a build
    then ended in a segmentation fault without a word (found by review)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _run("flowstore.cli")


def trainers() -> None:
    """`trainers`: `trainers.cli.main`."""
    _run("trainers.cli")


def _run(module: str) -> None:
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # (not where ignored)
        signal.signal(signal.SIGTERM, stopped_while_importing)
    try:
        importlib.import_module(module).main()
    except KeyboardInterrupt:  # before or after the command's own handling was in place
        sys.stderr.write("error: interrupted\n")
        die_by_sigint(_STOPPED_BY[-1] if _STOPPED_BY else signal.SIGINT)


#: The SIGTERM that `stopped_while_importing` took (the process then ends by it).
_STOPPED_BY: list[int] = []


def stopped_while_importing(signum: int, frame: object) -> None:
    """SIGTERM as a Ctrl-C while the command's modules load, before `run_app` puts its own
    handler in place (which replaces this one): it ended the process on the spot without a
    word, where a Ctrl-C at the same moment said "error: interrupted" (found by review)."""
    _STOPPED_BY.append(signum)
    raise KeyboardInterrupt


def die_by_sigint(signum: int = signal.SIGINT) -> None:
    """End the process as the signal `signum` (SIGINT, or the SIGTERM `run_app` handles alike)
    ends one that does not catch it, as Python does on a Ctrl-C nothing catches, so that a
    shell loop running the command stops too (bash goes on after a child that merely exits
    130), and `timeout`, Slurm or a container runtime sees the SIGTERM it sent (143)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # (only where the signal cannot end it)


#: Control characters (C0, DEL, C1): what a file name may hold that a terminal does not print.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """`text` with each control character written as Python escapes it (``\\n``, ``\\x1b``).

    A sample's id and its failure's reason name its file, and a file name may hold any
    character but ``/``: a newline split a failure's line in two (a reader of the listing, or
    a script, took the rest for another sample) and an escape sequence was obeyed by the
    terminal. The store keeps the id as it is; only what is printed is escaped."""
    return _CONTROL.sub(lambda match: ascii(match.group())[1:-1], text)


def some_named(names: Sequence[str], most: int = 3) -> str:
    """The first `most` of `names` as a message lists them, and how many more: one line of
    a message stays a line where a list runs to hundreds (a Kinetics-400 run predicting a
    Kinetics-700 store named 300 classes, some 10 KB, on `predict`'s one line; found by
    review)."""
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def sample_line(sample: str, why: str) -> str:
    """How a sample is named with what befell it, in every listing (a build's failures,
    `verify`'s bad samples, a repair's, internal errors): ``  id: why``, one line."""
    return one_line(f"  {sample}: {why}")
