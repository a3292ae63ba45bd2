"""PyTorch adapter: a split is a map-style dataset as it is; this module only spares torch's
default collate a copy.

`DataLoader(split, batch_size=8)` asks the split for a batch's positions at once
(`Split.__getitems__`), which reads them into one buffer per feature and hands back the rows.
torch's `default_collate` would then stack those rows into a new tensor: a second copy of every
byte, on torch's intra-op threads, which held the 0-worker DataLoader to half the ceiling per
core (`benchmarks/reader.py`). `register_collate` adds an entry to `default_collate_fn_map`
(torch's documented way to extend it) for `BatchSample`: when a collate gets every row of one
batch in order, the batch's buffers become the tensors (`torch.from_numpy`, no copy). Any other
list of samples (a custom sampler mixing reads, a subset of rows) is collated as before.

The result is what default collate makes of plain samples: features and `label` as tensors of
the same dtypes and shapes, `id` as a list of strings. In a worker process torch moves each
tensor into shared memory on the way to the main process, as it does a stacked one.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from flowstore.reader.dataset import ID, BatchSample


def collate_batch_samples(samples: list[BatchSample], *,
                          collate_fn_map: dict[Any, Callable] | None = None) -> Any:
    """The batch the samples were read in, as tensors, when they are all of its rows in order;
    otherwise default collate of the samples as plain dicts."""
    batch = samples[0].batch
    whole = len(samples) == len(batch[ID]) and all(
        sample.batch is batch and sample.row == row for row, sample in enumerate(samples))
    if not whole:
        return collate([dict(sample) for sample in samples], collate_fn_map=collate_fn_map)
    return {key: (list(value) if key == ID else torch.from_numpy(value))
            for key, value in batch.items()}


def register_collate() -> None:
    """Teach `default_collate` (and any collate built on `default_collate_fn_map`) about
    `BatchSample`; idempotent."""
    default_collate_fn_map.setdefault(BatchSample, collate_batch_samples)
