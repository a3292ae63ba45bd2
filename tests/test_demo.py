"""The README demo, exactly as a user runs it: synthetic TV-HI, then the two-stream chain.

The synthetic source makes the class depend on colour x motion axis, so a frames-only or a
flow-only model tops out near 50% while the fused model can do far better.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_two_stream_beats_both_single_streams(tmp_path):
    env = {**os.environ, "FLOWSTORE_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    store, runs = tmp_path / "demo" / "tvhi.zarr", tmp_path / "demo" / "runs"
    for command in (["flowstore", "build", "tvhi", "--synthetic", "--store", str(store), "--size", "64", "-q"],
                    ["trainers", "run", "two_stream", "--store", str(store), "--runs-dir", str(runs)]):
        out = subprocess.run([sys.executable, "-m", *command], env=env, capture_output=True,
                             text=True, timeout=1800)
        assert out.returncode == 0, out.stderr[-2000:]
    assert "| TV-HI two-stream (from scratch) |" in out.stdout  # no Stanford-40 run to transfer
    accuracy = {}
    for metrics in runs.glob("*/metrics.json"):
        record = json.loads(metrics.read_text())
        accuracy[record["model"]] = record["test"]["accuracy"]
    assert set(accuracy) == {"frames", "flow", "two_stream"}
    # Beating both streams is what fusion reliably shows here; by how much is one draw of a
    # noisy chain (8 seeds on a Xeon: by 10 to 38 points; seed 0 on an AMD EPYC: by 4, where
    # the flow model missed the motion axis), so no margin is asserted.
    assert accuracy["two_stream"] > max(accuracy["frames"], accuracy["flow"]), accuracy
