"""Batch buffers are reused once nothing refers to them, and never while anything does (a view
of a view, a memoryview, a tensor wrapping the memory); the PyTorch collate hands a batch read at
once on uncopied, and anything else as default collate would."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import flowstore
from flowstore.reader.buffers import TF_ALIGNMENT, BufferPool
from flowstore.reader.dataset import BatchSample
from trainers.testing import make_tiny_store

SHAPE = (4, 8, 8, 2)


def test_a_buffer_is_reused_once_the_last_view_is_gone():
    pool = BufferPool()
    first = pool.empty(SHAPE, "float16")
    address = first.ctypes.data
    del first
    again = pool.empty(SHAPE, "float16")
    assert again.ctypes.data == address  # the same memory: no fresh pages to fault in
    assert pool.held_bytes == again.nbytes + TF_ALIGNMENT


@pytest.mark.parametrize("holder", ["view of a view", "memoryview", "torch tensor"])
def test_a_buffer_is_not_reused_while_anything_refers_to_it(holder):
    pool = BufferPool()
    batch = pool.empty(SHAPE, "float32")
    batch[...] = 1.0
    if holder == "view of a view":
        kept = batch[2][1:]
    elif holder == "memoryview":
        kept = memoryview(batch)
    else:
        torch = pytest.importorskip("torch")
        kept = torch.from_numpy(batch)
    del batch
    other = pool.empty(SHAPE, "float32")
    other[...] = 7.0  # would show through `kept` if the memory were handed out again
    assert np.all(np.asarray(kept) == 1.0)
    del kept
    assert pool.empty(SHAPE, "float32").ctypes.data not in (other.ctypes.data,)


def test_free_buffers_beyond_the_limit_are_released():
    pool = BufferPool(max_free_bytes=3 * 1024)
    held = [pool.empty((1024,), np.uint8) for _ in range(8)]  # all in use: all kept
    assert pool.held_bytes == 8 * (1024 + TF_ALIGNMENT)
    del held
    pool.empty((16,), np.uint8)  # a new size: the 8 free ones are over the limit
    assert pool.held_bytes <= 3 * 1024 + 16 + TF_ALIGNMENT


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), "uint8"), ((1,), "float16"), ((2, 3), "float32")])
def test_arrays_are_aligned_and_contiguous(shape, dtype):
    array = BufferPool().empty(shape, dtype)
    assert array.shape == shape and array.dtype == np.dtype(dtype)
    assert array.ctypes.data % TF_ALIGNMENT == 0 and array.flags.c_contiguous and array.flags.writeable


# -- the PyTorch collate ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    path = make_tiny_store(tmp_path_factory.mktemp("buffers") / "t.zarr", per_class=(3, 1, 1))
    with flowstore.open(path) as ds:
        yield ds.split("train", features=("middle_frame", "flow"))


def test_a_dataloader_batch_is_the_read_batch_uncopied_and_as_default_collate_makes_it(train):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate

    samples = train.__getitems__([4, 0, 2])
    assert all(isinstance(s, BatchSample) for s in samples)
    got = default_collate(samples)
    plain = default_collate([dict(s) for s in samples])  # how torch stacks plain samples
    batch = samples[0].batch
    assert set(got) == set(plain) and got["id"] == plain["id"] == list(batch["id"])
    for key in ("middle_frame", "flow", "label"):
        assert got[key].dtype == plain[key].dtype and got[key].shape == plain[key].shape
        assert torch.equal(got[key], plain[key])
    for key in ("middle_frame", "flow"):  # the read's buffer itself, not a copy of it
        assert np.shares_memory(got[key].numpy(), batch[key])
        assert not np.shares_memory(plain[key].numpy(), batch[key])


def test_other_lists_of_samples_are_stacked_as_before(train):
    pytest.importorskip("torch")
    from torch.utils.data import default_collate

    samples = train.__getitems__([4, 0, 2])
    for subset in ([samples[1], samples[0], samples[2]], samples[:2],
                   samples[:2] + train.__getitems__([2])):
        got = default_collate(subset)
        assert [int(v) for v in got["label"]] == [int(s["label"]) for s in subset]
        assert got["id"] == [s["id"] for s in subset]
        np.testing.assert_array_equal(got["flow"].numpy(), np.stack([s["flow"] for s in subset]))
        assert not np.shares_memory(got["flow"].numpy(), samples[0].batch["flow"])


def test_a_batch_sample_pickles_as_the_sample_alone(train):
    sample = train.__getitems__([1, 3])[1]
    copied = pickle.loads(pickle.dumps(sample))
    assert type(copied) is dict and set(copied) == set(sample)
    np.testing.assert_array_equal(copied["flow"], sample["flow"])
    assert len(pickle.dumps(sample)) < 1.5 * sum(v.nbytes for v in copied.values()
                                                  if hasattr(v, "nbytes"))
