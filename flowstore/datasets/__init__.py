"""Datasets, one module each; importing this package registers the built-in ones."""

from flowstore.datasets import stanford40, tvhi  # noqa: F401
from flowstore.datasets.base import Dataset, dataset_names, get_dataset

__all__ = ["Dataset", "dataset_names", "get_dataset"]
