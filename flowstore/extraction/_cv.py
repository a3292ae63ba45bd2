"""OpenCV, imported once with the process-wide settings flowstore relies on, and the resize
that every extractor shares.

FFmpeg's own log lines would otherwise flood stderr for every corrupt clip (the failure is
reported once, as the sample's reason). OpenCV's internal thread pool is turned off because
parallelism comes from Dask workers: one worker is one core, which keeps `--workers N`
meaningful and avoids oversubscribing the machine.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402

cv2.setNumThreads(1)

__all__ = ["cv2", "resize_rgb"]


def resize_rgb(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR frame to S x S RGB with INTER_AREA (resize first: channel order commutes with it)."""
    small = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)

