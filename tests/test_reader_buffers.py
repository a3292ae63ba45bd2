"""Batch buffers are reused once nothing refers to them, and never while anything does (a view
of a view, a memoryview, a tensor wrapping the memory); tf.data and the PyTorch collate hand a
batch read at once on uncopied, the collate anything else as default collate would."""

from __future__ import annotations

import collections
import copy
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


# -- tf.data: a batch is the read's buffers, and holds them -----------------------------------------


def test_tf_batches_are_the_read_buffers_and_keep_them_from_reuse(train, monkeypatch):
    """`to_tf_dataset` hands each batch's buffers on uncopied (`tf.numpy_function` in a tf.data
    graph wraps 64-byte-aligned numpy memory), and a tensor still alive keeps its buffer out of
    the pool: what the pool's reuse and the tf.data figures of benchmarks/reader.py rest on.
    (An eager `tf.numpy_function`, `tf.constant` or `tensor.numpy()` copies; only this path
    does not.)"""
    pytest.importorskip("tensorflow")
    features = ("middle_frame", "flow")
    expected = [{key: np.array(sample[key]) for key in features} for sample in train]
    addresses = set()
    read = train.read

    def recording(positions):  # remembers where each batch lies, not the batch itself
        batch = read(positions)
        addresses.update(batch[key].ctypes.data for key in features)
        return batch

    monkeypatch.setattr(train, "read", recording)
    kept = [features for features, _ in train.to_tf_dataset(2)]  # in order: no shuffle
    for batch in kept:
        for key in features:
            assert np.asarray(batch[key]).ctypes.data in addresses  # the read's buffer itself
    scribbled = []
    for _ in range(3):  # more batches from the pool, each written over
        for start in range(0, len(train), 2):
            other = read(range(start, min(start + 2, len(train))))
            for key in features:
                other[key][...] = 123
            scribbled.append(other)
    rows = [(batch, row) for batch in kept for row in range(int(batch["flow"].shape[0]))]
    assert len(rows) == len(expected)
    for (batch, row), sample in zip(rows, expected, strict=True):
        for key in features:
            np.testing.assert_array_equal(np.asarray(batch[key][row]), sample[key])


# -- DataLoader workers: batches read into shared memory, lent to the main process -----------------


def _loader(split, *, seed: int = 0, **options):
    from torch import Generator
    from torch.utils.data import DataLoader

    return DataLoader(split, batch_size=2, num_workers=2, shuffle=True, persistent_workers=True,
                      generator=Generator().manual_seed(seed), **options)


def _expected(split) -> dict[str, dict]:
    return {sample["id"]: sample for sample in split}


def _assert_intact(kept, expected) -> None:
    """Every row of every batch holds its sample's features and label, as a plain read gives."""
    for batch in kept:
        for row, sample_id in enumerate(batch["id"]):
            for key in ("middle_frame", "flow"):
                np.testing.assert_array_equal(batch[key][row].numpy(), expected[sample_id][key])
            assert int(batch["label"][row]) == expected[sample_id]["label"]


@pytest.mark.parametrize("strategy", ["file_descriptor", "file_system"])
def test_batches_the_main_process_keeps_are_never_written_over(train, strategy, monkeypatch):
    torch = pytest.importorskip("torch")
    import torch.multiprocessing

    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])
    expected = _expected(train)
    previous = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy(strategy)
    try:
        loader = _loader(train)
        kept = [batch for _ in range(3) for batch in loader]  # every batch of three epochs
    finally:
        torch.multiprocessing.set_sharing_strategy(previous)
    assert len(kept) == 3 * ((len(train) + 1) // 2)
    assert len(adapter._BORROWED) == 2 * len(kept)  # every feature lent, none handed back yet
    _assert_intact(kept, expected)


def _segments_lent(loader, epochs: int, expected) -> tuple[set, int]:
    """The (worker, slot) segments the main process borrowed over `epochs` epochs, each batch
    checked and dropped at once, and the number of batches."""
    from flowstore.reader import torch as adapter

    segments, batches = set(), 0
    for _ in range(epochs):
        for batch in loader:
            np.testing.assert_array_equal(batch["flow"][0].numpy(),
                                          expected[batch["id"][0]]["flow"])
            segments |= {(lent.data_ptr(), slot) for _, lent, slot in adapter._BORROWED}
            batches += 1
            del batch
    return segments, batches


def test_a_worker_reuses_its_segments_once_the_main_process_drops_them(train, monkeypatch):
    pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])  # this loader's segments only
    segments, batches = _segments_lent(_loader(train, seed=1), 8, _expected(train))
    # Without reuse every batch takes two new segments (one per feature): 2 * batches. With it,
    # each worker needs as many as it has batches in flight, read ahead or not yet handed back
    # (28 in all here, from the second epoch on).
    assert batches >= 40 and 4 <= len(segments) <= batches


