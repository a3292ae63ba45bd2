"""Tiny, learnable stores for tests and benchmarks of the trainers.

Decoding videos and computing Farneback flow is the build's business and has its own tests; the
trainers only need stores with the right layout. These are written through flowstore's store
layer directly, in milliseconds, with a signal a model can pick up: each class has its own
bright square in the frame and its own flow direction.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flowstore.flow_encoding import QUANTIZATION, encode_flow
from flowstore.store import ArraySpec, create_store

TVHI_CLASSES = ("handShake", "highFive", "hug", "kiss")
#: Datasets whose stores hold images (`image`); any other name makes a video store.
IMAGE_DATASETS = ("stanford40", "imagefolder")
#: (dx, dy) per class, in pixels: class k moves in its own direction.
_DIRECTIONS = ((2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0))
#: The frame side and flow steps of a store a test trains a flow model on: 16 px and 2 steps,
#: not 32 and 4, the smallest a flow model trains on. Chosen when TensorFlow ran without its
#: oneDNN kernels on AVX2-only CPUs, where the filter gradient of the flow model's first Conv3D
#: cost 0.3-1.7 ms a batch voxel on small batches (2.7-3.5 s a training step at 32 px, 4 steps,
#: batch 2); `trainers` now turn oneDNN on (`trainers.backend.use_onednn_kernels`), where it
#: takes milliseconds, and the smaller stores stay as the cheaper ones.
TINY_FLOW = {"size": 16, "steps": 2}


def make_tiny_store(path: str | Path, *, dataset: str = "tvhi", size: int = 32, steps: int = 4,
                    per_class: Sequence[int] = (3, 1, 2), classes: Sequence[str] | None = None,
                    flow_dtype: str = "float16", flow_bound: float = 8.0,
                    not_done: Sequence[int] = (), failed: Sequence[int] = (), seed: int = 0,
                    arrays: Sequence[str] | None = None, segments: int | None = None) -> Path:
    """Write a small store of synthetic samples and return its path.

    Args:
        path: `*.zarr` or `*.h5`; the suffix picks the backend.
        dataset: the store's dataset name. "stanford40" and "imagefolder" stores hold
            `image`, any other a video store's middle_frame, frames and flow.
        size: frame side S.
        steps: flow steps T (any video dataset; an image store has none).
        per_class: samples per class in train, val and test.
        classes: class names; the dataset's (four for tvhi, three for a small stanford40).
        flow_dtype: "float16", "float32" or "uint8" (quantised with `flow_bound`).
        flow_bound: the uint8 flow's range [-bound, +bound] in pixels.
        not_done: store indices left unfinished (`done` false, pixels zero).
        failed: store indices left unfinished with a failure reason, as a build leaves a
            sample whose source it could not read.
        seed: seed of the noise.
        arrays: write only these of the layout's arrays (a store lacking some); all by default.
        segments: K, for a store as `--sampling segments --segments K --stack steps/K` writes
            it: `frames` holds K frames, `flow` K segments of steps/K flows; None: linspace.
    """
    path = Path(path)
    if classes is None:
        classes = (("applauding", "climbing", "jumping") if dataset in IMAGE_DATASETS
                   else TVHI_CLASSES)
    rng = np.random.default_rng(seed)
    ids, labels, splits = [], [], []
    for split, count in zip(("train", "val", "test"), per_class, strict=True):
        for label, name in enumerate(classes):
            for k in range(count):
                ids.append(f"{name}_{split}_{k:04d}")
                labels.append(label)
                splits.append(split)
    n = len(ids)

    if dataset not in IMAGE_DATASETS:
        params: dict[str, Any] = {"size": size, "steps": steps, "flow_dtype": flow_dtype,
                                  "farneback": {}}
        if segments is not None:
            if steps % segments:
                raise ValueError(f"steps {steps} is not a multiple of segments {segments}")
            params.update(sampling="segments", segments=segments, stack=steps // segments)
        if flow_dtype == "uint8":
            params.update(flow_bound=flow_bound, flow_quantization=QUANTIZATION)
        specs = [ArraySpec("middle_frame", (size, size, 3), "uint8"),
                 ArraySpec("frames", (segments or steps, size, size, 3), "uint8"),
                 ArraySpec("flow", (steps, size, size, 2), flow_dtype)]
    else:
        params = {"size": size}
        specs = [ArraySpec("image", (size, size, 3), "uint8")]
    if arrays is not None:
        specs = [spec for spec in specs if spec.name in arrays]
    written = {spec.name for spec in specs}

    fingerprint = hashlib.sha256(
        json.dumps([dataset, params, ids, seed], sort_keys=True).encode()).hexdigest()
    attrs = {"dataset": dataset, "classes": list(classes), "params": params,
             "fingerprint": fingerprint}
    store = create_store(path, attrs=attrs, specs=specs, num_samples=n,
                         columns={"id": np.array(ids), "label": np.array(labels, dtype=np.int64),
                                  "split": np.array(splits)})
    try:
        done = np.zeros(n, dtype=bool)
        unfinished = set(not_done) | set(failed)
        for i, label in enumerate(labels):
            if i in unfinished:
                continue
            image = _class_image(label, size, rng)
            sample = {"image": image, "middle_frame": image,
                      "frames": np.repeat(image[None], segments or steps, axis=0)}
            if "flow" in written:
                sample["flow"] = _class_flow(label, steps, size, rng, flow_dtype, flow_bound)
            for name in written:
                store.write(name, i, sample[name])
            done[i] = True
        store.write("done", slice(None), done)
        if failed:
            reasons = np.full(n, "", dtype=object)
            reasons[list(failed)] = "cannot decode the video (synthetic failure)"
            store.write_changed("failure", reasons, list(failed))
        store.flush()
    finally:
        store.close()
    return path


def _class_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    top, left = (label // 2 % 2) * half, (label % 2) * half
    image[top:top + half, left:left + half, label % 3] = 230
    return image


def _class_flow(label: int, steps: int, size: int, rng: np.random.Generator, dtype: str,
                bound: float) -> np.ndarray:
    dx, dy = _DIRECTIONS[label % len(_DIRECTIONS)]
    flow = rng.normal(0.0, 0.3, size=(steps, size, size, 2)).astype(np.float32)
    flow[..., 0] += dx
    flow[..., 1] += dy
    return encode_flow(flow, dtype, bound)


def write_untrained_run(model_name: str, samples: Any, recipe: Any, options: Any,
                        runs_dir: str | Path, *, bases: dict | None = None,
                        echo: Any = print) -> Any:
    """Stand in for `trainers.fit.train_model` (same arguments) where a test asks only which
    runs are trained, reused or passed over: a finished run directory whose `metrics.json`
    says what a trained one would of what it is (`trainers.fit.run_identity`), with no test
    score and a `model.keras` of a Keras file's members, empty (whole to `require_model_file`,
    which a reused run's model file must pass, but nothing to load), written in milliseconds,
    not a training's seconds."""
    import zipfile
    from datetime import datetime, timezone

    from trainers.fit import run_identity
    from trainers.runs import (METRICS_FILE, MODEL_FILE, MODEL_MEMBERS, RunWriter, read_run,
                               write_json)

    bases = bases or {}
    samples = samples.for_recipe(recipe)
    identity = run_identity(model_name, samples, recipe, options, bases, samples.done_samples())
    with RunWriter(runs_dir, model_name, samples.info.fingerprint) as writer:
        with zipfile.ZipFile(writer.work / MODEL_FILE, "w") as archive:
            for names in MODEL_MEMBERS:
                archive.writestr(names[0], b"")
        write_json(writer.work / METRICS_FILE, {
            **identity, "test": None,
            "created": datetime.now(timezone.utc).isoformat(timespec="microseconds")})
        return read_run(writer.publish())
