"""OpenCV, imported once with the process-wide settings flowstore relies on, and the resize
that every extractor shares.

FFmpeg's and OpenCV's own log lines would otherwise flood stderr for every corrupt clip or
image (the failure is reported once, as the sample's reason; OpenCV's ERROR level still printed
an `[ERROR:0@0.9] ... imdecode_ ...` line for each undecodable image, so it is SILENT).
OpenCV's internal thread pool is turned off because parallelism comes from Dask workers: one
worker is one core, which keeps `--workers N` meaningful and avoids oversubscribing the machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from flowstore.errors import SampleError

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

import cv2  # noqa: E402

cv2.setNumThreads(1)

#: The OpenCV release this process extracts with. Releases differ in the bytes they extract
#: from the same clip (Farneback flow by up to 0.002 px between 4.8 and 5.1 on TV-HI, which
#: float16 keeps in 1-7% of its values), so a store records it and is only resumed with it.
OPENCV_VERSION: str = cv2.__version__

__all__ = ["OPENCV_VERSION", "cv2", "decoding", "resize_rgb"]


def resize_rgb(frame_bgr: np.ndarray, size: int, resize: str = "stretch") -> np.ndarray:
    """BGR frame to S x S RGB with INTER_AREA (resize first: channel order commutes with it).

    `resize` (`flowstore.params.RESIZES`): `stretch` resizes the whole frame; `center-crop`
    the largest centred square of it (an odd margin leaves its extra pixel at the end).
    """
    if resize == "center-crop":
        height, width = frame_bgr.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        frame_bgr = frame_bgr[top:top + side, left:left + side]
    elif resize != "stretch":
        raise ValueError(f"unknown resize {resize!r}")
    small = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


#: What OpenCV's errors say where an allocation failed (its own allocator; C++'s): under a
#: memory limit, 18 failures of a build blamed their clips ("OpenCV cannot decode", found by
#: review). Raised as a MemoryError, which the build says as the system's refusal.
OPENCV_OUT_OF_MEMORY = ("Insufficient memory", "bad_alloc")


@contextlib.contextmanager
def decoding(path: Path) -> Iterator[None]:
    """An OpenCV error while decoding `path` (or resizing what it decoded) is that file's fault.

    It becomes the sample's `SampleError`. OpenCV errors elsewhere (colour conversion and
    Farneback on frames already decoded and resized) are left alone: they mean a bug in
    flowstore, which the build reports as an internal error, not as a bad clip.
    """
    try:
        yield
    except cv2.error as exc:
        detail = " ".join(str(exc).split())
        if any(sign in detail for sign in OPENCV_OUT_OF_MEMORY):  # (no fault of the file's)
            raise MemoryError(f"OpenCV, decoding {path.name}: {detail}") from None
        raise SampleError(f"OpenCV cannot decode {path.name}: {detail}") from None
