"""`trainers report`'s table over seeds groups only runs that differ in their seed alone, counts
a seed once, and labels every row apart (issue 16's mean and spread are read from it)."""

from __future__ import annotations

import json
from pathlib import Path

from trainers.report import table_seeds
from trainers.runs import list_runs

RECIPE = {"learning_rate": 0.001, "batch_size": 2, "epochs": 20, "lr_halve_every": None}
SAMPLES = {"train": 90, "val": 10, "test": 100}


def _run(runs: Path, name: str, seed: int, accuracy: float, *, samples=SAMPLES,
         augment: bool = False, recipe=RECIPE, **recorded) -> None:
    path = runs / name
    path.mkdir(parents=True)
    (path / "model.keras").write_bytes(b"")
    (path / "metrics.json").write_text(json.dumps({
        "model": "flow", "created": name, "seed": seed, "augment": augment,
        "mixed_precision": False, "recipe": recipe, "samples": samples,
        "store": {"fingerprint": "fp", "dataset": "tvhi"}, "test": {"accuracy": accuracy},
        **recorded}))


def _rows(runs: Path) -> list[list[str]]:
    lines = table_seeds(list_runs(runs)).splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_a_seed_trained_twice_counts_once_its_latest_run(tmp_path):
    _run(tmp_path, "a", 0, 0.50)
    _run(tmp_path, "b", 0, 0.75)  # the same seed again (deterministic: the same draw)
    _run(tmp_path, "c", 1, 1.00)
    (row,) = _rows(tmp_path)
    assert row[2:] == ["0, 1", "0.88", "0.18", "0.75-1.00"]  # not 0, 0, 1 / 0.75 / 0.25


def test_runs_on_other_done_samples_or_augmentation_are_other_rows_labelled_apart(tmp_path):
    _run(tmp_path, "a", 0, 0.50)
    _run(tmp_path, "b", 1, 0.60)
    # the same store (fingerprint) while it was partly built: another sample set
    _run(tmp_path, "c", 0, 0.90, samples={"train": 12, "val": 4, "test": 8})
    _run(tmp_path, "d", 0, 0.40, augment=True)
    rows = _rows(tmp_path)
    assert [row[2] for row in rows] == ["0, 1", "0", "0"]
    labels = [row[1] for row in rows]
    assert len(set(labels)) == 3, labels
    assert any("augment True" in label for label in labels)
    assert any("trained on 12 train / 4 val / 8 test" in label for label in labels)


def test_runs_on_as_many_but_other_done_samples_are_other_rows(tmp_path):
    """A store rebuilt with one sample repaired and another failed: the same fingerprint and
    counts, other samples (`samples_digest`). A run from before digests were recorded joins
    the row of the runs with its counts where they all recorded one digest."""
    _run(tmp_path, "a", 0, 0.50, samples_digest="aaaaaaaa11")
    _run(tmp_path, "b", 1, 0.60, samples_digest="bbbbbbbb22")
    _run(tmp_path, "c", 2, 0.70)  # no digest: which samples is not known, nor which row
    rows = _rows(tmp_path)
    assert sorted(row[2] for row in rows) == ["0", "1", "2"], rows
    labels = {row[2]: row[1] for row in rows}
    assert labels["0"].endswith("done samples aaaaaaaa") and labels["2"].endswith("samples ?")
    (tmp_path / "b" / "metrics.json").unlink()
    (row,) = _rows(tmp_path)
    assert row[2] == "0, 2", row  # the older run is taken as trained on the one digest's


def test_a_chain_from_scratch_stays_so_labelled_when_its_runs_are_gone(tmp_path):
    """The label was worked out from the chain's runs alone: with the frames run deleted a
    two-stream chain from scratch read as the report's transfer model."""
    for name, from_scratch in (("a", True), ("b", False)):
        _run(tmp_path, name, 0, 0.50, model="two_stream", from_scratch=from_scratch,
             bases={"frames": str(tmp_path / f"gone-frames-{name}"), "flow": None})
    labels = sorted(row[0] for row in _rows(tmp_path))
    assert labels == ["TV-HI two-stream", "TV-HI two-stream (from scratch)"], labels


def test_a_label_names_what_differs_not_what_one_run_left_unrecorded(tmp_path):
    _run(tmp_path, "a", 0, 0.50)  # a report recipe records four fields
    _run(tmp_path, "b", 0, 0.60, recipe={**RECIPE, "recipe_set": "report", "dropout": 0.9,
                                         "weight_decay": 0.0, "label_smoothing": 0.0})
    labels = sorted(row[1] for row in _rows(tmp_path))
    assert labels == ["report, dropout 0.5", "report, dropout 0.9"], labels


