"""What every dataset module provides, and the registry that finds datasets by name.

Adding a dataset is one module with one `Dataset` subclass that sets `name`: it registers
itself, and `flowstore build NAME` finds it.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flowstore.errors import SourceLayoutError, UnknownDatasetError
from flowstore.manifest import Manifest
from flowstore.store.base import ArraySpec

_REGISTRY: dict[str, type["Dataset"]] = {}


class Dataset(abc.ABC):
    """One dataset: its source layout, classes, official split and per-sample extraction."""

    #: Name used on the command line and in the store's `dataset` attribute.
    name: ClassVar[str]
    #: The frozen parameter dataclass of this dataset's samples.
    params_type: ClassVar[type]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    @abc.abstractmethod
    def manifest(self, source: Path) -> Manifest:
        """The split manifest for a source folder (raises SourceLayoutError on a wrong layout)."""

    @abc.abstractmethod
    def source_file(self, source: Path, sample_id: str) -> Path:
        """The file a sample is extracted from."""

    def source_files(self, source: Path, manifest: Manifest) -> dict[str, int | None]:
        """Names and sizes (None when missing) of every file the store's content depends on."""
        sizes: dict[str, int | None] = {}
        for row in manifest.rows:
            path = self.source_file(source, row.id)
            sizes[str(path.relative_to(source))] = path.stat().st_size if path.is_file() else None
        return sizes

    @abc.abstractmethod
    def specs(self, params: Any) -> list[ArraySpec]:
        """The per-sample arrays this dataset writes."""

    @abc.abstractmethod
    def extract(self, path: Path, params: Any) -> dict[str, np.ndarray]:
        """Arrays of one sample, keyed like `specs` (raises SampleError on bad input)."""

    @staticmethod
    def check_source_folder(source: Path) -> None:
        """A source must be an existing, non-empty folder."""
        if not source.exists():
            raise SourceLayoutError(f"source folder does not exist: {str(source)!r}")
        if not source.is_dir():
            raise SourceLayoutError(f"source is not a folder: {str(source)!r}")
        if not any(source.iterdir()):
            raise SourceLayoutError(f"source folder is empty: {str(source)!r}")


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_dataset(name: str) -> Dataset:
    """The registered dataset called `name`; an unknown name lists the known ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None


def _load_builtin() -> None:
    import flowstore.datasets  # noqa: F401  (importing the package registers the built-ins)
