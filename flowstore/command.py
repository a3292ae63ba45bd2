"""How both command lines (`flowstore`, `trainers`) run a command, whatever it does.

Every user error is one `error:` line and exit code 2 (`fail`, `fail_input`, and `run_app` for
Click's usage errors); a bug is a traceback and exit code 3; a limit of the system's is one
line naming what to ask for less; Ctrl-C and SIGTERM run each command's own clean-up, then end
the process by the signal; standard streams that are closed or cannot hold a name are dealt
with before any work. The commands themselves, which parse, call the core and print, are in
`flowstore.cli` and `trainers.cli`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn

import typer

from flowstore.console import die_by_sigint, one_line, stopped_while_importing
from flowstore.errors import (ASK_FOR_LESS, FlowstoreError, raised_with, resource_advice,
                              resource_exhaustion)


def add_version_option(typer_app: typer.Typer, prog_name: str) -> None:
    """Give a command line `--version`: `flowstore.__version__`, which `flowstore` and
    `trainers` share, which every store built records, and from which the installed
    distribution takes its own (pyproject.toml), so a bug report names the code that built a
    store whether flowstore runs installed or from a source tree."""

    def show_version(value: bool) -> None:
        if value:
            from flowstore import __version__

            typer.echo(f"{prog_name} {__version__}")
            raise typer.Exit()

    @typer_app.callback()
    def _options(_version: bool = typer.Option(False, "--version", callback=show_version,
                                               is_eager=True,
                                               help="Print the version and exit.")) -> None:
        pass


#: Exit codes: 1 for samples that failed (bad data), 2 for a usage or store error, and this one
#: for a bug in flowstore met while building (tracebacks in the store's error log).
INTERNAL_ERROR_EXIT = 3


def given_path(text: str) -> str:
    """A path or store URL option or argument, refused when empty: `Path("")` is `Path(".")`,
    so an empty value (an unset shell variable, `--source "$DATA"`) read the current folder,
    or wrote into it."""
    if not text:
        raise typer.BadParameter("an empty path (an unset shell variable?)")
    return text


def path_value(text: str) -> Path:
    """A local path option or argument (`given_path`), refused where it exists but cannot be
    read, as Typer's own path type refused it (a folder of mode 000 was a PermissionError's
    traceback deep in `estimate`, `synth` and `trainers report`), and where it is a URL or a
    URL's near miss (`flowstore.store.names_url`): `Path` made `s3://b/src` the local
    `s3:/b/src`, said to be a source folder that "does not exist"."""
    from flowstore.store import is_url, names_url

    if names_url(given_path(text)):
        raise typer.BadParameter(f"a local path is needed, not a URL: {text!r}" + (
            "" if is_url(text) else f" (a local folder so named is given as './{text}')"))
    if os.path.exists(text) and not os.access(text, os.R_OK):
        raise typer.BadParameter(f"path {text!r} is not readable.")
    return Path(text)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: how every user error ends (of `flowstore` and
    `trainers` alike). A message of several lines is joined into one, and a control character
    it holds (a path's tab or ESC) printed escaped (`one_line`).

    Where the error being handled came of a limit of the system's (no descriptor left under
    `ulimit -n`, no memory) or of a current folder deleted since, that is raised instead, for
    `run_app` to say with what to do about it, as it says it wherever else it is met: the
    places that turn the system's refusals into one line named a file or a folder as if it were
    at fault ("--runs-dir 'runs' cannot be created or written (Too many open files)", "Too many
    open files: '.../source_hash/zarr.json'"), or said `[Errno 2] No such file or directory`
    (found by review)."""
    cause = next((error for error in raised_with(sys.exc_info()[1])
                  if resource_exhaustion(error) or _current_folder_lost(error)), None)
    if cause is not None:
        raise cause
    typer.echo("error: " + one_line(" ".join(line.strip() for line in str(message).splitlines())),
               err=True)
    raise typer.Exit(code)


#: Said where a command ran in a folder deleted since (`_current_folder_lost`).
CURRENT_FOLDER_LOST = ("the current folder no longer exists (deleted while the shell was in "
                       "it): cd to one that does, or give absolute paths")


def _current_folder_lost(exc: BaseException) -> bool:
    """Whether `exc` is Python's "No such file or directory" of a current folder that is gone:
    `os.getcwd()` and `os.path.abspath` of a relative path raise it naming no file, and it was
    `error: [Errno 2] No such file or directory` (a build), or "internal error" (`flowstore
    show`, `trainers run`; found by review)."""
    if not (isinstance(exc, FileNotFoundError) and exc.filename is None):
        return False
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


#: Set by `fail_interrupted`, read by `run_app` once the command has returned.
_INTERRUPTED = False
#: Set by `run_app`'s SIGINT handler: Typer turns a KeyboardInterrupt that no command caught
#: into exit code 130 without a word, which this tells apart from a command's own 130.
_CTRL_C = False
#: The signal that stopped the command (`_on_ctrl_c`): the process ends by it (`run_app`).
_STOPPED_BY = signal.SIGINT
#: A signal `_on_ctrl_c` delivers again, out of a finalizer, a moment later; `run_app` cancels
#: it once the command has ended: it landed after the command's end (a run written, its table
#: printed) and ended the process with exit 130 and no word.
_REDELIVERY: threading.Timer | None = None


