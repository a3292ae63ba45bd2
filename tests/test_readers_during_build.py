"""Trainers and `inspect` open stores read-only and work while a build appends to the store."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from flowstore.store import open_store
from flowstore.synth.tvhi import SynthTVHIConfig, write_synthetic_tvhi
from tests.conftest import flowstore_cli


def test_trainer_input_and_inspect_work_during_a_build(tmp_path, suffix):
    pytest.importorskip("tensorflow")
    from trainers.data import InputOptions, make_dataset
    from trainers.samples import open_samples

    source = write_synthetic_tvhi(tmp_path / "src", SynthTVHIConfig(
        videos_per_class=8, negatives=0, min_frames=60, max_frames=90, resolution=(320, 240)))
    store = tmp_path / f"s{suffix}"
    builder = subprocess.Popen([sys.executable, "-m", "flowstore", "build", "tvhi", "--source", str(source),
                                "--store", str(store), "--size", "96", "--workers", "1", "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                with open_store(store) as s:
                    done = int(s.read("done").sum())
            except Exception:  # not created yet
                continue
        assert builder.poll() is None, "the build should still be running"
        summary = json.loads(flowstore_cli("inspect", store, "--json").stdout)
        assert 3 <= summary["done"] < 32
        samples = open_samples(store, "tvhi_flow")
        try:
            ready = len(samples.indices("train"))
            seen = sum(int(y.shape[0]) for _, y in make_dataset(samples, "train", InputOptions(batch_size=2)))
            assert seen == ready  # only samples marked done when the reader opened the store
        finally:
            samples.store.close()
        assert builder.poll() is None or builder.returncode == 0
    finally:
        _, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err
    with open_store(store) as s:
        assert s.read("done").all()
