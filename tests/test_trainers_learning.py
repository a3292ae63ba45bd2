"""Each of the four models learns: inference-mode test accuracy far above chance.

Tiny generated stores (`trainers.testing.make_tiny_store`: the class is a bright square's
place and colour, and for TV-HI also the flow's direction) at 32 px, a few epochs, seed 0. The
score checked is the run's own `metrics.json` test accuracy, which `evaluate` measures in
inference mode (BatchNorm moving statistics, no dropout) on the restored best epoch, and the
saved `model.keras` must reproduce it, so these tests catch a model that only learns in
training mode as surely as one that learns nothing.

On the code before issue 19 they fail: the BatchNorm moving statistics (momentum 0.99) had 20
to 100 steps to follow weights that moved fast, so inference-mode scores were near chance while
training accuracy was near 1 (Stanford-40 0.50, TV-HI flow and frames about chance), and the
best epoch was picked by those scores.
"""

from __future__ import annotations

import keras
import pytest

from flowstore.datasets.stanford40 import ACTIONS
from flowstore.store import open_store
from trainers.data import InputOptions, make_dataset
from trainers.run import RunConfig, run
from trainers.samples import StoreSamples
from trainers.testing import make_tiny_store


def _inference_accuracy(record, store, split: str) -> float:
    """Accuracy of the saved model on `split`, in inference mode."""
    model = keras.saving.load_model(record.model_file)
    with open_store(store) as opened:
        data = make_dataset(StoreSamples(opened, record.model), split,
                            InputOptions(batch_size=4))
        return float(model.evaluate(data, verbose=0, return_dict=True)["accuracy"])


def test_stanford40_learns_ten_classes(tmp_path):
    store = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32,
                            per_class=(16, 4, 6), classes=ACTIONS[:10])
    (outcome,) = run(RunConfig(model="stanford40", store=store, runs_dir=tmp_path / "runs",
                               epochs=4), echo=lambda line: None)
    metrics = outcome.record.metrics
    assert metrics["test"]["accuracy"] >= 0.8  # chance: 0.1
    # model.keras holds the weights *and* BatchNorm statistics the best epoch was scored with.
    assert _inference_accuracy(outcome.record, store, "val") == pytest.approx(
        metrics["best"]["val_accuracy"])
    assert _inference_accuracy(outcome.record, store, "test") == pytest.approx(
        metrics["test"]["accuracy"])


@pytest.fixture(scope="module")
def tvhi_chain(tmp_path_factory):
    """`trainers run two_stream` on a tiny TV-HI store: tvhi_frames (from scratch), tvhi_flow
    and two_stream, each trained for a few epochs."""
    root = tmp_path_factory.mktemp("tvhi_learning")
    store = make_tiny_store(root / "tvhi.zarr", size=32, steps=4, per_class=(10, 3, 5))
    outcomes = run(RunConfig(model="two_stream", store=store, runs_dir=root / "runs", epochs=4),
                   echo=lambda line: None)
    return store, {outcome.record.model: outcome.record for outcome in outcomes}


@pytest.mark.parametrize("model", ["tvhi_frames", "tvhi_flow", "two_stream"])
def test_tvhi_models_learn_four_classes(tvhi_chain, model):
    store, records = tvhi_chain
    metrics = records[model].metrics
    assert metrics["test"]["accuracy"] >= 0.6  # chance: 0.25
    assert _inference_accuracy(records[model], store, "test") == pytest.approx(
        metrics["test"]["accuracy"])