def test_only_the_features_travel_through_shared_memory_and_lent_only_at_first(train,
                                                                              monkeypatch):
    """Each shared tensor costs the main process a round trip to its worker for the file
    descriptor: labels travel by value, and a worker's `lent` bytes only until the main
    process keeps them (its first batches, read ahead before it knew, at most)."""
    torch = pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])
    monkeypatch.setattr(adapter, "_LENDERS", {})
    received, known_lender = [], adapter._known_lender

    def recording(lender, shared, pid):
        received.append(shared is not None)
        return known_lender(lender, shared, pid)

    monkeypatch.setattr(adapter, "_known_lender", recording)
    expected = _expected(train)
    loaders = [_loader(train, seed=seed) for seed in range(2)]
    kept = [batch for loader in loaders for _ in range(4) for batch in loader]
    _assert_intact(kept, expected)
    assert len(adapter._BORROWED) == 2 * len(kept)  # the features, lent
    assert not any(batch["label"].is_shared() for batch in kept)
    assert kept[0]["label"].dtype == torch.int64
    # Each of the 4 workers sent its bytes with at most its first 3 batches (the DataLoader reads
    # 2 ahead per worker), never once the main process had them.
    assert len(received) == len(kept) >= 2 * 4 * 6
    assert 4 <= sum(received) <= 4 * 3
    assert len(adapter._LENDERS) == 4
    # What is kept of workers gone is let go.
    del kept, loaders  # their workers stop
    list(_loader(train))  # batches dropped at once
    assert len(adapter._LENDERS) == 2


def test_a_segment_travels_once_and_is_only_named_after(train, monkeypatch):
    """Once the main process has a segment mapped, batches read into it again only name it (no
    file-descriptor round trip); the tensors it gets over that mapping are handed back as any."""
    torch = pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])
    monkeypatch.setattr(adapter, "_LENDERS", {})
    arrivals, borrow = [], adapter._Lender.borrow

    def recording(self, value, slot, number, offset):
        arrivals.append((isinstance(value, torch.Tensor), id(self), slot, number))
        return borrow(self, value, slot, number, offset)

    monkeypatch.setattr(adapter._Lender, "borrow", recording)
    segments, batches = _segments_lent(_loader(train, seed=3), 6, _expected(train))
    sent = [arrival[1:] for arrival in arrivals if arrival[0]]
    named = [arrival[1:] for arrival in arrivals if not arrival[0]]
    assert len(arrivals) == 2 * batches >= 2 * 30
    assert len(sent) == len(set(sent)) <= len(segments)  # each segment sent whole once
    assert named and set(named) <= set(sent)  # then named, and only once it was sent
    assert len(named) > len(sent)


def test_a_slot_given_a_new_segment_is_read_from_the_new_one(train, monkeypatch):
    """A worker that releases its free segments gives their slots to new ones: the main
    process, which keeps a mapping of each slot's segment, maps the new segment (read through
    the old mapping, a batch held the bytes of one long gone)."""
    torch = pytest.importorskip("torch")
    from flowstore.reader import buffers
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])
    monkeypatch.setattr(adapter, "_LENDERS", {})
    arrivals, borrow = [], adapter._Lender.borrow

    def recording(self, value, slot, number, offset):
        arrivals.append((id(self), slot, number, isinstance(value, torch.Tensor)))
        return borrow(self, value, slot, number, offset)

    def releasing(_worker: int) -> None:  # every free segment released: its slot reused at once
        buffers.use_pool(adapter.SharedBufferPool(max_free_bytes=0))

    monkeypatch.setattr(adapter._Lender, "borrow", recording)
    expected = _expected(train)
    loader = _loader(train, seed=6, worker_init_fn=releasing)
    for _ in range(6):
        for batch in loader:
            _assert_intact([batch], expected)
            del batch
    numbers = collections.defaultdict(set)
    for lender, slot, number, _ in arrivals:
        numbers[lender, slot].add(number)
    assert any(len(seen) > 1 for seen in numbers.values())  # a slot given a new segment


