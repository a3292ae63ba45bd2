"""The report's result tables, rebuilt from run directories as Markdown.

Table 1: train/validation accuracy and loss at the best epoch, and that epoch.
Table 2: test accuracy, test loss and the size of the saved model in GB.
Both come from each run's `metrics.json`; `trainers report RUNS_DIR` shows the latest run of
each model, then test accuracy over seeds (mean and spread of runs that differ only in their
seed), and `trainers run` ends with a table of the runs it trained or reused.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from trainers.catalogue import get_model, model_names, recipe_of
from trainers.errors import ModelConfigError, UnknownModelError
from trainers.recipes import RECIPE_SETS, recorded_recipe
from trainers.runs import (HISTORY_FILE, RunRecord, latest_runs, list_runs, run_dir_name,
                           split_counts)

if TYPE_CHECKING:
    from trainers.run import Outcome

#: How the report writes its datasets' names in row labels; other datasets by their own name.
DATASET_LABELS = {"stanford40": "Stanford 40", "tvhi": "TV-HI", "ucf101": "UCF101",
                  "hmdb51": "HMDB51", "kinetics": "Kinetics"}


#: Renders a table from its header and rows of cell strings.
Render = Callable[[Sequence[str], Iterable[Sequence[str]]], str]


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; a `|` inside a cell (a run folder's path, a class name) escaped, as
    Markdown has it: it split its row into one cell too many (found by review)."""
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"

    lines = [cells(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [cells(row) for row in rows]
    return "\n".join(lines)


def _model_position(record: RunRecord) -> int:
    """Where a run's model comes in the catalogue (the order models build on each other);
    a model the catalogue does not know comes last."""
    names = model_names()
    return names.index(record.model) if record.model in names else len(names)


def _ordered(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Runs in catalogue order of their model, a model's runs by dataset (not interleaved by
    when they ran), then oldest first."""
    return sorted(records, key=lambda r: (_model_position(r), r.dataset, r.created))


def _name(record: RunRecord) -> str:
    """A run's row label: its model's catalogue label with its store's dataset ("TV-HI flow"),
    and " (from scratch)" where its chain lacked the transfer base it builds on (a frame CNN
    trained from scratch is not the report's transfer model, whose 16,444 weights train); a
    model the catalogue does not know, by its recorded name."""
    dataset = record.dataset
    try:
        label = get_model(record.model).label
    except UnknownModelError:
        return record.model
    name = label.format(dataset=DATASET_LABELS.get(dataset, dataset)).strip() or record.model
    return f"{name} (from scratch)" if _from_scratch(record) else name


def row_names(records: Sequence[RunRecord]) -> list[str]:
    """Each run's name in a report of the latest runs `records` (`_name`), with its store
    ("TV-HI flow, store 0f4c8094") where its model has runs on another store of the dataset
    (`_with_stores`)."""
    return _with_stores([_name(r) for r in records], records)


def _with_stores(labels: list[str], records: Sequence[RunRecord]) -> list[str]:
    """`labels` of `records` (one each), with the record's store ("..., store 0f4c8094") on
    every label of a model that has runs on several stores of one dataset: only on labels
    that met (as it was) left "TV-HI two-stream" beside "TV-HI two-stream (from scratch)",
    rows of two stores that named neither."""
    def key(record: RunRecord) -> tuple[str, str]:
        return record.model, record.dataset

    stores: dict[tuple[str, str], set[str]] = {}
    for record in records:
        stores.setdefault(key(record), set()).add(record.fingerprint)
    return [f"{label}, store {record.fingerprint[:8]}" if len(stores[key(record)]) > 1
            else label for label, record in zip(labels, records, strict=True)]


def _from_scratch(record: RunRecord) -> bool:
    """Whether a run's chain lacked a transfer base (`chain_from_scratch`): as the run recorded
    it, which holds after the runs of its chain are deleted or moved (their `metrics.json`
    can no longer be read); worked out from its chain for a run that did not record it."""
    recorded = record.metrics.get("from_scratch")
    if isinstance(recorded, bool):
        return recorded
    return "scratch" in transfer_origins(record)


def recorded_test_accuracy(record: RunRecord) -> float | None:
    """The run's test accuracy from `metrics.json`; None where it has none (`"test": null`,
    `"accuracy": null`, or no `test` at all: a run from before it was recorded)."""
    accuracy = (record.metrics.get("test") or {}).get("accuracy")
    return None if accuracy is None else float(accuracy)


def recipe_overrides(model: str, recipe: Mapping[str, Any]) -> list[str]:
    """The fields of a recorded recipe whose values are not those of the catalogue's recipe of
    `model` in its recipe set (`trainers run --epochs 1`, `--lr`, `--dropout`...), sorted; so
    that a run trained otherwise is never labelled as the report's (or the tuned) recipe.

    Only the fields the run recorded are compared: a run leaves out only fields at their
    default (a report recipe records four fields, any recipe omits the later fields at their
    default), and the catalogue's recipes keep those at their default too. A model or recipe
    set the catalogue does not know has nothing to compare with: none."""
    try:
        reference = recorded_recipe(
            recipe_of(model, str(recipe.get("recipe_set", "report"))).to_dict())
    except (UnknownModelError, ModelConfigError):
        return []
    return sorted(key for key, value in recipe.items()
                  if key in reference and key not in ("optimizer", "loss")
                  and value != reference[key])


def recipe_label(recipe: Mapping[str, Any], fields: Iterable[str]) -> str:
    """A recipe's set with its values of `fields`, as rows and legends name recipes:
    "tuned, epochs 60, warmup_epochs 6"."""
    return ", ".join([str(recipe.get("recipe_set", "report")),
                      *(f"{key} {recipe.get(key)}" for key in fields)])


def run_recipe(record: RunRecord) -> str:
    """A run's recipe set with the fields it overrode in the catalogue's ("report, epochs 1")."""
    recipe = record.metrics.get("recipe") or {}
    return recipe_label(recorded_recipe(recipe), recipe_overrides(record.model, recipe))


def table_1(records: Iterable[RunRecord], render: Render = _markdown) -> str:
    """Best-epoch train/val accuracy and loss, and the epoch (the report's Table 1), rendered
    by `render(header, rows)` (Markdown; `trainers.html_report` passes an HTML table)."""
    rows = []
    records = _ordered(records)
    for r, name in zip(records, row_names(records), strict=True):
        best = r.metrics.get("best", {})
        rows.append([name, run_recipe(r), _num(best.get("train_accuracy")),
                     _num(best.get("val_accuracy")), _num(best.get("train_loss")),
                     _num(best.get("val_loss")), str(r.metrics.get("best_epoch", "-"))])
    return render(["Model", "Recipe", "train acc", "val acc", "train loss", "val loss", "Epoch"],
                  rows)


def table_2(records: Iterable[RunRecord], render: Render = _markdown) -> str:
    """Test accuracy, test loss and model size (the report's Table 2), rendered as `table_1`."""
    rows = []
    records = _ordered(records)
    for r, name in zip(records, row_names(records), strict=True):
        test = r.metrics.get("test") or {}
        rows.append([name, run_recipe(r), _num(recorded_test_accuracy(r)),
                     _num(test.get("loss")), _num(r.metrics.get("model_size_gb"), 3)])
    return render(["Model", "Recipe", "Test acc", "Test loss", "Model size (GB)"], rows)


def transfer_origins(record: RunRecord,
                     known: dict[str, RunRecord] | None = None) -> tuple[str, ...]:
    """The pretrained runs a run's chain starts from, by directory name: its transfer bases
    (`transfers_from`), and those of the runs it freezes (`requires`: a two-stream run's frames
    run's Stanford-40 base); "scratch" where a transfer base was missing. `known` maps resolved
    run directory names to records already read (a run is known by its name:
    `RunRecord.started_from`)."""
    known = known or {}
    origins: set[str] = set()
    pending, seen = [record], set()
    while pending:
        run = pending.pop()
        try:
            entry = get_model(run.model)
        except UnknownModelError:
            continue
        for name, path in (run.metrics.get("bases") or {}).items():
            if name in entry.transfers_from:
                origins.add(run_dir_name(path) or "scratch")
            elif name in entry.requires and path and run_dir_name(path) not in seen:
                seen.add(run_dir_name(path))
                base = known.get(run_dir_name(path)) or run.base_run(name)
                if base is not None:
                    pending.append(base)
    return tuple(sorted(origins))


def chain_from_scratch(model: str, bases: Mapping[str, RunRecord | None]) -> bool:
    """Whether a run of `model` started from `bases` is one `_name` labels "(from scratch)": a
    transfer base of its own was missing (a frames run without a Stanford-40 run), or one in
    the chain of a run it freezes (a two-stream run on such a frames run). False for a model
    whose chain transfers nothing (the image and flow CNNs): they are the report's models."""
    entry = get_model(model)
    return any(run is None if name in entry.transfers_from
               else run is not None and "scratch" in transfer_origins(run)
               for name, run in bases.items())


def seed_groups(records: Iterable[RunRecord]) -> list[tuple[list[RunRecord], tuple[str, ...]]]:
    """Runs that differ only in their seed, grouped: the same model, store (and its done
    samples) and training (recipe, augmentation, precision, Keras backend) and the same
    pretrained runs at the start of their chain (`transfer_origins`, given with each group), the
    latest run of each seed only. Groups come in catalogue order of their model, by dataset,
    then in `RECIPE_SETS` order of their recipe set (a model's report-recipe rows before its tuned
    ones, however the runs were interleaved in time), then by their first run. One seed of 100
    TV-HI test clips moves test accuracy by several points, so a figure worth quoting is a
    group's mean and spread, not one run's."""
    records = _ordered(records)
    known = {r.path.name: r for r in records}
    digests = _samples_digests(records)
    columns = _samples_digests(records, "columns_digest")
    groups: dict[str, tuple[dict[Any, RunRecord], tuple[str, ...]]] = {}
    for r in records:
        training = {k: v for k, v in r.training.items() if k != "seed"}
        if isinstance(training.get("recipe"), Mapping):
            training["recipe"] = recorded_recipe(training["recipe"])
        origins = transfer_origins(r, known)
        # The store's done samples too: a partly built store has the finished one's fingerprint
        # (and a store rebuilt since may hold as many but others: `_samples_digests`; a store
        # of the same fingerprint may list other clips at the same positions: `columns`).
        key = json.dumps([r.model, r.fingerprint, r.samples, digests[r.path], columns[r.path],
                          training, origins, _from_scratch(r)], sort_keys=True, default=str)
        # One run per seed, the latest: a seed trained twice is one draw, not two.
        groups.setdefault(key, ({}, origins))[0][r.metrics.get("seed")] = r
    sets = {name: i for i, name in enumerate(RECIPE_SETS)}

    def place(group: tuple[list[RunRecord], tuple[str, ...]]) -> tuple:
        first = group[0][0]
        recipe_set = (first.metrics.get("recipe") or {}).get("recipe_set", "report")
        return (_model_position(first), first.dataset, sets.get(recipe_set, len(sets)),
                first.created)

    listed = [(sorted(by_seed.values(), key=lambda r: (r.created, r.path.name)), origins)
              for by_seed, origins in groups.values()]
    return sorted(listed, key=place)


def _samples_digests(records: list[RunRecord], field: str = "samples_digest"
                     ) -> dict[Path, str | None]:
    """Each run's digest of its done samples (`field`: "samples_digest"; "columns_digest", of
    its store's id, label and split columns), for `seed_groups` to tell apart runs trained on
    as many but other samples of one store. A run from before the digest was recorded is taken
    as trained on the samples of the runs of its model, store and counts that did record one,
    where they all agree (as `RunRecord.trained_on` matches it by counts): older and newer
    seeds of one experiment stay one row."""
    recorded: dict[tuple, set[str]] = {}
    for r in records:
        if getattr(r, field) is not None:
            recorded.setdefault(_samples_key(r), set()).add(getattr(r, field))
    digests = {}
    for r in records:
        alike = recorded.get(_samples_key(r), set())
        digests[r.path] = getattr(r, field) or (next(iter(alike)) if len(alike) == 1 else None)
    return digests


def _samples_key(record: RunRecord) -> tuple:
    return record.model, record.fingerprint, json.dumps(record.samples, sort_keys=True)


def _group_labels(groups: list[list[RunRecord]], origins: list[tuple[str, ...]]) -> list[str]:
    """Each group's recipe set, with the values of the fields its recipe overrides in the
    catalogue's (`recipe_overrides`: "report, epochs 1"); where groups of one model share a
    set but not all its values (a tuned recipe lengthened with `--epochs`, say), the values
    this group has in the fields they differ in too (a field a run did not record counts as
    its default: `recorded_recipe`);
    where they share those but start from other pretrained runs, those runs (`origins`, each
    group's `transfer_origins`); and where even those are alike, the augmentation and
    precision, the Keras backend, the store, and the store's done samples when it trained (a
    store built further since: their counts, else whether the chain was from scratch, else the
    digest of the store's splits (a split file edited under one fingerprint), else the
    samples' digest),
    so that no two rows read alike: "tuned, epochs 60, warmup_epochs 6", "tuned, from
    image-efa44fb5-20261201-154435", "tuned, store 0f4c8094", "report, augment True, float32",
    "tuned, jax"."""
    recorded = [group[0].metrics.get("recipe") or {} for group in groups]
    recipes = [(group[0].model, recorded_recipe(recipe))
               for group, recipe in zip(groups, recorded, strict=True)]
    labels = []
    for (model, recipe), as_recorded in zip(recipes, recorded, strict=True):
        name = recipe.get("recipe_set", "report")
        others = [other for other_model, other in recipes if other_model == model
                  and other.get("recipe_set", "report") == name and other != recipe]
        differing = sorted({key for other in others for key in {*other, *recipe}
                            if other.get(key) != recipe.get(key)}
                           | {*recipe_overrides(model, as_recorded)})
        labels.append(recipe_label(recipe, differing))
    models = [model for model, _ in recipes]
    labels = _told_apart(models, labels, [
        f"augment {group[0].training.get('augment')}, {group[0].training.get('dtype_policy')}"
        for group in groups])
    labels = _told_apart(models, labels, [f"{group[0].training.get('keras_backend')}"
                                          for group in groups])
    labels = _told_apart(models, labels, [f"from {' + '.join(origin)}" if origin else ""
                                          for origin in origins])
    labels = _with_stores(labels, [group[0] for group in groups])
    labels = _told_apart(models, labels, [f"trained on {split_counts(group[0].samples)} samples"
                                          for group in groups])
    labels = _told_apart(models, labels, ["from scratch" if _from_scratch(group[0]) else ""
                                          for group in groups])
    # (a group's runs share the digests they were grouped by: any one that recorded it says it)
    columns = [next((r.columns_digest for r in group if r.columns_digest), "?")
               for group in groups]
    labels = _told_apart(models, labels, [f"splits {digest.split(':')[-1][:8]}"
                                          for digest in columns])
    digests = [next((r.samples_digest for r in group if r.samples_digest), "?")
               for group in groups]
    return _told_apart(models, labels, [f"done samples {digest[:8]}" for digest in digests])


def _told_apart(models: list[str], labels: list[str], extras: list[str]) -> list[str]:
    """`labels` with each one's `extra` added where another group of the same model has the
    same label but another extra."""
    told = []
    for model, label, extra in zip(models, labels, extras, strict=True):
        alike = {other_extra for other_model, other_label, other_extra
                 in zip(models, labels, extras, strict=True)
                 if (other_model, other_label) == (model, label)}
        told.append(f"{label}, {extra}" if len(alike) > 1 and extra else label)
    return told


def table_seeds(records: Iterable[RunRecord], render: Render = _markdown) -> str:
    """Test accuracy over seeds (`seed_groups`): mean, sample standard deviation, range. The
    Seeds column lists the seeds the mean is over; a run without test accuracy is left out of
    both and named after them ("0, 2 (untested: 1)"), not counted as a seed the mean used."""
    rows = []
    grouped = seed_groups(records)
    groups = [group for group, _ in grouped]
    labels = _group_labels(groups, [origins for _, origins in grouped])
    for group, recipe in zip(groups, labels, strict=True):
        scored = [(r, recorded_test_accuracy(r)) for r in group]
        accuracies = [accuracy for _, accuracy in scored if accuracy is not None]
        untested = [r for r, accuracy in scored if accuracy is None]
        seeds = _seeds(r for r, accuracy in scored if accuracy is not None) or "-"
        if untested:
            seeds += f" (untested: {_seeds(untested)})"
        spread = _num(statistics.stdev(accuracies)) if len(accuracies) > 1 else "-"
        rows.append([_name(group[0]), recipe, seeds,
                     _num(statistics.mean(accuracies)) if accuracies else "-", spread,
                     f"{min(accuracies):.2f}-{max(accuracies):.2f}" if accuracies else "-"])
    return render(["Model", "Recipe", "Seeds", "Test acc mean", "SD", "Range"], rows)


def _seeds(runs: Iterable[RunRecord]) -> str:
    return ", ".join(str(r.metrics.get("seed", "-")) for r in runs)


def render_report(runs_dir: str | Path) -> str:
    """Tables 1 and 2 and the curve figures of the latest run of each model on each store in
    `runs_dir` (`latest_runs`).

    Raises:
        RunNotFoundError: `runs_dir` does not exist.
    """
    records = _ordered(latest_runs(runs_dir))
    if not records:
        return f"No finished runs in {str(runs_dir)!r}."
    every_run = list_runs(runs_dir)
    names = row_names(records)
    figures = [f"- {name}: {_curves_source(r)}" for r, name in zip(records, names, strict=True)]
    runs = [f"- {name}: {r.path} (store {r.fingerprint[:8]}, {r.metrics.get('selection', '')})"
            for r, name in zip(records, names, strict=True)]
    return "\n".join([
        "Table 1: top-1 train/validation accuracy and loss at the best epoch.", "",
        table_1(records), "",
        "Table 2: test accuracy, test loss and size of the saved model.", "",
        table_2(records), "",
        "Test accuracy over seeds (every run here; runs that differ only in their seed are one "
        "row; SD is the sample standard deviation).", "",
        table_seeds(every_run), "",
        "Runs:", *runs, "",
        "Figures (accuracy and loss per epoch):", *figures,
    ])


def _curves_source(record: RunRecord) -> str:
    """Where a run's curves are: its curves.png where that is a whole PNG; else what `--out`
    and `--html` draw them from, or why there are none."""
    if record.whole_curves() is not None:
        return str(record.curves_file)
    if record.history() is not None:
        state = "is not a whole PNG" if record.curves_file.exists() else "is missing"
        return (f"{record.curves_file.name} in {record.path} {state}; --out and --html redraw "
                f"it from {HISTORY_FILE}")
    return f"none ({record.curves_unavailable()} in {record.path})"


def results_table(outcomes: Sequence["Outcome"]) -> str:
    """The runs one `trainers run` trained or reused, one row each."""
    rows = []
    for outcome in outcomes:
        r = outcome.record
        best = r.metrics.get("best", {})
        test = r.metrics.get("test") or {}
        rows.append([_name(r), "trained" if outcome.trained else "reused",
                     str(r.metrics.get("best_epoch", "-")), _num(best.get("val_accuracy")),
                     _num(best.get("val_loss")), _num(test.get("accuracy")),
                     _num(test.get("loss")), _num(r.metrics.get("model_size_gb"), 3),
                     str(r.path)])
    return _markdown(["Model", "Run", "Best epoch", "val acc", "val loss", "Test acc",
                      "Test loss", "Size (GB)", "Directory"], rows)
