"""`benchmarks/frames_transfer_features.py` (issue 16) on tiny stores: its checks pass on a
healthy transfer, its probes find the class information a synthetic store holds, and it leaves
the base run's weights as they were."""

from __future__ import annotations

from pathlib import Path

import keras

from tests.conftest import load_benchmark
from trainers.models import build_stanford40, build_tvhi_frames
from trainers.runs import MODEL_FILE, RunRecord, read_run, write_json
from trainers.testing import TVHI_CLASSES, make_tiny_store


def _saved_run(path: Path, model: keras.Model, name: str) -> RunRecord:
    path.mkdir()
    model.save(path / MODEL_FILE)
    write_json(path / "metrics.json", {"model": name, "store": {"params": {"size": 32}},
                                       "test": {"accuracy": 0.25, "loss": 1.39}})
    return read_run(path)


def test_frames_transfer_benchmark_on_tiny_stores(tmp_path, capsys):
    benchmark = load_benchmark("frames_transfer_features")
    images = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=32,
                             classes=("applauding", "climbing", "jumping", "waving"))
    tvhi = make_tiny_store(tmp_path / "tvhi.zarr", size=32, steps=2)
    # Untrained runs, saved as `trainers run` saves them: what is measured here is the transfer
    # (which weights the frame model holds, what its frozen part does), not how well they learnt.
    keras.utils.set_random_seed(0)
    image = build_stanford40(input_shape=(32, 32, 3), num_classes=4)
    base = _saved_run(tmp_path / "image-run", image, "image")
    frames = _saved_run(tmp_path / "frames-run",
                        build_tvhi_frames(input_shape=(32, 32, 3), base=image), "frames")
    saved = (base.path / "model.keras").read_bytes()

    results = benchmark.main(["--store", str(tvhi), "--base", str(base.path),
                              "--frames", str(frames.path), "--control-store", str(images),
                              "--folds", "2", "--repeats", "1", "--permutations", "2",
                              "--head-lr", "1e-3", "--head-epochs", "1", "--head-folds", "2",
                              "--tuned-cv", "--tuned-epochs", "1", "--tuned-folds", "2",
                              "--frame-views"])
    out = capsys.readouterr().out

    # Checks: the frozen part is the base's, and training mode neither changes its output nor
    # its BatchNorm statistics.
    assert results["mode_difference"] == 0 and results["statistics_kept"]
    assert results["runs"][frames.path.name]["base_weights"]
    assert (base.path / "model.keras").read_bytes() == saved
    assert results["samples"] == 16 and results["classes"] == list(TVHI_CLASSES)
    assert set(results["layers"]) == {"conv_0", "conv_1", "conv_2", "conv_3", "conv_4",
                                      "flatten"}
    # The probe sees the class information the synthetic frames hold (a bright square per
    # class): nearest centroid on mean pixels is far above chance.
    probes = {row["name"]: row for row in results["probes"]}
    assert probes["16 x 16 mean pixels"]["centroid"] >= 0.75
    assert any(name.startswith("control:") for name in probes)
    assert len(results["null"]) == 2 and set(results["head"]) == {1e-3}
    # 6.: the tuned recipe's frame model, frozen and fine-tuned, on the middle frame and on
    # frame views, scored on every held-out clip.
    assert set(results["tuned"]) == {(False, False), (True, False), (False, True), (True, True)}
    assert "| fine-tuned (fine_tune_base), frame views (2 frames a clip) |" in out
    for row in results["tuned"].values():
        assert len(row["per_fold"]) == 2 and 0 <= row["held_acc"] <= 1 and row["held_loss"] > 0
    for section in ("## 1. Checks", "## 2.", "## 3.", "## 4.", "## 5.", "## 6."):
        assert section in out


def test_frame_views_read_every_frame_of_the_same_clips_in_the_same_order(tmp_path):
    benchmark = load_benchmark("frames_transfer_features")
    store = make_tiny_store(tmp_path / "tvhi.zarr", size=16, steps=3, per_class=(2, 1, 1),
                            not_done=(1,))
    from trainers.samples import open_samples

    samples = open_samples(store, "frames")
    try:
        middle, labels = benchmark.read_split_frames(samples, ("train", "val"))
    finally:
        samples.store.close()
    frames, frame_labels = benchmark.read_split_clip_frames(str(store), ("train", "val"))
    assert frames.shape == (len(middle), 3, 16, 16, 3)
    assert (frame_labels == labels).all()
    # The tiny store's frames are each clip's middle frame repeated.
    assert all((frames[:, step] == middle).all() for step in range(3))
