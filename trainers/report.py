"""The report's result tables, rebuilt from run directories as Markdown.

Table 1: train/validation accuracy and loss at the best epoch, and that epoch.
Table 2: test accuracy, test loss and the size of the saved model in GB.
Both come from each run's `metrics.json`; `trainers report RUNS_DIR` shows the latest run of
each model, and `trainers run` ends with a table of the runs it trained or reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from trainers.catalogue import get_model, model_names
from trainers.errors import UnknownModelError
from trainers.runs import RunRecord, latest_runs

if TYPE_CHECKING:
    from trainers.run import Outcome

#: How the report writes its datasets' names in row labels; other datasets by their own name.
DATASET_LABELS = {"stanford40": "Stanford 40", "tvhi": "TV-HI"}


#: Renders a table from its header and rows of cell strings.
Render = Callable[[Sequence[str], Iterable[Sequence[str]]], str]


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered(records: Iterable[RunRecord]) -> list[RunRecord]:
    order = {name: i for i, name in enumerate(model_names())}
    return sorted(records, key=lambda r: (order.get(r.model, len(order)), r.created))


def _name(record: RunRecord) -> str:
    """A run's row label: its model's catalogue label with its store's dataset ("TV-HI flow");
    a model the catalogue does not know, by its recorded name."""
    dataset = str(record.store.get("dataset", ""))
    try:
        label = get_model(record.model).label
    except UnknownModelError:
        return record.model
    return label.format(dataset=DATASET_LABELS.get(dataset, dataset)).strip() or record.model


def table_1(records: Iterable[RunRecord], render: Render = _markdown) -> str:
    """Best-epoch train/val accuracy and loss, and the epoch (the report's Table 1), rendered
    by `render(header, rows)` (Markdown; `trainers.html_report` passes an HTML table)."""
    rows = []
    for r in _ordered(records):
        best = r.metrics.get("best", {})
        rows.append([_name(r), _num(best.get("train_accuracy")), _num(best.get("val_accuracy")),
                     _num(best.get("train_loss")), _num(best.get("val_loss")),
                     str(r.metrics.get("best_epoch", "-"))])
    return render(["Model", "train acc", "val acc", "train loss", "val loss", "Epoch"], rows)


def table_2(records: Iterable[RunRecord], render: Render = _markdown) -> str:
    """Test accuracy, test loss and model size (the report's Table 2), rendered as `table_1`."""
    rows = []
    for r in _ordered(records):
        test = r.metrics.get("test") or {}
        rows.append([_name(r), _num(test.get("accuracy")), _num(test.get("loss")),
                     _num(r.metrics.get("model_size_gb"), 3)])
    return render(["Model", "Test acc", "Test loss", "Model size (GB)"], rows)


def render_report(runs_dir: str | Path) -> str:
    """Tables 1 and 2 and the curve figures of the latest run of each model in `runs_dir`.

    Raises:
        RunNotFoundError: `runs_dir` does not exist.
    """
    records = list(latest_runs(runs_dir).values())
    if not records:
        return f"No finished runs in {str(runs_dir)!r}."
    figures = [f"- {_name(r)}: {r.curves_file}" for r in _ordered(records)]
    runs = [f"- {_name(r)}: {r.path} (store {r.fingerprint[:8]}, {r.metrics.get('selection', '')})"
            for r in _ordered(records)]
    return "\n".join([
        "Table 1: top-1 train/validation accuracy and loss at the best epoch.", "",
        table_1(records), "",
        "Table 2: test accuracy, test loss and size of the saved model.", "",
        table_2(records), "",
        "Runs:", *runs, "",
        "Figures (accuracy and loss per epoch):", *figures,
    ])


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
