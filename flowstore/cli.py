"""`flowstore` command line: parse options, call the core, print. No logic lives here."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from flowstore.console import die_by_sigint, one_line, sample_line, stopped_while_importing
from flowstore.errors import (ASK_FOR_LESS, FlowstoreError, ParameterError, raised_with,
                              resource_advice, resource_exhaustion)


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


app = typer.Typer(help="Build, inspect and synthesise action-recognition feature stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
add_version_option(app, "flowstore")
synth_app = typer.Typer(help="Write a synthetic source in a dataset's real layout.",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")


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


def _frame_range(text: str) -> tuple[int, int]:
    try:
        low, _, high = text.partition(":")
        return int(low), int(high or low)
    except ValueError:
        raise ParameterError(f"--frames must look like MIN:MAX, got {text!r}") from None


def _resolution(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ParameterError(f"--resolution must look like WIDTHxHEIGHT, got {text!r}") from None
    return width, height


#: The extraction options that `build` and `estimate` share (one declaration each). Defaults
#: are in parentheses: Typer's help would read "[224]" as markup and drop it.
DATASET_ARGUMENT = typer.Argument(..., help="Dataset name (`flowstore datasets` lists them, with "
                                             "each one's own options, e.g. --fold 2).")
SIZE_OPTION = typer.Option(None, "--size", help="Frame side S in pixels (224).")
RESIZE_OPTION = typer.Option(None, "--resize",
                             help="How a frame becomes S x S: stretch (the whole frame, its "
                                  "aspect squeezed) or center-crop (the largest centred square, "
                                  "its aspect kept) (stretch).")
STEPS_OPTION = typer.Option(None, "--steps", help="Flow steps T per video (16).")
FLOW_DTYPE_OPTION = typer.Option(None, "--flow-dtype", help="float16, float32 or uint8 (float16).")
FLOW_BOUND_OPTION = typer.Option(None, "--flow-bound",
                                 help="uint8 flow: clip to +-this many pixels (20).")
SAMPLING_OPTION = typer.Option(None, "--sampling",
                               help="Where flows and frames are taken: linspace (T evenly "
                                    "spaced pairs) or segments (TSN: K segments, L stacked "
                                    "flows each) (linspace).")
SEGMENTS_OPTION = typer.Option(None, "--segments", help="--sampling segments: K segments (3).")
STACK_OPTION = typer.Option(None, "--stack",
                            help="--sampling segments: L consecutive flows per segment (5).")
FLOW_OPTION = typer.Option(None, "--flow", help="Flow algorithm: farneback, tvl1 or dis "
                                                "(farneback, the report's).")
FLOW_PARAM_OPTION = typer.Option(None, "--flow-param", metavar="NAME=VALUE",
                                 help="One parameter of the flow algorithm (repeat it), e.g. "
                                      "--flow tvl1 --flow-param warps=3.")


def _extraction_params(params_type: type, dataset: str, *, flow: Optional[str],
                       flow_param: Optional[list[str]], **values: Any) -> Any:
    """The parameters `build` and `estimate` take from the same options (`--flow` and its
    `--flow-param`s made into one algorithm's parameters)."""
    from flowstore.params import flow_from_options, from_options

    return from_options(params_type, dataset, flow=flow_from_options(flow, flow_param or ()),
                        flags={"flow": "--flow" if flow else "--flow-param"}, **values)


def _dataset_options(ctx: typer.Context, dataset: str) -> dict[str, str]:
    """The dataset's own options, left after the command's (`--fold 2`); a mistyped flag of the
    command is refused with the nearest of the command's own flags, and a flag of the other
    command that takes dataset options (`estimate --scheduler`) as that command's."""
    from flowstore.datasets import dataset_type, parse_option_tokens

    def flags(command: Any) -> list[str]:
        return [flag for param in command.params for flag in param.opts if flag.startswith("--")]

    own = flags(ctx.command)
    group = ctx.parent.command if ctx.parent is not None else None
    others = {flag: f"flowstore {name}, not of flowstore {ctx.info_name}"
              for name in ("build", "estimate")
              if group is not None and name != ctx.info_name
              and (command := group.get_command(ctx.parent, name)) is not None
              for flag in flags(command) if flag not in own}
    return parse_option_tokens(ctx.args, dataset_type(dataset).options_type,
                               f"dataset {dataset!r}", also=own, others=others)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build(
    ctx: typer.Context,
    dataset: str = DATASET_ARGUMENT,
    store: str = typer.Option(..., "--store",
                              help="Store to build: PATH.zarr, PATH.h5 or s3://BUCKET/PATH.zarr.",
                              parser=given_path),
    source: Optional[Path] = typer.Option(None, "--source", help="Folder of the raw dataset.",
                                          parser=path_value),
    synthetic: bool = typer.Option(False, "--synthetic",
                                   help="Generate a synthetic source (cached) and build from it."),
    size: Optional[int] = SIZE_OPTION,
    resize: Optional[str] = RESIZE_OPTION,
    steps: Optional[int] = STEPS_OPTION,
    flow_dtype: Optional[str] = FLOW_DTYPE_OPTION,
    flow_bound: Optional[float] = FLOW_BOUND_OPTION,
    sampling: Optional[str] = SAMPLING_OPTION,
    segments: Optional[int] = SEGMENTS_OPTION,
    stack: Optional[int] = STACK_OPTION,
    flow: Optional[str] = FLOW_OPTION,
    flow_param: Optional[list[str]] = FLOW_PARAM_OPTION,
    workers: Optional[int] = typer.Option(None, "--workers", help="Dask worker threads [cores]."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                            help="dask.distributed scheduler address."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Rebuild an existing store built with other parameters."),
    max_per_split: Optional[int] = typer.Option(None, "--max-per-split",
                                                help="Build only the first N samples of each split."),
    fsync: bool = typer.Option(False, "--fsync",
                               help="fsync each sample before marking it done (survives a "
                                    "power cut; costs time)."),
    check_source: bool = typer.Option(False, "--check-source",
                                      help="Hash the done samples' source files and refuse a "
                                           "changed one (not only a resized one)."),
    reuse_from: Optional[str] = typer.Option(
        None, "--reuse-from", help="Another store built with the same parameters: copy its "
                                   "samples whose source files have the same bytes (renamed or "
                                   "moved too), not compute them.",
                                   parser=given_path),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Build (or resume) a store from a dataset's source folder.

    Options after these are the dataset's own (`flowstore datasets` lists them), e.g.
    `--fold 2` for ucf101 or `--split-file splits.csv` for videofolder.
    """
    from flowstore.build import BuildConfig, build as run_build, duplicate_line, failure_lines
    from flowstore.datasets import get_dataset
    from flowstore.malloc_tuning import BUILD_MMAP_THRESHOLD, keep_freed_memory
    from flowstore.synth import synthetic_source

    try:
        options = _dataset_options(ctx, dataset)
        spec = get_dataset(dataset, options)
        params = _extraction_params(spec.params_type, dataset, size=size, resize=resize,
                                    steps=steps, flow_dtype=flow_dtype, flow_bound=flow_bound,
                                    sampling=sampling, segments=segments, stack=stack,
                                    flow=flow, flow_param=flow_param)
        if synthetic == (source is not None):
            raise ParameterError("give exactly one of --source DIR or --synthetic")
        settings = dict(dataset=dataset, store=store, params=params, options=options,
                        scheduler=scheduler, overwrite=overwrite, max_per_split=max_per_split,
                        progress=not quiet, fsync=fsync, check_source=check_source,
                        reuse_from=reuse_from, workers=workers)
        if synthetic:
            BuildConfig(source=Path(), **settings)  # (bad options: refused before half a
            if not quiet:                           # minute and 50 MB of synthetic source)
                typer.echo("preparing synthetic source ...", err=True)
            source = synthetic_source(dataset)
        config = BuildConfig(source=source, **settings)
        keep_freed_memory(BUILD_MMAP_THRESHOLD)
        result = run_build(config)
    except INPUT_ERRORS as exc:
        fail_input(exc)
    except KeyboardInterrupt:
        fail_interrupted("interrupted; run the same command again to resume")
    internal = f", {len(result.internal_errors)} internal error(s)" if result.internal_errors else ""
    reused = f", {result.reused} reused from {reuse_from}" if reuse_from is not None else ""
    # (a path is printed escaped, `one_line`: a newline in a store's name split the line)
    typer.echo(one_line(f"store {result.store}: {result.computed} computed{reused}, "
                        f"{result.already_done} already done, {len(result.failures)} failed"
                        f"{internal} of {result.selected} selected in {result.seconds:.1f}s "
                        f"(fingerprint {result.fingerprint[:12]})"))
    for line in [*result.mended, *result.absent_folders]:
        typer.echo(one_line(f"warning: {line}"), err=True)
    if result.fingerprint_was is not None:
        typer.echo(f"warning: the store's fingerprint changed from {result.fingerprint_was[:12]}"
                   f": the source's files (names or sizes) are not those of its last build; "
                   f"trainers runs made on it before are of the old fingerprint, no longer "
                   f"taken as this store's", err=True)
    across = result.duplicates_across_splits
    if across:
        typer.echo(f"warning: {len(across)} group(s) of samples in different splits have "
                   f"byte-identical source files (e.g. {duplicate_line(across[0])}): the splits "
                   f"share clips, so a score on one is partly a score on another; `flowstore "
                   f"inspect {result.store}` lists them", err=True)
    if result.failures:
        typer.echo(f"{len(result.failures)} sample(s) failed (the next run of this command "
                   f"tries them again: a missing file once it is back, a bad one once it is "
                   f"mended):", err=True)
        for line in failure_lines(result.failures):
            typer.echo(line, err=True)
    _report_internal_errors(result.internal_errors, result.error_log)
    if result.failures:
        raise typer.Exit(1)


def _report_internal_errors(errors: dict[str, str], log: Optional[Path]) -> None:
    """Tell a bug in flowstore as one, apart from bad samples, and exit with its own code."""
    if not errors:
        return
    where = f"in {log}" if log is not None else "above"  # (the log could not be written)
    typer.echo(f"internal error: a bug in flowstore stopped {len(errors)} sample(s), which stay "
               f"pending (not failed); tracebacks {where}; please report it:", err=True)
    for sample, error in errors.items():
        typer.echo(sample_line(sample, error), err=True)
    raise typer.Exit(INTERNAL_ERROR_EXIT)


@app.command()
def inspect(
    store: str = typer.Argument(..., help="Store: PATH.zarr, PATH.h5 or s3://BUCKET/PATH.zarr.",
                                parser=given_path),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    count_bytes: bool = typer.Option(
        False, "--bytes", help="Also count each array's bytes on disk. This lists every chunk "
                               "of the store (one file or object per sample and array): "
                               "minutes for a Kinetics-sized store, many LIST calls on S3."),
) -> None:
    """Show a store's dataset, parameters, counts, failures and arrays (with --bytes, their
    bytes on disk). Exit code 1 for a damaged store, described all the same (as `verify`
    exits 1 for bad samples), so that a script that checks a store does not read it as sound."""
    from flowstore.inspect import format_summary, summarize

    try:
        summary = summarize(store, count_bytes=count_bytes)
    except FlowstoreError as exc:
        fail(str(exc))
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    if summary["damaged"]:
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def verify(
    ctx: typer.Context,
    store: str = typer.Argument(..., help="Store: PATH.zarr, PATH.h5 or s3://BUCKET/PATH.zarr.",
                                parser=given_path),
    repair: bool = typer.Option(False, "--repair",
                                help="Re-extract the bad samples (needs --source or --synthetic)."),
    source: Optional[Path] = typer.Option(None, "--source", help="The dataset's source folder.",
                                          parser=path_value),
    synthetic: bool = typer.Option(False, "--synthetic",
                                   help="--repair: from the cached synthetic source (a store "
                                        "built with --synthetic)."),
    fsync: bool = typer.Option(False, "--fsync",
                               help="--repair: fsync each sample before marking it done."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Re-read every sample and report the ones whose bytes changed or whose `done` flag lies.
    With --repair, the dataset's options given again (`--split-file NEW`) replace the store's
    (a split file that moved with its dataset)."""
    from flowstore.verify import (repair as run_repair, repair_options, synthetic_source_of,
                                  verify as run_verify)

    try:
        if ctx.args and not ctx.args[0].startswith("--"):  # (no option: not said as one)
            raise ParameterError(f"unexpected argument {ctx.args[0]!r}")
        if ctx.args and not repair:
            raise ParameterError(f"{ctx.args[0]!r}: dataset options apply to --repair only "
                                 f"(what it re-extracts with)")
        if synthetic and not repair:
            raise ParameterError("--synthetic applies to --repair only (verify reads the store "
                                 "alone)")
        if repair and synthetic == (source is not None):
            raise ParameterError("--repair needs one of --source DIR or --synthetic to "
                                 "re-extract from")
        if fsync and not repair:
            raise ParameterError("--fsync applies to --repair only (verify writes nothing)")
        if source is not None and not repair:
            raise ParameterError("--source applies to --repair only (verify reads the store "
                                 "alone)")
        if source is not None:  # before reading every sample: a mistyped folder says so at once
            from flowstore.datasets import Dataset

            Dataset.check_source_folder(source)
        own = [flag for param in ctx.command.params for flag in param.opts
               if flag.startswith("--")]
        options = repair_options(store, ctx.args, also=own) if repair else None
        result = run_verify(store, progress=not quiet)
        # (a damaged manifest column is no bad sample but the store's: "0 bad" alone on
        # standard output read as a sound store to a script, the error on stderr unseen)
        typer.echo(one_line(f"store {store}: checked {result.checked} sample(s), "
                            f"{len(result.problems)} bad"
                            + ("; the store is damaged" if result.damaged else "")))
        for sample, problem in sorted(result.problems.items()):
            typer.echo(sample_line(sample, problem), err=True)
        if result.unmarked:
            typer.echo(f"note: {result.unmarked} sample(s) have a checksum but are not marked "
                       f"done (a build stopped within a second of finishing them, or the `done` "
                       f"column lost): not checked; a build recomputes them", err=True)
        if result.damaged:
            fail(result.damaged, 1)
        if not (result.problems and repair):
            raise typer.Exit(1 if result.problems else 0)
        if synthetic:
            if not quiet:  # (written again, a minute or more, where the cache was pruned)
                typer.echo("preparing synthetic source ...", err=True)
            source = synthetic_source_of(store)
        repaired = run_repair(store, source, result.problems, progress=not quiet, fsync=fsync,
                              options=options)
    except INPUT_ERRORS as exc:  # (an OSError: --repair on a store it may not write)
        fail_input(exc)
    except KeyboardInterrupt:
        if not repair:
            raise
        fail_interrupted("interrupted; run the same command again to finish the repair")
    internal = (f", {len(repaired.internal_errors)} internal error(s)"
                if repaired.internal_errors else "")
    typer.echo(f"repaired {len(repaired.repaired)} of {len(repaired.asked)} bad sample(s) from "
               f"{source}; {len(repaired.still_bad)} still bad{internal}")
    for line in repaired.mended:
        typer.echo(one_line(f"warning: {line}"), err=True)
    for sample, why in sorted(repaired.still_bad.items()):
        typer.echo(sample_line(sample, why), err=True)
    _report_internal_errors(repaired.internal_errors, repaired.error_log)
    if repaired.still_bad:
        raise typer.Exit(1)


@app.command()
def show(
    store: str = typer.Argument(..., help="Store: PATH.zarr, PATH.h5 or s3://BUCKET/PATH.zarr.",
                                parser=given_path),
    ids: Optional[list[str]] = typer.Argument(None, help="Sample ids [random, per class]; "
                                                   "ids that begin with '-' go after '--'."),
    out: Path = typer.Option(..., "--out", help="Folder to write the pictures into.",
                             parser=path_value),
    per_class: int = typer.Option(2, "--per-class", help="Random samples per class (no ids)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice."),
    gif: bool = typer.Option(False, "--gif", help="Also an animation: frames beside their flow."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Draw samples: middle frame, frames and colour-coded flow (one PNG per sample), or a
    grid of images per class for an image store."""
    from flowstore.show import show as run_show

    try:
        result = run_show(store, out, ids or (), per_class=per_class, seed=seed, gif=gif,
                          progress=not quiet)
    except FlowstoreError as exc:
        fail(str(exc))
    typer.echo(one_line(f"wrote {len(result.written)} picture(s) of {len(result.samples)} "
                        f"sample(s) to {out}"))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def estimate(
    ctx: typer.Context,
    dataset: str = DATASET_ARGUMENT,
    source: Path = typer.Option(..., "--source", help="Folder of the raw dataset.",
                                parser=path_value),
    size: Optional[int] = SIZE_OPTION,
    resize: Optional[str] = RESIZE_OPTION,
    steps: Optional[int] = STEPS_OPTION,
    flow_dtype: Optional[str] = FLOW_DTYPE_OPTION,
    flow_bound: Optional[float] = FLOW_BOUND_OPTION,
    sampling: Optional[str] = SAMPLING_OPTION,
    segments: Optional[int] = SEGMENTS_OPTION,
    stack: Optional[int] = STACK_OPTION,
    flow: Optional[str] = FLOW_OPTION,
    flow_param: Optional[list[str]] = FLOW_PARAM_OPTION,
    workers: Optional[int] = typer.Option(None, "--workers",
                                          help="Dask worker threads the build would use [cores]."),
    max_per_split: Optional[int] = typer.Option(None, "--max-per-split",
                                                help="Estimate a build of the first N samples "
                                                     "of each split."),
    sample: Optional[int] = typer.Option(None, "--sample",
                                         help="Items to measure (random, seeded) [20]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the bootstrap, and of "
                                               "the dataset's split where it takes one, as "
                                               "for build."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict a build's store size per flow encoding, CPU-hours and wall time, by measuring a
    small random sample of the source on this machine.

    Options after these are the dataset's own, as for `build` (`--fold 2`): they choose the
    samples a build would hold.
    """
    from flowstore.datasets import dataset_type, get_dataset, option_names
    from flowstore.estimate import estimate as run_estimate, format_estimate

    try:
        options = _dataset_options(ctx, dataset)
        # `--seed` is estimate's own flag, so it never reached a dataset that draws its split
        # with one: `build --seed 5` and `estimate --seed 5` measured other samples
        if "--seed" in option_names(dataset_type(dataset).options_type):
            options.setdefault("seed", seed)
        params = _extraction_params(get_dataset(dataset).params_type, dataset, size=size,
                                    resize=resize, steps=steps, flow_dtype=flow_dtype,
                                    flow_bound=flow_bound,
                                    sampling=sampling, segments=segments, stack=stack,
                                    flow=flow, flow_param=flow_param)
        result = run_estimate(dataset, source, params, options=options, seed=seed,
                              workers=workers, max_per_split=max_per_split, progress=not quiet,
                              **({"sample_size": sample} if sample is not None else {}))
    except INPUT_ERRORS as exc:
        fail_input(exc)
    typer.echo(format_estimate(result))


@app.command("datasets")
def list_datasets(
    name: Optional[str] = typer.Argument(None, help="A dataset to describe: its source layout, "
                                                   "splits and options with their defaults."),
) -> None:
    """List the datasets flowstore can build, with their own options (or describe one)."""
    from flowstore.datasets import dataset_names, dataset_type, describe_dataset, option_names

    if name is not None:
        try:
            typer.echo(describe_dataset(name))
        except FlowstoreError as exc:
            fail(str(exc))
        return
    for known in dataset_names():
        options = option_names(dataset_type(known).options_type)
        typer.echo(f"{known}  {' '.join(options)}".rstrip())


@synth_app.command("tvhi")
def synth_tvhi(
    folder: Path = typer.Argument(..., help="Folder to write (must be empty or absent).",
                                  parser=path_value),
    videos_per_class: int = typer.Option(50, "--videos-per-class", help="Clips per class."),
    negatives: int = typer.Option(10, "--negatives", help="negative_NNNN.avi clips."),
    frames: str = typer.Option("22:120", "--frames", help="Frame-count range MIN:MAX."),
    resolution: Optional[str] = typer.Option(None, "--resolution",
                                             help="WIDTHxHEIGHT for every clip [varies like TV]."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes the same clips."),
) -> None:
    """Synthetic TV-HI: four classes that need both appearance and motion to tell apart."""
    from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi

    try:
        low, high = _frame_range(frames)
        config = SynthTVHIConfig(videos_per_class=videos_per_class, negatives=negatives,
                                 min_frames=low, max_frames=high,
                                 resolution=_resolution(resolution), seed=seed)
        write_synthetic_tvhi(folder, config)
    except INPUT_ERRORS as exc:  # (a folder it may not write)
        fail_input(exc)
    typer.echo(one_line(f"wrote synthetic TV-HI ({4 * videos_per_class} clips + {negatives} "
                        f"negatives) to {folder}"))


@synth_app.command("stanford40")
def synth_stanford40(
    folder: Path = typer.Argument(..., help="Folder to write (must be empty or absent).",
                                  parser=path_value),
    classes: int = typer.Option(40, "--classes", help="Classes: the first N real action names."),
    train_per_class: int = typer.Option(10, "--train-per-class",
                                        help="Images per class in train.txt (real: 100)."),
    test_per_class: int = typer.Option(10, "--test-per-class",
                                       help="Images per class in test.txt."),
    min_side: int = typer.Option(200, "--min-side", help="Smallest image side in pixels."),
    max_side: int = typer.Option(500, "--max-side", help="Largest image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes the same images."),
) -> None:
    """Synthetic Stanford-40: one coloured shape per image; the class sets colour and shape."""
    from flowstore.synth.stanford40 import SynthStanford40Config, write_synthetic_stanford40

    try:
        config = SynthStanford40Config(classes=classes, train_per_class=train_per_class,
                                       test_per_class=test_per_class, min_side=min_side,
                                       max_side=max_side, seed=seed)
        write_synthetic_stanford40(folder, config)
    except INPUT_ERRORS as exc:
        fail_input(exc)
    typer.echo(one_line(f"wrote synthetic Stanford-40 ({classes} classes, "
                        f"{classes * train_per_class} train + {classes * test_per_class} test "
                        f"images) to {folder}"))


def _synth_command(name: str):
    def command(ctx: typer.Context,
                folder: Path = typer.Argument(..., help="Folder to write (must be empty or "
                                                        "absent).", parser=path_value)) -> None:
        from flowstore.datasets import dataset_type, parse_option_tokens
        from flowstore.synth import write_synthetic

        try:
            settings = parse_option_tokens(ctx.args, dataset_type(name).synth_config_type,
                                           f"synth {name}")
            write_synthetic(name, folder, settings)
        except INPUT_ERRORS as exc:
            fail_input(exc)
        typer.echo(one_line(f"wrote synthetic {name} to {folder}"))

    return command


def _add_dataset_synth_commands() -> None:
    """`flowstore synth NAME DIR [--SETTING VALUE ...]` for each dataset module that declares a
    synthetic source (its `synth_config_type`); the settings are that dataclass's fields."""
    from flowstore.datasets import dataset_names, dataset_type, option_names

    taken = {command.name for command in synth_app.registered_commands}
    for name in dataset_names():
        kind = dataset_type(name)
        if kind.synth_config_type is None or name in taken:
            continue

        command = _synth_command(name)
        defaults = (field.default for field in dataclasses.fields(kind.synth_config_type))
        settings = ", ".join(f"{flag} {default}" for flag, default
                             in zip(option_names(kind.synth_config_type), defaults))
        command.__doc__ = (f"Synthetic {name} in its real layout. Settings, each "
                           f"`--NAME VALUE`, with their defaults: {settings}.")
        synth_app.command(name, context_settings={"allow_extra_args": True,
                                                  "ignore_unknown_options": True})(command)


_add_dataset_synth_commands()


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
    if type(exc).__name__ != "NoSuchOption" or ctx is None:  # (Typer vendors its own Click)
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


def main() -> None:
    """The `flowstore` console script and `python -m flowstore`."""
    run_app(app, "flowstore")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
