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

from flowstore.errors import SampleError, resource_exhaustion, short_of_memory

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


@contextlib.contextmanager
def decoding(path: Path) -> Iterator[None]:
    """An OpenCV error while decoding `path` (or resizing what it decoded) is that file's fault,
    unless memory ran out.

    It becomes the sample's `SampleError`. OpenCV errors elsewhere (colour conversion and
    Farneback on frames already decoded and resized) are left alone: they mean a bug in
    flowstore, which the build reports as an internal error, not as a bad clip (or, where
    OpenCV found no memory, as the system's refusal: `resource_exhaustion`).
    """
    try:
        yield
    except cv2.error as exc:
        detail = " ".join(str(exc).split())
        if resource_exhaustion(exc):  # (an allocation: no fault of the file's; a MemoryError
            # naming the file, which the build says as the system's refusal)
            raise MemoryError(f"OpenCV, decoding {path.name}: {detail}") from None
        raise SampleError(f"OpenCV cannot decode {path.name}: {detail}") from None
    except SampleError as exc:
        # FFmpeg's allocations fail without a word: a frame that does not decode, a clip that
        # ends early. Under a memory limit, 4 of 16 sound clips of a build were "damaged" or
        # "cut short" (found by review): where the process has no room left, the system's.
        if short_of_memory():
            raise MemoryError(f"decoding {path.name} stopped with no memory left ({exc})") \
                from None
        raise
