"""`trainers` command line: parse options into a frozen config, call the core, print.

No logic lives here, and no TensorFlow import: the core modules are imported inside each
command, so `trainers --help` and a bad `--store` answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flowstore.command import (add_version_option, fail, fail_interrupted, given_path,
                               path_value, run_app)
from flowstore.errors import FlowstoreError
from trainers.catalogue import known_names
from trainers.errors import RunInterruptedError, require_training_extra

app = typer.Typer(help="Train the report's action-recognition models on flowstore stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)
add_version_option(app, "trainers")

MODEL_HELP = f"Model: {known_names()}."


@app.command()
def summary(
    model: str = typer.Argument(..., help=MODEL_HELP),
    size: int = typer.Option(224, "--size", help="Frame side S in pixels."),
    steps: int = typer.Option(16, "--steps", help="Flow steps T."),
    classes: Optional[int] = typer.Option(
        None, "--classes", help="Output classes (a store's: 101 for UCF101) [the report's]."),
    expand_nested: bool = typer.Option(False, "--expand-nested",
                                       help="Also list the layers of frozen sub-models."),
) -> None:
    """Print MODEL's Keras summary and parameter counts (no store needed)."""
    try:
        from trainers.summary import model_summary

        typer.echo(model_summary(model, size=size, steps=steps, num_classes=classes,
                                 expand_nested=expand_nested))
    except FlowstoreError as exc:
        fail(str(exc))