def test_loaders_read_in_turn_go_on_lending_to_the_main_process(train, monkeypatch):
    """A train and a val loader with persistent workers, read in turn: what the main process
    keeps of a worker's pool is kept while the worker lives, though none of its segments is
    borrowed (let go, the worker's next batch named segments the main process no longer knew:
    a RuntimeError)."""
    pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])
    monkeypatch.setattr(adapter, "_LENDERS", {})
    expected = _expected(train)
    loaders = [_loader(train, seed=seed) for seed in (7, 8)]
    for _ in range(3):
        for loader in loaders:
            for batch in loader:
                _assert_intact([batch], expected)
                del batch
    assert len(adapter._LENDERS) == 4


def test_without_shared_memory_workers_read_into_plain_buffers(train, monkeypatch):
    pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "shared_memory_works", lambda: False)  # inherited by forks
    expected = _expected(train)
    before = list(adapter._BORROWED)
    for batch in _loader(train, multiprocessing_context="fork"):
        assert adapter._BORROWED == before  # nothing lent
        _assert_intact([batch], expected)


def test_this_torch_behaves_as_the_shared_pool_assumes():
    pytest.importorskip("torch")
    from flowstore.reader.torch import shared_memory_works

    assert shared_memory_works()


#: Three epochs of two-worker DataLoaders over a split, under an open-file limit (argv[2]).
LOADER_UNDER_FILE_LIMIT = """
import resource, sys
import numpy as np, flowstore
from torch.utils.data import DataLoader
from flowstore.reader import torch as adapter
resource.setrlimit(resource.RLIMIT_NOFILE,
                   (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
split = flowstore.open(sys.argv[1]).split("train")
expected = {sample["id"]: sample["flow"] for sample in split}
rows = 0
for epoch in range(3):
    for batch in DataLoader(split, batch_size=2, num_workers=2, shuffle=True):
        for row, sample_id in enumerate(batch["id"]):
            np.testing.assert_array_equal(batch["flow"][row].numpy(), expected[sample_id])
        rows += len(batch["id"])
print(rows, len(adapter._BORROWED))
"""


