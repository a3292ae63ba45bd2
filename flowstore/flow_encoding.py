"""How flow is stored: float16/float32 pixels, or uint8 quantized as MMAction2/denseflow do.

uint8: clip (dx, dy) to [-bound, bound] pixels and quantize linearly into 255 bins (0..254),
decoded to the bins' centres (mmcv's `quantize_flow`, as MMAction2 uses). Values beyond the
bound saturate (denseflow's default bound is 20 px). The bound is a parameter of the store
(`params.flow_bound`), so a reader maps back with `decode_flow(stored, params)`.
Pure numpy: readers (trainers, plain scripts) use it without OpenCV.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from flowstore.params import check_flow_bound


#: How uint8 flow is quantized now: 255 equal bins over [-bound, bound], decoded to the bin
#: centres, as mmcv's `quantize_flow` (MMAction2) does. Zero is a bin centre, so still pixels
#: decode to exactly 0. Stores written before this record (no `flow_quantization` in their
#: params) rounded to 256 levels 0..255; there 0 px decoded to +0.078 px (at +-20 px), a
#: bias on every still pixel that cost float16-trained two-stream models 3-14 points of test
#: accuracy on uint8 test flow (benchmarks/README.md, "uint8 vs float16 flow").
QUANTIZATION = "255-bins-centred"
LEVELS = 255


def encode_flow(flow: np.ndarray, dtype: str, bound: float) -> np.ndarray:
    """float32 flow in pixels to the stored encoding."""
    if dtype == "uint8":
        bins = np.floor((np.clip(flow, -bound, bound) + bound) * (LEVELS / (2.0 * bound)))
        return np.minimum(bins, LEVELS - 1).astype(np.uint8)
    return flow.astype(dtype)


def uint8_step_centre(params: Mapping[str, Any], array: str = "flow") -> tuple[float, float]:
    """(step, centre) such that pixels = (stored - centre) * step, for a uint8 store's params.

    A store declares how `array` is quantized in its params as `<array>_bound` and
    `<array>_quantization` (format 1: `flow_bound`, `flow_quantization`).
    Subtracting the centre first keeps 0 px exactly 0 and +-x exactly opposite in float32.
    """
    bound, quantization = f"{array}_bound", f"{array}_quantization"
    check_flow_bound(params[bound], bound)
    if params.get(quantization) == QUANTIZATION:
        return 2.0 * float(params[bound]) / LEVELS, (LEVELS - 1) / 2.0
    if quantization in params:
        raise ValueError(f"unknown uint8 flow quantization {params[quantization]!r}")
    # stores written before `flow_quantization` existed: 0..255 rounded
    return 2.0 * float(params[bound]) / 255.0, 127.5


def decode_flow(stored: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Stored flow back to float32 pixels, given the store's `params` attribute."""
    if params.get("flow_dtype") == "uint8":
        step, centre = uint8_step_centre(params)
        return (stored.astype(np.float32) - np.float32(centre)) * np.float32(step)
    return stored.astype(np.float32)
