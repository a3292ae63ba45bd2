"""`benchmarks/flow_features.py` (the hand-made flow descriptors beside the flow CNN): its
histograms are what they say, and on a tiny store its rows tell global from relative motion."""

from __future__ import annotations

import numpy as np

from tests.conftest import load_benchmark
from trainers.testing import make_tiny_store

flow_features = load_benchmark("flow_features")


def test_histograms_put_each_pixel_s_magnitude_in_its_cell_and_orientation():
    flow = np.zeros((1, 2, 6, 6, 2), np.float32)
    flow[..., 0] = 3.0  # every pixel moves 3 px right: orientation 0, bin 4 of 8
    flow[:, :, :3, :3] = (0.0, -2.0)  # the top-left cell moves 2 px up: -pi/2, bin 2
    got = flow_features.histograms(flow, grid=2, bins=8).reshape(4, 8)
    expected = np.zeros((4, 8))
    expected[0, 2] = np.log1p(2.0)
    expected[1:, 4] = np.log1p(3.0)
    np.testing.assert_allclose(got, expected)
    # MBH sees none of a motion that is the same everywhere; mean subtraction removes it.
    uniform = np.full((1, 2, 6, 6, 2), 1.5, np.float32)
    assert not flow_features.mbh(2, 8)(uniform).any()
    assert not flow_features.hof(2, 8, centred=True)(uniform).any()


def test_flow_features_on_a_tiny_store(tmp_path, capsys):
    # The tiny store's classes differ by a motion the same at every pixel: HOF finds them,
    # HOF after mean flow subtraction cannot.
    store = make_tiny_store(tmp_path / "t.zarr", per_class=(4, 1, 2))
    results = flow_features.main(["--store", str(store), "--k", "4", "--repeats", "2",
                                  "--permutations", "3", "--test"])
    rows = results["rows"]
    assert set(rows) == {"HOF", "HOF, mean flow subtracted", "MBH",
                         "mean flow magnitude per step"}
    assert rows["HOF"]["logistic"] == 1.0 and rows["HOF"]["test"] == 1.0
    assert rows["HOF, mean flow subtracted"]["logistic"] <= 0.5
    assert rows["HOF"]["dims"] == 72 and rows["MBH"]["dims"] == 144
    out = capsys.readouterr().out
    assert "| HOF | 72 | 1.00 | 1.00 | 1.00 |" in out
    assert "logistic, test (8 clips)" in out