def _on_ctrl_c(signum: int, frame: Any) -> None:
    """SIGINT, and SIGTERM (what `timeout`, Slurm's `scancel` and `docker stop` send), as a
    KeyboardInterrupt: every command's Ctrl-C handling then runs for both (a build records its
    done samples; a run's unfinished folder is removed). SIGTERM ended the process on the spot,
    and left a run's whole-model work folder in the runs directory for good."""
    global _CTRL_C, _STOPPED_BY, _REDELIVERY
    _CTRL_C, _STOPPED_BY = True, signum
    if _in_finalizer(frame):
        # Raised here, the KeyboardInterrupt would leave a `__del__` (s3fs's connections are
        # collected in the middle of a build), where Python prints "Exception ignored" and
        # drops it: the command ran on to its end, exit 0, as if never interrupted. Delivered
        # again a moment later, outside it.
        _REDELIVERY = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        _REDELIVERY.start()
        return
    signal.default_int_handler(signum, frame)


def _in_finalizer(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def stop_requested() -> bool:
    """Whether a Ctrl-C or SIGTERM has reached this command (`_on_ctrl_c`), whether or not the
    KeyboardInterrupt it raised got through: a library that catches everything swallows it
    (Keras' `pythonify_logs`, run on every batch's logs in `fit` and `evaluate`, has a bare
    `except: pass`; on the JAX backend, where the main thread waits there for each step,
    nearly every Ctrl-C landed in it, and `trainers run` trained on and wrote its run, exit 0;
    found by review). Code that runs such a library asks this and stops itself."""
    return _CTRL_C


def fail_interrupted(message: str) -> None:
    """Ctrl-C: one line and exit code 130; run as a process (`run_app`), the command then ends
    by SIGINT (`flowstore.console.die_by_sigint`)."""
    global _INTERRUPTED
    _INTERRUPTED = True
    typer.echo("error: " + message, err=True)
    raise typer.Exit(130)


def fail_system(exc: OSError) -> None:
    """A full disk, a permission, a read-only file system met while writing: the system's words,
    on one line."""
    fail(f"{exc.strerror or exc}: {exc.filename!r}" if exc.filename else str(exc))


#: What a command that reads a source or writes a store reports as bad input (`fail_input`),
#: not as a bug: flowstore's own errors, and the system's (a full disk, an unreadable folder of
#: the source). `estimate` caught the first alone, and an OSError of the source's listing was an
#: internal error, traceback and all, where `build` said it in one line.
INPUT_ERRORS = (FlowstoreError, OSError)


def fail_input(exc: Exception) -> None:
    """One of `INPUT_ERRORS` as one `error:` line, exit 2. A closed pipe on standard output
    (`flowstore verify S | head -1`) is no bad input: left to Click, which ends the command
    quietly as it ends any other's (`verify` said "error: [Errno 32] Broken pipe", exit 2,
    where `inspect` ended silently)."""
    if isinstance(exc, BrokenPipeError):
        raise exc
    if isinstance(exc, FlowstoreError):
        fail(str(exc))
    fail_system(exc)


def run_app(typer_app: typer.Typer, prog_name: str, ask_for_less: str = ASK_FOR_LESS) -> None:
    """Run a Typer app as a command, with every usage error on one `error:` line (exit 2).

    Typer's own entry point (`app()`) prints a multi-line panel for a bad option value; the
    console scripts and `python -m` of both `flowstore` and `trainers` come here instead, so
    that what users see does not depend on how they started the command. A limit of the
    system's met anywhere (`resource_advice`) is one line too, naming `ask_for_less`, the
    command's options that ask for less.
    """
    import logging

    # zarr writes a group's metadata files as concurrent tasks on its own event loop; when one
    # meets an error (a full disk), the error reaches us and is reported in one line, but the
    # sibling tasks that failed the same way are logged by asyncio, traceback and all, when the
    # loop is collected ("Task exception was never retrieved"): the same error told twice.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    command = typer.main.get_command(typer_app)
    if sys.stdout is None:
        # Started with standard output closed (`flowstore inspect S >&-`): Python then has no
        # sys.stdout and Click's echo drops every line without a word, so the command did its
        # work, printed nothing and ended 0 (found by review). Refused before any work, as a
        # closed standard output is a mistake of the command line, not a wish to discard it.
        typer.echo(f"error: standard output is closed; redirect it to /dev/null to discard "
                   f"what {prog_name} prints", err=True)
        _end(2)
    _standard_streams_for_any_text()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not where ignored)
        signal.signal(signal.SIGINT, _on_ctrl_c)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, stopped_while_importing):
        signal.signal(signal.SIGTERM, _on_ctrl_c)
    try:
        code = command.main(prog_name=prog_name, standalone_mode=False)
        if _REDELIVERY is not None:  # (the command ended before it: what it did is done)
            _REDELIVERY.cancel()
    except Exception as exc:
        advice = resource_advice(exc, ask_for_less)
        if advice is not None:  # (a limit the user sets or meets: neither bug nor input)
            typer.echo(one_line(f"error: {advice}"), err=True)
            _quiet_what_the_limit_left_half_made()
            _end(2)
        if any(map(_current_folder_lost, raised_with(exc))):  # (where the command ran)
            typer.echo(f"error: {CURRENT_FOLDER_LOST}", err=True)
            _end(2)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            # Not bad input (each command turns that into one `error:` line, exit 2): a bug.
            # Told as one, with its traceback, and exit code 3 as a build's internal error, not
            # Python's 1, which reads as "samples failed".
            traceback.print_exc()
            typer.echo(f"internal error: a bug in {prog_name} ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:200]}); please report it with the "
                       f"traceback above", err=True)
            _end(INTERNAL_ERROR_EXIT)
        if type(exc).__name__ == "NoArgsIsHelpError":
            # No command given (`flowstore` alone): Click (>= 8.2; Typer vendors its own copy,
            # hence the name) raises the help as a usage error's message. Shown as it reads.
            exc.show()
            _end(exc.exit_code)
        # a Click usage error (bad option value, unreadable --source path): one line too
        typer.echo("error: " + " ".join(exc.format_message().split()) + _dash_hint(exc),
                   err=True)
        _end(exc.exit_code)
    if _CTRL_C and code == 130 and not _INTERRUPTED:  # a command with nothing of its own to say
        typer.echo("error: interrupted", err=True)
    if _INTERRUPTED or _CTRL_C and code == 130:  # (`fail_interrupted`)
        die_by_sigint(_STOPPED_BY)
    _end(code if isinstance(code, int) else 0)


