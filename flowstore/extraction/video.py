"""TV-HI extraction: one video file to its middle frame, T frames and T optical flows.

The contract (DESIGN.md, "Extraction contract"): decode every frame, n = frames actually
decoded; resize RGB to S x S with INTER_AREA; middle frame n // 2; flow positions
t_k = round(linspace(0, n - 2, T)); flow_k = flow(gray[t_k], gray[t_k + 1]) by the recorded
algorithm (Farneback by default; `flowstore.extraction.flow`).

Only the frames those positions need are converted and resized. n is unknown until the last
frame, so the container's frame count (often off by 1 or 2 on real clips) picks a superset of
frames to keep as decoded; once n is known only the frames it needs are resized. If the real n
still needs a frame that was skipped, a second decode pass fetches exactly the missing ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flowstore.errors import SampleError
from flowstore.extraction._cv import cv2, decoding, resize_rgb
from flowstore.extraction.flow import optical_flow
from flowstore.flow_encoding import encode_flow
from flowstore.params import VideoParams

#: How far the container's frame count may be from the decoded count and still need no second pass.
#: On the 300 TV-HI clips the count is exact for 215, off by one for 84 and by two for one clip:
#: a slack of 1 keeps (converts) 15 frames per clip beyond those needed and decodes one clip
#: twice; a slack of 3 kept 34 extra frames per clip (about 8 ms of colour conversion each clip).
HINT_SLACK = 1


@dataclass(frozen=True)
class VideoFeatures:
    """The arrays of one TV-HI sample."""

    middle_frame: np.ndarray  # (S, S, 3) uint8 RGB
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB at the flow positions
    flow: np.ndarray  # (T, S, S, 2) (dx, dy) in pixels of the resized frame, stored encoding
    n_frames: int


def flow_positions(n_frames: int, steps: int) -> np.ndarray:
    """First frame of each flow pair: ``round(linspace(0, n - 2, T))`` (numpy rounding)."""
    if n_frames < 2:
        raise ValueError(f"need at least 2 frames for optical flow, got {n_frames}")
    return np.round(np.linspace(0, n_frames - 2, steps)).astype(np.int64)


def frames_needed(n_frames: int, steps: int) -> set[int]:
    """Indices of every frame the sample uses: both frames of each pair and the middle one."""
    starts = flow_positions(n_frames, steps)
    return {int(i) for i in starts} | {int(i) + 1 for i in starts} | {n_frames // 2}


def _open(path: Path, decoder_threads: int) -> "cv2.VideoCapture":
    if not path.is_file():
        raise SampleError(f"video file is missing: {path.name}")
    if path.stat().st_size == 0:
        raise SampleError(f"video file is empty (0 bytes): {path.name}")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise SampleError(f"cannot read video ({exc.strerror}): {path.name}") from None
    # bytes: OpenCV's binding crashes on a str path that is not valid UTF-8. FFmpeg only: the
    # built-in MJPEG reader OpenCV falls back to prints raw bytes of a bad file to stderr.
    # The decoder thread count is a recorded parameter (VideoParams.decoder_threads): it changes
    # the decoded pixels of some clips. One thread by default: parallelism is one clip per Dask
    # worker (FFmpeg would otherwise start its own threads per capture, despite
    # cv2.setNumThreads(1)).
    capture = cv2.VideoCapture(os.fsencode(path), cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_N_THREADS, decoder_threads])
    if not capture.isOpened():
        raise SampleError(f"cannot open video (not a video, or an unsupported codec): {path.name}")
    return capture


def _decode(path: Path, choose: Callable[[int], set[int]],
            decoder_threads: int) -> tuple[int, dict[int, np.ndarray]]:
    """Decode every frame; keep (as decoded, BGR) the ones `choose(frame_count_hint)` picks.

    Returns (n frames decoded, {index: decoded BGR frame}).
    """
    capture = _open(path, decoder_threads)
    kept: dict[int, np.ndarray] = {}
    n = 0
    try:
        keep = choose(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        while capture.grab():
            if n in keep:
                ok, frame = capture.retrieve()
                if not ok:
                    break
                kept[n] = frame
            n += 1
    finally:
        capture.release()
    return n, kept


def _candidate_frames(hint: int, steps: int) -> set[int]:
    """Frames needed for any n within HINT_SLACK of the container's frame count."""
    wanted: set[int] = set()
    for n in range(max(2, hint - HINT_SLACK), hint + HINT_SLACK + 1):
        wanted |= frames_needed(n, steps)
    return wanted


def read_needed_frames(path: Path, size: int, steps: int,
                       decoder_threads: int) -> tuple[int, dict[int, np.ndarray]]:
    """(n decoded, {index: resized RGB frame}) holding at least every frame the sample needs."""
    with decoding(path):
        n, kept = _decode(path, lambda hint: _candidate_frames(hint, steps) if hint >= 2 else set(),
                          decoder_threads)
        if n < 2:
            raise SampleError(f"only {n} decodable frame(s) in {path.name}; need at least 2")
        needed = frames_needed(n, steps)
        missing = needed - kept.keys()
        if missing:
            n_again, extra = _decode(path, lambda _hint: missing, decoder_threads)
            if n_again != n or missing - extra.keys():
                raise SampleError(f"decoding {path.name} is not repeatable "
                                  f"({n} then {n_again} frames)")
            kept.update(extra)
        return n, {index: resize_rgb(kept[index], size) for index in sorted(needed)}


def extract_video(path: str | Path, params: VideoParams) -> VideoFeatures:
    """All arrays of one TV-HI sample, per the extraction contract.

    Raises:
        SampleError: the file is missing, empty, undecodable or has fewer than 2 frames.
    """
    path = Path(path)
    n, frames = read_needed_frames(path, params.size, params.steps, params.decoder_threads)
    starts = flow_positions(n, params.steps)
    flow = np.empty((len(starts), params.size, params.size, 2), params.flow_dtype)
    for k, t in enumerate(starts):  # each flow encoded while it is still in cache
        store_flow(optical_flow(frames[int(t)], frames[int(t) + 1], params.flow), flow[k], params)
    return VideoFeatures(
        middle_frame=frames[n // 2],
        frames=np.stack([frames[int(t)] for t in starts]),
        flow=flow,
        n_frames=n,
    )


def store_flow(flow: np.ndarray, out: np.ndarray, params: VideoParams) -> None:
    """Write one float32 flow field into `out` in the stored encoding (`out.dtype`).

    float16 goes through OpenCV's vectorized conversion: numpy's float32 -> float16 cast is
    scalar code, 4.4 ms per clip of 16 flows against OpenCV's 0.7 ms, with the same
    round-to-nearest-even result (tests compare the two bit for bit). Adding -0.0 is the exact
    identity in IEEE arithmetic (adding +0.0 would turn -0.0 into +0.0).
    """
    if out.dtype == np.float16:
        cv2.add(flow, -0.0, dst=out, dtype=cv2.CV_16F)
    else:
        out[...] = encode_flow(flow, params.flow_dtype, params.flow_bound)
