"""`--scheduler`: extraction on a real dask.distributed cluster (separate worker processes)."""

from __future__ import annotations

import numpy as np
import pytest

from flowstore.build import BuildConfig, build
from flowstore.errors import FlowstoreError, StoreError
from flowstore.params import VideoParams
from flowstore.store import open_store


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def _config(source, store, **kwargs):
    return BuildConfig(dataset="tvhi", source=source, store=store, progress=False,
                       params=VideoParams(size=32, steps=4), **kwargs)


def test_cluster_build_equals_threaded_build(tiny_tvhi_source, tmp_path, cluster):
    threaded = build(_config(tiny_tvhi_source, tmp_path / "threads.zarr"))
    remote = build(_config(tiny_tvhi_source, tmp_path / "cluster.zarr",
                           scheduler=cluster.scheduler_address))
    assert remote.ok and remote.computed == threaded.computed == 16
    assert remote.fingerprint == threaded.fingerprint
    with open_store(tmp_path / "threads.zarr") as a, open_store(tmp_path / "cluster.zarr") as b:
        for name in a.array_names():
            np.testing.assert_array_equal(a.read(name), b.read(name))


def test_hdf5_with_a_scheduler_is_refused(tiny_tvhi_source, tmp_path):
    with pytest.raises(StoreError, match="one process"):
        build(_config(tiny_tvhi_source, tmp_path / "s.h5", scheduler="tcp://127.0.0.1:1"))


def test_unreachable_scheduler_is_a_clear_error(tiny_tvhi_source, tmp_path):
    with pytest.raises(FlowstoreError, match="cannot reach Dask scheduler"):
        build(_config(tiny_tvhi_source, tmp_path / "s.zarr", scheduler="tcp://127.0.0.1:9"))