def _dash_hint(exc: Exception) -> str:
    """What an unknown option adds to its line where the command takes a list of values (`show`'s
    sample ids): a value that begins with '-' goes after '--'. Real ids do (644 of Kinetics-400's
    19,906 val clips, a YouTube id that begins with '-'; 13 of HMDB51's clips), and Click took
    `flowstore show S.zarr -XvstEcJxV0_000001_000011` for options, "No such option: -X", naming
    neither the id nor the way round it (found by review)."""
    ctx = getattr(exc, "ctx", None)
    if (type(exc).__name__ != "NoSuchOption" or ctx is None  # (Typer vendors its own Click)
            or getattr(exc, "possibilities", None)):  # (a typo: Click names the option meant)
        return ""
    listed = [param.name for param in ctx.command.params
              if param.param_type_name == "argument" and param.nargs == -1]
    if not listed:
        return ""
    given = next((arg for arg in sys.argv[1:] if arg.startswith(exc.option_name)),
                 exc.option_name)
    return f" ({listed[0]} that begin with '-' go after '--': ... -- {given})"


def _standard_streams_for_any_text() -> None:
    """Standard output and error, made to take whatever a command writes.

    - Standard error closed (`2>&-`): taken as a wish to discard it, onto /dev/null. Python
      leaves `sys.stderr` None then: `trainers` crashed on it, and the traceback it printed went
      to standard output, into the predictions CSV the user was writing (found by review); and
      the next file a command opened became descriptor 2 (a build's lock file), where any C
      library's message would have gone.
    - An encoding that cannot hold a name (a latin-1 locale, `PYTHONIOENCODING=latin-1`, and a
      class or path in Chinese): written with backslash escapes, as Python writes standard
      error, where it crashed the command after its work was done (a build, a training run
      exited 3, "a bug"; found by review).
    """
    if sys.stderr is None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != 2:
            os.dup2(devnull, 2)
            os.close(devnull)
        sys.stderr = open(2, "w", closefd=False)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # (not a TextIOWrapper: a test's)
            if stream.errors == "strict" and stream.encoding.lower().replace("-", "") != "utf8":
                stream.reconfigure(errors="backslashreplace")


def _quiet_what_the_limit_left_half_made() -> None:
    """Once a refusal of the system's is said, what it stopped half-way is not told again when
    it is collected at exit: a coroutine made for a thread that never started (a warning of two
    lines), and an event loop whose self-pipe found no descriptor (`ulimit -n`), whose `__del__`
    fails (an "Exception ignored" traceback; found by review)."""
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                            category=RuntimeWarning)
    sys.unraisablehook = lambda unraisable: None


def _end(code: int) -> NoReturn:
    """Exit with `code`, the command's: a Ctrl-C or SIGTERM from here on ends the process at
    once with it. Its work is done; the handler a command runs under, left in place, raised a
    KeyboardInterrupt in the interpreter's shutdown (joining threads, `atexit`), printed as an
    "Exception ignored" traceback, exit 0 (found by review)."""

    def end_now(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is _on_ctrl_c:
            signal.signal(signum, end_now)
    sys.exit(code)
