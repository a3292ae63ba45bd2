"""`flowstore` command line: parse options, call the core, print. No logic lives here."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from flowstore.command import (INPUT_ERRORS, INTERNAL_ERROR_EXIT, add_version_option, fail,
                               fail_input, fail_interrupted, given_path, path_value, run_app)
from flowstore.console import one_line, sample_line
from flowstore.errors import FlowstoreError, ParameterError

app = typer.Typer(help="Build, inspect and synthesise action-recognition feature stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
add_version_option(app, "flowstore")
synth_app = typer.Typer(help="Write a synthetic source in a dataset's real layout.",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")


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
                                            help="dask.distributed scheduler address "
                                                 "(tcp://HOST:PORT); a .zarr store only."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Delete the store at --store, whatever it holds, and build it "
                                        "anew (a store of other parameters is refused "
                                        "without it)."),
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
    per_class: Optional[int] = typer.Option(None, "--per-class", show_default=False,
                                            help="Random samples per class, when no ids are "
                                                 "given [2]."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default=False,
                                       help="Seed of the random choice (no ids) [0]."),
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
        settings = "\n".join(f"{flag} {default}" for flag, default
                              in zip(option_names(kind.synth_config_type), defaults))
        # (one a line, kept as written by Click's "\b": wrapped, "--max-frames" broke at its
        # hyphen)
        command.__doc__ = (f"Synthetic {name} in its real layout. Settings, each "
                           f"`--NAME VALUE`, with their defaults:\n\n\b\n{settings}")
        synth_app.command(name, context_settings={"allow_extra_args": True,
                                                  "ignore_unknown_options": True})(command)


_add_dataset_synth_commands()


def main() -> None:
    """The `flowstore` console script and `python -m flowstore`."""
    run_app(app, "flowstore")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
