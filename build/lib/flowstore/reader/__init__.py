"""The public reader: any training loop (tf.data, PyTorch, Keras on any backend, JAX, numpy)
reads a store through it.

    import flowstore
    ds = flowstore.open("tvhi.zarr")              # or "s3://bucket/tvhi.zarr", "tvhi.h5"
    train = ds.split("train", features=("middle_frame", "flow"))
    train[0], train[[3, 1, 2]], len(train)        # numpy samples / batches, label and id
    train.to_tf_dataset(8, shuffle=True, augment=True)
    torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, num_workers=2)
    train.to_keras_dataset(8, shuffle=True)       # a keras.utils.PyDataset
    train.batches(8, shuffle=True, epoch=e)       # plain numpy batches

Each framework is imported only by its adapter module, when its method is called.
"""

from flowstore.reader.augment import (colour_jitter, compose, frame_views, horizontal_flip,
                                      random_crop, random_frame, random_resized_crop,
                                      random_segment, segment_views)
from flowstore.reader.buffers import TF_ALIGNMENT, aligned_empty
from flowstore.reader.dataset import ALL, Split, StoreDataset
from flowstore.reader.encoding import Encoding

open = StoreDataset.open  # noqa: A001 (flowstore.open mirrors zarr.open / h5py.File)

__all__ = ["ALL", "TF_ALIGNMENT", "Encoding", "Split", "StoreDataset", "aligned_empty", "compose",
           "colour_jitter", "frame_views", "horizontal_flip", "open", "random_crop",
           "random_frame", "random_resized_crop", "random_segment", "segment_views"]