def test_a_moved_runs_folder_keeps_its_chains(tmp_path):
    """Runs record their bases by absolute path: after the runs folder was moved or copied,
    a two-stream run lost its chain's Stanford-40 origin (rows split by whether the old path
    still existed), and `trainers run` retrained every frames run ("it started from image run
    X, not image run X")."""
    from trainers.report import transfer_origins
    from trainers.runs import read_run

    old = tmp_path / "gone"  # where the runs were trained; no longer there
    runs = tmp_path / "moved"
    for name, model, bases in (
            ("image-a", "image", {}),
            ("frames-a", "frames", {"image": str(old / "image-a")}),
            ("flow-a", "flow", {}),
            ("two_stream-a", "two_stream", {"frames": str(old / "frames-a"),
                                            "flow": str(old / "flow-a")})):
        path = runs / name
        path.mkdir(parents=True)
        (path / "model.keras").write_bytes(b"")
        (path / "metrics.json").write_text(json.dumps({
            "model": model, "created": name, "seed": 0, "recipe": RECIPE, "samples": SAMPLES,
            "store": {"fingerprint": "fp", "dataset": "tvhi"}, "bases": bases,
            "test": {"accuracy": 0.5}}))
    frames, fused = read_run(runs / "frames-a"), read_run(runs / "two_stream-a")
    assert frames.started_from({"image": str(runs / "image-a")})
    assert not frames.started_from({"image": str(runs / "image-b")})
    assert fused.base_run("frames").path == runs / "frames-a"
    assert transfer_origins(fused) == ("image-a",)


def test_a_recipe_overridden_on_the_command_line_is_named_in_its_row(tmp_path):
    """A chain trained with `--epochs 1` read "report", as the report's own recipe does."""
    _run(tmp_path, "a", 0, 0.50, recipe={**RECIPE, "epochs": 1})
    _run(tmp_path, "b", 1, 0.60, recipe={**RECIPE, "epochs": 1})
    (row,) = _rows(tmp_path)
    assert row[1] == "report, epochs 1"
    _run(tmp_path, "c", 0, 0.40)  # the report's recipe beside it: both say their epochs
    assert sorted(row[1] for row in _rows(tmp_path)) == ["report, epochs 1", "report, epochs 20"]


def test_the_seeds_column_lists_the_seeds_the_mean_is_over(tmp_path):
    """A run without test numbers was listed among the seeds of a mean it was not in."""
    _run(tmp_path, "a", 0, 0.35)
    _run(tmp_path, "b", 1, None)
    _run(tmp_path, "c", 2, 0.37)
    (row,) = _rows(tmp_path)
    assert row[2:] == ["0, 2 (untested: 1)", "0.36", "0.01", "0.35-0.37"]


def test_the_text_report_names_only_curves_files_that_are_there(tmp_path):
    """The Figures list printed RUN/curves.png of runs that had none, and of runs whose
    curves.png was cut short (copied into --out as it was); a history.json that is there but
    damaged was said to be missing."""
    import io

    from PIL import Image

    from trainers.report import render_report

    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    png = png.getvalue()
    history = json.dumps({"loss": [1.2, 0.9], "accuracy": [0.3, 0.5]}).encode()
    for name, files in (("flow-a", {"curves.png": png}),
                        ("image-b", {"history.json": history}),
                        ("frames-c", {}),
                        ("two_stream-d", {"curves.png": png[:30], "history.json": history}),
                        ("two_stream-e", {"curves.png": b"", "history.json": b'{"loss'}),
                        ("frames-f", {"history.json": b"{}"})):  # (empty axes were drawn)
        path = tmp_path / name
        path.mkdir()
        (path / "model.keras").write_bytes(b"")
        for file, content in files.items():
            (path / file).write_bytes(content)
        (path / "metrics.json").write_text(json.dumps({
            "model": name.split("-")[0], "created": name,
            "store": {"fingerprint": name, "dataset": "tvhi"}}))
    figures = render_report(tmp_path).split("Figures (accuracy and loss per epoch):")[1]
    assert f"- TV-HI flow: {tmp_path / 'flow-a' / 'curves.png'}" in figures
    assert (f"curves.png in {tmp_path / 'image-b'} is missing; --out and --html redraw it "
            "from history.json") in figures
    assert f"none (no curves.png and no history.json in {tmp_path / 'frames-c'})" in figures
    assert (f"curves.png in {tmp_path / 'two_stream-d'} is not a whole PNG; --out and --html "
            "redraw it from history.json") in figures
    assert (f"none (its curves.png is not a whole PNG and its history.json is not a training "
            f"history in {tmp_path / 'two_stream-e'})") in figures
    assert (f"none (no curves.png and its history.json is not a training history in "
            f"{tmp_path / 'frames-f'})") in figures
    for name in ("image-b", "two_stream-d", "two_stream-e", "frames-f"):
        assert str(tmp_path / name / "curves.png") + "\n" not in figures + "\n"