@app.command()
def run(
    model: str = typer.Argument(..., help=MODEL_HELP),
    store: str = typer.Option(..., "--store",
                              help="Store to train on: PATH.zarr, PATH.h5 or s3://BUCKET/PATH.zarr.",
                              parser=given_path),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir",
                                  help="Where run directories go and prerequisites are found.",
                                  parser=path_value),
    epochs: Optional[int] = typer.Option(None, "--epochs",
                                         help="Epochs [recipe's]; also for prerequisites."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size [recipe's]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (Adam; AdamW with "
                                                          "--recipe tuned) [recipe's]."),
    recipe: str = typer.Option("report", "--recipe",
                               help="Recipe set: report (the report's recipes) or tuned "
                                    "(augmentation, AdamW, label smoothing, warm-up and cosine "
                                    "decay, more epochs); also for prerequisites."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, shuffling and augmentation."),
    augment: bool = typer.Option(False, "--augment/--no-augment",
                                 help="Random horizontal flips (frames and flow, dx negated)."),
    mixed_precision: bool = typer.Option(False, "--mixed-precision",
                                         help="mixed_float16 compute (for GPUs; a CPU gets bfloat16, "
                                              "in which the frame CNN diverged on small "
                                              "stores); logits float32."),
    segment_views: bool = typer.Option(
        False, "--segment-views",
        help="On a store built with --sampling segments: train on one random segment of each "
             "clip per epoch and score a clip by the mean of its segments' logits (TSN); "
             "also for prerequisites that read flow or frames."),
    frame_views: bool = typer.Option(
        False, "--frame-views",
        help="Feed the middle-frame input from the clip's per-step frames: train on one "
             "random frame of each clip per epoch and score a clip by the mean of its frames' "
             "logits (the two-stream paper's and TSN's spatial stream); also for the frames "
             "prerequisite of two_stream."),
    subtract_mean_flow: bool = typer.Option(
        False, "--subtract-mean-flow",
        help="Subtract each flow step's mean displacement over the frame in the model "
             "(camera-motion compensation, Simonyan & Zisserman 2014); also for the flow "
             "prerequisite of two_stream."),
    ema_momentum: Optional[float] = typer.Option(
        None, "--ema-momentum",
        help="Validate, test and save a moving average of the weights (this momentum per "
             "step, e.g. 0.99: about the last 100 steps) instead of the last step's; also for "
             "prerequisites."),
    dropout: Optional[float] = typer.Option(
        None, "--dropout",
        help="Rate of the models' Dropout layers (the report's 0.5; the two-stream paper "
             "trains from scratch at 0.9); also for prerequisites."),
    scale_jitter: Optional[float] = typer.Option(
        None, "--scale-jitter",
        help="Largest resize factor of the random resized crop, frames and flow together "
             "(1: none; the tuned recipes' 1.15; TSN's scale jittering is about 1.5); also for "
             "prerequisites."),
    base: Optional[Path] = typer.Option(
        None, "--base", help="Run directory to transfer from (frames, and two_stream for the "
                             "frames run it trains: an image run), however "
                             "it was trained; default: the latest run of the same input size, "
                             "recipe, --augment and precision, any seed.", parser=path_value),
    reuse: bool = typer.Option(True, "--reuse/--retrain",
                               help="Reuse prerequisite runs found in --runs-dir that were "
                                    "trained with the same recipe and options."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No per-epoch lines and no step progress; warnings, the "
                                    "device line and the results table remain."),
    verbose: bool = typer.Option(False, "--verbose",
                                 help="Let TensorFlow's start-up notes through."),
) -> None:
    """Train MODEL on a store into a new run directory, training its prerequisites first.

    Any store holding the arrays MODEL reads will do; classes come from the store. frames
    starts from the latest image run in --runs-dir of the same input size, trained as this
    command would train it (recipe, --epochs, --augment, precision), whatever store it trained
    on (from scratch, with a warning, when there is none); two_stream uses frames and
    flow runs of the same store, training them when missing. A run is reused only when it
    was trained with the recipe (--recipe, --epochs), --seed, --augment, the precision
    (--mixed-precision: float16 on a GPU, bfloat16 on a CPU) and the Keras backend asked now.
    """
    try:
        from flowstore.malloc_tuning import keep_freed_memory
        from trainers.run import RunConfig, run as run_model

        keep_freed_memory()  # each batch is a fresh buffer: reuse freed pages, no page faults
        # (a damaged run passed over without a word, and trained again: a report says so)
        _warn_unreadable_runs(runs_dir, resume_points=False)
        config = RunConfig(model=model, store=store, runs_dir=runs_dir, epochs=epochs,
                           batch_size=batch_size, learning_rate=lr, recipe_set=recipe,
                           seed=seed, augment=augment, segment_views=segment_views or None,
                           frame_views=frame_views or None,
                           subtract_mean_flow=subtract_mean_flow or None,
                           ema_momentum=ema_momentum, dropout=dropout,
                           scale_jitter=scale_jitter,
                           mixed_precision=mixed_precision, reuse=reuse, quiet=quiet,
                           verbose=verbose, base=base)
        run_model(config, echo=typer.echo)
        # Resume points once this command has taken up its own: named before, the one it was
        # about to go on from was called stopped, "delete it" (found by review).
        from trainers.runs import stopped_runs

        _warn_left_out(stopped_runs(runs_dir))
    except RunInterruptedError as exc:
        fail_interrupted(str(exc))  # as `flowstore build` does
    except FlowstoreError as exc:
        fail(str(exc))


def _warn_unreadable_runs(runs_dir: Path, *, resume_points: bool = True) -> None:
    """One `warning:` line for each folder of `runs_dir` that holds a run's files but is not a
    finished run (`trainers.runs.unreadable_runs`), which runs are found and reported without;
    the stopped runs' resume points too, with `resume_points`."""
    from trainers.runs import unreadable_runs

    _warn_left_out(unreadable_runs(runs_dir, resume_points=resume_points))


def _warn_left_out(found: list[tuple[Path, str]]) -> None:
    for path, why in found:
        typer.echo(f"warning: {path} left out: not a finished run ({why})", err=True)


@app.command()
def report(
    runs_dir: Path = typer.Argument(Path("runs"), help="Folder of run directories.",
                                    parser=path_value),
    html: Optional[Path] = typer.Option(
        None, "--html", help="Write one self-contained HTML page instead: the tables, and per "
                             "model its curves, test confusion matrix, per-class accuracy and "
                             "misclassified samples (predicted from the run's store).",
                             parser=path_value),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Also write PNG figures into this folder: per model MODEL_curves.png "
                            "and MODEL_confusion.png (test split, predicted from the run's "
                            "store), and test_accuracy.png against the report's Table 2; "
                            "figures an earlier report wrote there that this one does not draw "
                            "(a model no longer in RUNS_DIR, a store gone) are removed.",
                            parser=path_value),
) -> None:
    """Print the report's Table 1 and Table 2 for the latest run of each model on each store in
    RUNS_DIR (with --html, write them and each model's figures to one HTML page instead; with
    --out, also write the figures as PNG files)."""
    try:
        _warn_unreadable_runs(runs_dir)
        if html is not None or out is not None:
            require_training_extra()  # (they predict and draw: TensorFlow and matplotlib)
            from trainers.html_report import RunPictures, check_report_outputs

            check_report_outputs(runs_dir, html, out)
            run_pictures = RunPictures()  # each model predicts once for both outputs
        if html is not None:
            from trainers.html_report import write_html_report

            typer.echo(f"HTML report written to {write_html_report(runs_dir, html, run_pictures)}")
        else:
            from trainers.report import render_report

            typer.echo(render_report(runs_dir))
        if out is not None:
            from trainers.figures import write_figures

            written = write_figures(runs_dir, out, run_pictures)
            typer.echo(f"{len(written.files)} figure(s) written to {out}"
                       + (":" if written.files else " (no runs to draw)"))
            for path in written.files:
                typer.echo(f"- {path}")
            for path in written.removed:
                typer.echo(f"removed {path}: an earlier report's figure, not drawn by this one")
            for note in written.missing:
                typer.echo(f"warning: {note}", err=True)
    except FlowstoreError as exc:
        fail(str(exc))


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory (RUNS_DIR/MODEL-FINGERPRINT-TIME).",
                                   parser=path_value),
    store: Optional[str] = typer.Option(
        None, "--store", help="Store to predict: PATH.zarr, PATH.h5 or s3://BUCKET/PATH.zarr "
                              "[the store the run trained on].", parser=given_path),
    split: str = typer.Option("test", "--split",
                              help="Split to predict: train, val, test, or all (every "
                                   "finished sample of the store)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write the predictions CSV to this file [standard output; '-' "
                            "too]: id, split, label, predicted, and a probability per class "
                            "(p_CLASS).", parser=path_value),
) -> None:
    """Predict a split of a store with a trained run, in inference mode and as the run scored
    its test split; print one CSV row per sample and the accuracy (on standard error)."""
    if out == Path("-"):  # (as most tools read it: it wrote a file named '-')
        out = None
    try:
        require_training_extra()
        from trainers.predict import predict_run, write_csv

        found = predict_run(run_dir, store, split, out=out)
        if out is None:
            typer.echo(found.predictions.csv_text(), nl=False)
        else:
            write_csv(found.predictions, out)
        if found.replaced_store is not None:
            typer.echo(f"warning: {found.replaced_store}", err=True)
        for difference in found.differences:
            typer.echo(f"warning: the store was extracted otherwise than the run's: "
                       f"{difference}", err=True)
        typer.echo(found.summary() + (f"; written to {out}" if out is not None else ""),
                   err=True)
    except FlowstoreError as exc:
        fail(str(exc))


def main() -> None:
    """The `trainers` console script and `python -m trainers`."""
    run_app(app, "trainers", ask_for_less="a smaller --batch-size")