@pytest.mark.parametrize("limit", [64, 1024])
def test_workers_lend_only_where_the_open_file_limit_leaves_room(tmp_path, limit):
    """Under `ulimit -n 64` two lending workers failed at the second epoch (a bare EOFError, or
    a hang), the main process holding a mapping of each segment they sent; there workers keep
    plain buffers, as torch's copies need fewer descriptors, and at the usual 1,024 they lend."""
    pytest.importorskip("torch")
    import resource
    import subprocess
    import sys

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < limit:
        pytest.skip(f"this machine's hard open-file limit is below {limit}")
    path = make_tiny_store(tmp_path / "t.zarr", per_class=(10, 1, 1))
    out = subprocess.run([sys.executable, "-c", LOADER_UNDER_FILE_LIMIT, str(path), str(limit)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows, lent = map(int, out.stdout.split())
    assert rows == 3 * 40
    assert (lent > 0) == (limit == 1024)


#: Six epochs, a new 2-worker DataLoader each (the README's loop): per epoch, the worker pools
#: the main process still keeps, and the /dev/shm files of this script's workers still there.
#: With `keep`, one small tensor of each epoch is kept (checked intact at the end); with
#: `file_system`, torch's sharing strategy that keeps segments as /dev/shm files.
EPOCHS_OF_NEW_LOADERS = """
import os, sys, torch, flowstore
from torch.utils.data import DataLoader
from flowstore.reader import torch as adapter
path, mode = sys.argv[1:3]
if mode == "file_system":
    torch.multiprocessing.set_sharing_strategy("file_system")
pids, kept = set(), []
def ours():
    return [name for name in os.listdir("/dev/shm")
            if name.startswith("torch_") and int(name.split("_")[1]) in pids]
with flowstore.open(path) as ds:
    train = ds.split("train")
    for epoch in range(6):
        batches = iter(DataLoader(train, batch_size=2, shuffle=True, num_workers=2))
        pids.update(worker.pid for worker in batches._workers)
        for number, batch in enumerate(batches):
            if number == 0 and mode == "keep":
                kept.append((batch["id"][0], batch["flow"][0]))
        del batches, batch
        print(len(adapter._LENDERS), len(ours()), flush=True)
    ids = [train[i]["id"] for i in range(len(train))]
    for sample, flow in kept:
        assert torch.equal(flow, torch.from_numpy(train[ids.index(sample)]["flow"])), sample
"""


@pytest.mark.parametrize("mode", ["keep", "file_system"])
def test_new_loaders_each_epoch_let_go_of_the_last_ones_segments(tmp_path, mode):
    """A tensor kept from each epoch (a loss not taken `.item()`) kept every segment of its
    worker's pool mapped in the main process, about 14 descriptors an epoch, which ran out
    under `ulimit -n 256` at the 17th; and under torch's `file_system` sharing each
    DataLoader's workers left their segments in /dev/shm until the main process ended, about
    3 MB an epoch at 32 px (found by review). A kept tensor holds its own segment only, and a
    worker lets go of its pool as it ends."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    path = make_tiny_store(tmp_path / "t.zarr", per_class=(4, 1, 1))
    out = subprocess.run([sys.executable, "-c", EPOCHS_OF_NEW_LOADERS, str(path), mode],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lenders, files = zip(*(map(int, line.split()) for line in out.stdout.split("\n") if line))
    assert max(lenders) <= 4, lenders  # (this epoch's two, and the last one's until now)
    if mode == "file_system":
        assert files[0] > 0 and max(files) <= 2 * files[0], files


def _lend_unreturned(train, pool, batches: int) -> list:
    """`batches` batches lent by `pool` and never handed back, as behind a repackaging collate."""
    from flowstore.reader.torch import collate_batch_samples

    kept = []
    for number in range(batches):
        positions = [number % len(train), (number + 1) % len(train)]
        kept.append(collate_batch_samples(train.__getitems__(positions)))
    return kept




@pytest.fixture
def one_batch(train) -> int:
    """Bytes of the features of a 2-sample batch."""
    batch = train.__getitems__([0, 1])[0].batch
    return sum(batch[key].nbytes for key in ("middle_frame", "flow"))


def test_lent_segments_beyond_the_limit_are_let_go_and_their_slots_retired(train, one_batch,
                                                                          monkeypatch):
    pytest.importorskip("torch")
    from flowstore.reader import buffers
    from flowstore.reader.torch import SharedBufferPool

    pool = SharedBufferPool(max_lent_bytes=3 * one_batch)
    pool.sends = 1  # as if batches had left as they should: lending goes on
    monkeypatch.setattr(buffers, "BATCH_BUFFERS", pool)
    kept = _lend_unreturned(train, pool, 20)
    assert all(batch.slots for batch in kept)
    assert pool.held_bytes <= 4 * one_batch + 2 * 64  # the oldest were let go
    slots = [slot for batch in kept for slot in batch.slots.values()]
    assert len(set(slots)) == len(slots)  # no slot of a segment let go is given out again
    _assert_intact(kept, _expected(train))  # nor is any lent segment written over


def test_lending_stops_when_no_batch_leaves_as_lent(train, one_batch, monkeypatch):
    pytest.importorskip("torch")
    from flowstore.reader import buffers
    from flowstore.reader.torch import SharedBufferPool

    pool = SharedBufferPool()
    monkeypatch.setattr(buffers, "BATCH_BUFFERS", pool)
    kept = _lend_unreturned(train, pool, 20)
    lent = [bool(batch.slots) for batch in kept]
    assert lent == [True] * pool.UNSENT_LENDS + [False] * (20 - pool.UNSENT_LENDS)
    # every lent segment let go: the pool holds the segments of the kept unlent batches only
    assert pool.held_bytes <= (20 - pool.UNSENT_LENDS) * (one_batch + 2 * 64)
    _assert_intact(kept, _expected(train))


def test_a_repackaging_collate_gets_the_right_batches(train):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate

    def as_tuple(samples):
        batch = default_collate(samples)
        return batch["id"], batch["flow"], batch["label"]

    expected = _expected(train)
    kept = [batch for _ in range(3) for batch in _loader(train, collate_fn=as_tuple)]
    for ids, flow, labels in kept:
        assert isinstance(flow, torch.Tensor)
        for row, sample_id in enumerate(ids):
            np.testing.assert_array_equal(flow[row].numpy(), expected[sample_id]["flow"])
            assert int(labels[row]) == expected[sample_id]["label"]


def _channels_first_and_bfloat16(samples):
    from torch import bfloat16
    from torch.utils.data import default_collate

    batch = default_collate(samples)
    batch["flow"] = batch["flow"].permute(0, 1, 4, 2, 3)  # a view of the lent segment
    batch["label_bf16"] = batch["label"].to(bfloat16)  # small, and numpy has no bfloat16
    return batch


def _as_read(batch):
    return batch


def test_a_collate_gets_what_it_made_whatever_the_workers(train):
    """With workers, a collate's view of a lent feature (a permute, a slice) travelled as the
    segment's memory while the segment went back to the pool: 15 of 24 kept batches were
    written over by later ones. A batch kept as the split's numpy arrays arrived as tensors,
    and a small bfloat16 tensor hung the DataLoader (its worker could not make it numpy)."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    expected = _expected(train)
    kept = [batch for _ in range(3)
            for batch in _loader(train, collate_fn=_channels_first_and_bfloat16, timeout=120)]
    for batch in kept:
        assert batch["label_bf16"].dtype == torch.bfloat16
        for row, sample_id in enumerate(batch["id"]):
            np.testing.assert_array_equal(batch["flow"][row].permute(0, 2, 3, 1).numpy(),
                                          expected[sample_id]["flow"])
    for workers in (0, 2):
        loader = DataLoader(train, batch_size=None, collate_fn=_as_read, num_workers=workers,
                            sampler=BatchSampler(SequentialSampler(train), 2, False), timeout=0)
        batch = next(iter(loader))
        assert all(isinstance(batch[key], np.ndarray) for key in ("flow", "middle_frame")), \
            (workers, {key: type(value).__name__ for key, value in batch.items()})
        np.testing.assert_array_equal(batch["flow"][1], expected[batch["id"][1]]["flow"])


def test_a_lent_batch_copied_or_unpickled_in_its_worker_stays_lent(train, monkeypatch):
    pytest.importorskip("torch")
    import copy

    from flowstore.reader import buffers
    from flowstore.reader import torch as adapter

    pool = adapter.SharedBufferPool()
    monkeypatch.setattr(buffers, "BATCH_BUFFERS", pool)
    monkeypatch.setattr(adapter, "_BORROWED", [])
    batch = adapter.collate_batch_samples(train.__getitems__([0, 1]))
    shallow = copy.copy(batch)
    assert type(shallow) is adapter.LentBatch and shallow.slots == batch.slots
    for again in (pickle.loads(pickle.dumps(batch)), copy.deepcopy(batch)):
        assert type(again) is dict
        np.testing.assert_array_equal(again["flow"].numpy(), batch["flow"].numpy())
    del again, shallow
    assert adapter._BORROWED == []  # nothing recorded in the lending process
    assert all(pool.lent[slot] == 1 for slot in batch.slots.values())
    # Once a main process has the segments mapped, the batch only names them; unpickled here
    # the names are this pool's segments again.
    for segment in batch.segments.values():
        pool.mapped[segment.slot] = segment.number
    _, (values, *_) = batch.__reduce__()
    assert isinstance(values["flow"], adapter._Named)
    again = pickle.loads(pickle.dumps(batch))
    np.testing.assert_array_equal(again["flow"].numpy(), batch["flow"].numpy())
    assert again["flow"].data_ptr() == batch["flow"].data_ptr()


def test_a_named_segment_outside_the_main_process_is_an_error(train, monkeypatch):
    """A batch that names its worker's segments can only be read where they are mapped."""
    torch = pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_LENDERS", {})
    named = {"flow": adapter._Named(torch.float16, (2, 3)), "label": np.zeros(2, np.int64)}
    with pytest.raises(RuntimeError, match="process other than the DataLoader's"):
        adapter._received(named, ["label"], None, "elsewhere", {"flow": (0, 1, 0, False)}, -1)


def _batched_loader(split, *, seed: int = 0):
    """Whole batches as the split reads them (`split[positions]`): no collate, only torch's
    `default_convert`."""
    from torch import Generator
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    sampler = BatchSampler(RandomSampler(split, generator=Generator().manual_seed(seed)), 2,
                           drop_last=False)
    return DataLoader(split, batch_size=None, sampler=sampler, num_workers=2,
                      persistent_workers=True)


def test_whole_batches_from_workers_are_lent_too_and_kept_intact(train, monkeypatch):
    """`DataLoader(split, batch_size=None, sampler=BatchSampler(...))`: a worker's
    `split[positions]` reads into its segments, and torch sends them on, not copies of them."""
    torch = pytest.importorskip("torch")
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(adapter, "_BORROWED", [])
    expected = _expected(train)
    loader = _batched_loader(train, seed=2)
    kept = [batch for _ in range(3) for batch in loader]  # every batch of three epochs
    assert len(kept) == 3 * ((len(train) + 1) // 2)
    _assert_intact(kept, expected)
    assert all(isinstance(batch["flow"], torch.Tensor) and batch["label"].dtype == torch.int64
               for batch in kept)
    # Lent: the main process tracks each batch's two feature segments until it drops them.
    assert len(adapter._BORROWED) == 2 * len(kept)
    del kept
    segments, batches = _segments_lent(loader, 6, expected)
    assert batches >= 30 and len(segments) < batches  # reused: no new segment per batch


def test_a_lent_batch_sends_what_its_values_are(train, monkeypatch):
    """A value still over its segment (numpy or a tensor wrapping it) goes as the segment; one
    replaced by other memory goes as it is, and the main process tracks only the segments."""
    pytest.importorskip("torch")
    from torch.utils.data._utils.collate import default_convert

    from flowstore.reader import buffers
    from flowstore.reader import torch as adapter

    monkeypatch.setattr(buffers, "BATCH_BUFFERS", adapter.SharedBufferPool())
    batch = adapter.read_to_lend(train, [1, 0])
    assert isinstance(batch["flow"], np.ndarray) and set(batch.slots) == {"middle_frame", "flow"}
    converted = default_convert(batch)
    assert type(converted) is adapter.LentBatch and converted.slots == batch.slots
    converted["middle_frame"] = converted["middle_frame"].clone()  # other memory now
    _, (values, small, _, _, slots, _) = converted.__reduce__()
    assert set(slots) == {"flow"} and "label" in small
    assert values["flow"] is converted.segments["flow"][0]
    np.testing.assert_array_equal(values["flow"].numpy(), train[[1, 0]]["flow"])
    np.testing.assert_array_equal(np.asarray(values["middle_frame"]),
                                  train[[1, 0]]["middle_frame"])
    # The replaced feature's segment never reaches the main process, which would hand it back:
    # it is handed back here (it stayed lent, one segment more a batch, up to a GiB a worker).
    lent = {key: int(converted.lent[slot]) for key, slot in converted.slots.items()}
    assert lent == {"middle_frame": 0, "flow": 1}
    # A copy that sends it after all lends it again, and then no copy hands it back.
    original = adapter.read_to_lend(train, [0, 1])
    without = copy.copy(original)
    without["flow"] = without["flow"].copy()
    without.__reduce__()
    assert int(original.lent[original.slots["flow"]]) == 0
    original.__reduce__()
    assert int(original.lent[original.slots["flow"]]) == 1
    without.__reduce__()
    assert int(original.lent[original.slots["flow"]]) == 1