def test_runs_of_other_keras_backends_are_rows_of_their_own(tmp_path):
    """The same seed on JAX and on TensorFlow is two runs (their seeded shuffles differ): it
    was one row, the latest run standing for the seed and the other gone from the table. A
    run from before the backend was recorded is TensorFlow's."""
    _run(tmp_path, "a", 0, 0.50)                          # (before keras_backend was recorded)
    _run(tmp_path, "b", 1, 0.25, keras_backend="tensorflow")
    _run(tmp_path, "c", 0, 0.75, keras_backend="jax")
    rows = _rows(tmp_path)
    assert [row[1:4] for row in rows] == [["report, tensorflow", "0, 1", "0.38"],
                                          ["report, jax", "0", "0.75"]]


def test_tables_and_figures_hold_the_latest_run_of_each_model_on_each_store(tmp_path):
    """Tables 1 and 2 took the latest run of each model alone: a UCF101 flow run hid the TV-HI
    flow run (beside a two-stream run fusing it), and of two TV-HI stores only one was shown."""
    from trainers.figures import figure_stems
    from trainers.report import _ordered, render_report
    from trainers.runs import latest_runs

    _run(tmp_path, "a", 0, 0.50, store={"fingerprint": "aaaaaaaa11", "dataset": "tvhi"})
    _run(tmp_path, "b", 0, 0.60, store={"fingerprint": "bbbbbbbb22", "dataset": "ucf101"})
    _run(tmp_path, "c", 0, 0.70, store={"fingerprint": "cccccccc33", "dataset": "tvhi"})
    _run(tmp_path, "d", 1, 0.80, store={"fingerprint": "cccccccc33", "dataset": "tvhi"},
         recipe={**RECIPE, "epochs": 1})
    table_2 = render_report(tmp_path).split("Table 2")[1].split("Test accuracy over seeds")[0]
    rows = sorted(tuple(cell.strip() for cell in line.strip("|").split("|")[:3])
                  for line in table_2.splitlines() if line.startswith("| ") and "0." in line)
    assert rows == [("TV-HI flow, store aaaaaaaa", "report", "0.50"),
                    ("TV-HI flow, store cccccccc", "report, epochs 1", "0.80"),
                    ("UCF101 flow", "report", "0.60")], table_2
    latest = _ordered(latest_runs(tmp_path))
    assert figure_stems(latest) == ["flow-aaaaaaaa", "flow-cccccccc", "flow-bbbbbbbb"]
    # a model's rows by dataset, not interleaved by when they ran (as in Tables 1 and 2)
    assert [row[0] for row in _rows(tmp_path)] == ["TV-HI flow"] * 3 + ["UCF101 flow"]


def test_runs_on_stores_of_one_fingerprint_with_other_splits_are_other_rows(tmp_path):
    """A dataset's split file edited (same size: the same fingerprint) moves clips between
    splits at the same positions: the same counts and done-samples digest, other clips
    (`columns_digest`). A run from before that digest was recorded joins the row of the runs
    with its counts and samples where they all recorded one."""
    _run(tmp_path, "a", 0, 0.50, samples_digest="aaaaaaaa11", columns_digest="xxh3_128:1111aaaa")
    _run(tmp_path, "b", 1, 0.60, samples_digest="aaaaaaaa11", columns_digest="xxh3_128:2222bbbb")
    _run(tmp_path, "c", 2, 0.70, samples_digest="aaaaaaaa11")
    rows = _rows(tmp_path)
    assert sorted(row[2] for row in rows) == ["0", "1", "2"], rows
    labels = {row[2]: row[1] for row in rows}
    assert labels["0"].endswith("splits 1111aaaa") and labels["2"].endswith("splits ?"), labels
    (tmp_path / "b" / "metrics.json").unlink()
    (row,) = _rows(tmp_path)
    assert row[2] == "0, 2", row


def test_a_bar_inside_a_cell_does_not_split_its_row():
    """A run folder named `r|x` printed a row of one cell too many in every Markdown reader
    (found by review): the bar is escaped, as Markdown has it."""
    import re

    from trainers.report import _markdown

    table = _markdown(["model", "run"], [["flow", "r|x/flow-4e3b3561"]])
    rows = table.splitlines()
    assert rows[2] == r"| flow | r\|x/flow-4e3b3561 |"
    assert all(len(re.split(r"(?<!\\)\|", row)) == 4 for row in rows)
