"""`flowstore verify`: re-read every sample, compare with its recorded checksum, and repair.

A sample is reported when its `done` flag is set but its bytes no longer give the checksum
recorded when it was written (a chunk edited, truncated or deleted by hand), or when a chunk
cannot be read at all. `repair` re-extracts exactly those samples from the source, through the
normal build (same parameters, same writer lock, same guarantees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flowstore.build import BuildConfig, BuildResult, build
from flowstore.datasets import get_dataset
from flowstore.params import from_dict
from flowstore.store import open_store
from flowstore.store.checksum import matches

COLUMNS = ("id", "label", "split", "done", "checksum")


@dataclass
class VerifyResult:
    store: Path | str
    checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(path: str | Path, *, progress: bool = False) -> VerifyResult:
    """Check every sample marked done against its checksum. Opens the store read-only."""
    from tqdm import tqdm

    result = VerifyResult(store=path)
    with open_store(path, "r") as store:
        _check_dataset_arrays(store, path)
        ids = store.read("id")
        done = store.read("done").astype(bool)
        checksums = store.read("checksum")
        features = [name for name in store.array_names() if name not in COLUMNS]
        for index in tqdm(range(len(ids)), disable=not progress, unit="sample", desc="verify"):
            if not done[index]:
                continue
            result.checked += 1
            if not checksums[index]:
                result.problems[ids[index]] = "marked done but has no checksum"
                continue
            try:
                arrays = {name: store.read(name, index) for name in features}
            except Exception as exc:  # noqa: BLE001  (any read failure is this sample's problem)
                result.problems[ids[index]] = f"unreadable: {type(exc).__name__}: {exc}"
                continue
            try:
                if not matches(arrays, checksums[index]):
                    result.problems[ids[index]] = "bytes changed since written (checksum mismatch)"
            except ValueError as exc:
                result.problems[ids[index]] = str(exc)
    return result


def _check_dataset_arrays(store, path: str | Path) -> None:
    """A store whose arrays are not those of its own dataset cannot be verified sample by sample."""
    from flowstore.errors import FlowstoreError, StoreError

    attrs = store.attrs
    try:
        dataset = get_dataset(attrs.get("dataset"))
        params = from_dict(dataset.params_type, attrs.get("params", {}))
    except (FlowstoreError, TypeError) as exc:
        raise StoreError(f"store {str(path)!r} describes itself wrongly: {exc}") from None
    expected = {spec.name for spec in dataset.specs(params)}
    found = set(store.array_names()) - set(COLUMNS)
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise StoreError(f"store {str(path)!r} says dataset {dataset.name!r} but "
                         + ("lacks array(s) " + ", ".join(missing) if missing else "")
                         + (" and " if missing and extra else "")
                         + ("has array(s) " + ", ".join(extra) if extra else "")
                         + " of another dataset" * bool(extra))


def repair(path: str | Path, source: str | Path, samples: list[str], *,
           workers: int | None = None, progress: bool = False,
           fsync: bool = False) -> BuildResult:
    """Re-extract `samples` from `source` into the store, with the store's own parameters
    (`fsync`: as `flowstore build --fsync`)."""
    with open_store(path, "r") as store:
        attrs = store.attrs
    dataset = get_dataset(attrs["dataset"])
    params = from_dict(dataset.params_type, attrs["params"])
    return build(BuildConfig(dataset=dataset.name, source=Path(source), store=path,
                             params=params, redo=tuple(samples), progress=progress, fsync=fsync,
                             **({"workers": workers} if workers is not None else {})))
