"""flowstore: an offline-first feature store for action recognition datasets."""

__version__ = "0.1.0"


def open(path_or_url, /):  # noqa: A001 (as zarr.open: the reader's front door)
    """Open a store read-only for training: `flowstore.reader.StoreDataset.open`."""
    from flowstore.reader import StoreDataset

    return StoreDataset.open(path_or_url)
