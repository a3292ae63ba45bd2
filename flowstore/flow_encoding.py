"""How flow is stored: float16/float32 pixels, or uint8 quantized as MMAction2/denseflow do.

uint8: clip (dx, dy) to [-bound, bound] pixels and map linearly to 0..255. Values beyond the
bound saturate (denseflow's default bound is 20 px). The bound is a parameter of the store
(`params.flow_bound`), so a reader maps back with `decode_flow(stored, params)`.
Pure numpy: readers (trainers, plain scripts) use it without OpenCV.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def encode_flow(flow: np.ndarray, dtype: str, bound: float) -> np.ndarray:
    """float32 flow in pixels to the stored encoding."""
    if dtype == "uint8":
        scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
        return np.rint(scaled).astype(np.uint8)
    return flow.astype(dtype)


def decode_flow(stored: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Stored flow back to float32 pixels, given the store's `params` attribute."""
    if params.get("flow_dtype") == "uint8":
        bound = float(params["flow_bound"])
        return stored.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)
    return stored.astype(np.float32)
