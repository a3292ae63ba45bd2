"""Datasets, one module each; importing this package registers the built-in ones."""

import importlib
import pkgutil

from flowstore.datasets.base import (Dataset, dataset_names, dataset_type, describe_dataset,
                                     get_dataset, option_names, parse_option_tokens)

# every module of this package is a dataset that registers itself: a new dataset is a new module
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Dataset", "dataset_names", "dataset_type", "describe_dataset", "get_dataset",
           "option_names", "parse_option_tokens"]
