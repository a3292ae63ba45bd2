"""OpenCV import with the process-wide settings flowstore relies on.

FFmpeg's own log lines would otherwise flood stderr for every corrupt clip (the failure is
reported once, as the sample's reason). OpenCV's internal thread pool is turned off because
parallelism comes from Dask workers: one worker is one core, which keeps `--workers N`
meaningful and avoids oversubscribing the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402

cv2.setNumThreads(1)

__all__ = ["cv2"]
