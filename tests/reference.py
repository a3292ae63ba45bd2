"""An independent, deliberately naive implementation of the extraction contract (DESIGN.md),
and of the one loss the tests check by hand.

It decodes every frame with `read()`, converts and resizes every one of them, and only then
picks what it needs: nothing shared with flowstore's optimised path, so agreement means
something.
"""

from __future__ import annotations

import cv2
import numpy as np


def farneback_of_the_report(gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, pyr_scale=0.5, levels=3, winsize=5,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def centre_square(rgb: np.ndarray) -> np.ndarray:
    """`--resize center-crop`'s square, cut by its own arithmetic: the central min(h, w) rows
    or columns (an odd leftover pixel goes to the end)."""
    height, width = rgb.shape[:2]
    if width > height:
        left = (width - height) // 2
        return rgb[:, left:left + height]
    top = (height - width) // 2
    return rgb[top:top + width]


def _square(rgb: np.ndarray, size: int, resize: str) -> np.ndarray:
    return cv2.resize(centre_square(rgb) if resize == "center-crop" else rgb, (size, size),
                      interpolation=cv2.INTER_AREA)


def reference_tvhi(path, size: int, steps: int, flow_dtype: str = "float16",
                   flow=farneback_of_the_report, resize: str = "stretch") -> dict[str, np.ndarray]:
    """`flow(gray_a, gray_b)` computes one pair's flow (the report's Farneback by default)."""
    capture = cv2.VideoCapture(str(path))
    rgb = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        rgb.append(_square(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size, resize))
    capture.release()
    n = len(rgb)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
    positions = np.round(np.linspace(0, n - 2, steps)).astype(int)
    flows = [flow(gray[t], gray[t + 1]) for t in positions]
    return {"middle_frame": rgb[n // 2], "frames": np.stack([rgb[t] for t in positions]),
            "flow": np.stack(flows).astype(flow_dtype)}


def reference_image(path, size: int, resize: str = "stretch") -> np.ndarray:
    """Independent decode + resize of a still image: cv2.imread, BGR to RGB, then INTER_AREA."""
    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return _square(rgb, size, resize)


def smoothed_cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float) -> float:
    """Mean cross-entropy of `logits` against integer `labels` smoothed by `smoothing`, in
    plain numpy: what a tuned recipe's compiled loss (`SmoothedSparseCrossentropy`) must give."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = np.full(logits.shape, smoothing / logits.shape[1])
    target[np.arange(len(labels)), labels] += 1 - smoothing
    return float(-(target * log_p).sum(axis=1).mean())
