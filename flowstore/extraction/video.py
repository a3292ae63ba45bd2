"""TV-HI extraction: one video file to its middle frame, its frames and T optical flows.

The contract (DESIGN.md, "Extraction contract"): decode every frame, n = frames actually
decoded; resize RGB to S x S with INTER_AREA; middle frame n // 2; flow pairs and frames where
the sampling puts them (`flowstore.extraction.sampling`; by default t_k = round(linspace(0,
n - 2, T))); flow_k = flow(gray[t_k], gray[t_k + 1]) by the recorded algorithm (Farneback by
default; `flowstore.extraction.flow`).

Only the frames those positions might need are converted and resized. n is unknown until the
last frame, so the container's frame count (often off by 1 or 2 on real clips) picks a superset
of frames to keep. What a worker holds of them at the source's resolution is capped at
FULL_RESOLUTION_BUDGET: small sources keep them as decoded and resize only those n needs; larger
ones resize each the moment it is decoded, holding one full-resolution frame at a time (a 4K
clip once kept ~48 of them, 1.2 GB, until its last frame). Either way a worker's memory follows
the output size S, not the source's resolution, and the bytes are the same: resizing is per
frame. If the real n still needs a frame that was skipped, a second decode pass fetches exactly
the missing ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flowstore.errors import SampleError, resource_exhaustion
from flowstore.extraction import not_a_file
from flowstore.extraction._cv import cv2, decoding, resize_rgb
from flowstore.extraction.avi import avi_drop_frames
from flowstore.extraction.flow import optical_flow
from flowstore.extraction.mp4 import mp4_structure
from flowstore.extraction.sampling import flow_positions, select_frames  # noqa: F401 (re-export)
from flowstore.flow_encoding import encode_flow
from flowstore.params import VideoParams

#: How far the container's frame count may be from the decoded count and still need no second pass.
#: On the 300 TV-HI clips the count is exact for 215, off by one for 84 and by two for one clip:
#: a slack of 1 keeps (converts) 15 frames per clip beyond those needed and decodes one clip
#: twice; a slack of 3 kept 34 extra frames per clip (about 8 ms of colour conversion each clip).
HINT_SLACK = 1

#: Bytes of full-resolution frames one decode pass may hold. While the frames a clip might need
#: (about 3T of them at HINT_SLACK 1) fit in it at the source's resolution, they are kept as
#: decoded and only those the real n needs are resized: TV-HI's 48 frames of up to 688x384 take
#: 38 MB, and resizing all of them as decoded cost 6-9 ms of CPU a clip (+3-4%). Beyond it (T=16:
#: 480p and up) each frame is resized as soon as it is decoded, so a worker never holds more
#: than this plus one source frame, whatever the source's resolution.
FULL_RESOLUTION_BUDGET = 48 << 20

#: The first box of a file of the MP4 family (MP4, MOV, M4V, 3GP...): `ftyp`, or in older
#: QuickTime files one of these. With an AVI (`RIFF....AVI `), these containers give their frame
#: count from their index (AVI's header, the sample table), so that a clip decoding well short
#: of it is cut short or damaged, not miscounted. Matroska and WebM have no count: FFmpeg
#: estimates one from the duration and a nominal frame rate, which a variable-rate clip
#: (Kinetics' YouTube cuts) can miss by far, so those are not held to it. The container is told
#: by its first bytes, as FFmpeg tells it, not by the file's name: a `.3gp`, or an MP4 named
#: `.mkv`, cut short was stored as its first part where the same bytes named `.mp4` were refused.
MP4_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
#: Frames (and that many frames' time) a clip of an indexed container may decode short of its
#: declared count (and duration) before it is refused as cut short: the larger of these (the
#: 300 TV-HI clips decode between 2 below and 1 above it; a file cut at half its bytes decodes
#: about a third of its frames).
CUT_SHORT_FRAMES, CUT_SHORT_SHARE = 5, 0.10
#: Grabs tried past the first that fails. FFmpeg's reader fails a frame that does not decode as
#: it fails the end of the file: a clip damaged in its middle decoded as its first part, stored
#: as a good sample where that part was within the cut-short tolerance above, and refused as
#: "cut short" where its very first frame did not decode though all after it do (found by
#: review). Where a later frame decodes, the clip is refused as damaged: skipping the bad frame
#: would join two frames that are not consecutive in one flow step. Past the real end each grab
#: fails at once.
DAMAGE_PROBES = 3


@dataclass(frozen=True)
class VideoFeatures:
    """The arrays of one TV-HI sample."""

    middle_frame: np.ndarray  # (S, S, 3) uint8 RGB
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB at the flow positions; (K, ...) for segments
    flow: np.ndarray  # (T, S, S, 2) (dx, dy) in pixels of the resized frame, stored encoding
    n_frames: int


def frames_needed(n_frames: int, params: VideoParams) -> set[int]:
    """Indices of every frame the sample uses: both frames of each pair, the frames it stores
    and the middle one."""
    return select_frames(n_frames, params).needed


def _open(path: Path, decoder_threads: int) -> "cv2.VideoCapture":
    reason = not_a_file(path, "video")
    if reason is not None:
        raise SampleError(reason)
    if path.stat().st_size == 0:
        raise SampleError(f"video file is empty (0 bytes): {path.name}")
    try:
        path.open("rb").close()
    except OSError as exc:
        if resource_exhaustion(exc):  # (no descriptor left: no fault of the file's)
            raise
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
        # FFmpeg says no more than that it failed: where the process has no file descriptor
        # left (`ulimit -n`, many workers), the clip was blamed, "not a video" (found by review)
        os.close(os.open(os.devnull, os.O_RDONLY))  # (raises EMFILE then)
        raise SampleError(f"cannot open video (not a video, or an unsupported codec): {path.name}")
    return capture


def decode_resized(path: Path, choose: Callable[[int], set[int]], size: int, resize: str,
                   decoder_threads: int, needed: Callable[[int], set[int]] | None = None,
                   ) -> tuple[int, dict[int, np.ndarray]]:
    """Decode every frame; return the ones `choose(hint)` picks, resized to S x S RGB (as
    `resize` says: `resize_rgb`).

    `hint` is the container's frame count (0 if unknown; it may be wrong). If the picked frames
    fit FULL_RESOLUTION_BUDGET at the source's resolution they are held as decoded and, once the
    pass has counted n, only those in `needed(n)` (all of them if `needed` is None) are resized.
    Otherwise each is retrieved into one reused full-resolution buffer and resized at once.

    Returns (n frames decoded, {index: (S, S, 3) uint8 RGB frame}).
    """
    capture = _open(path, decoder_threads)
    resized: dict[int, np.ndarray] = {}
    held: dict[int, np.ndarray] = {}  # as decoded (BGR, full resolution), within the budget
    decoded = None  # the reused full-resolution buffer when nothing is held
    hold = None  # decided at the first picked frame, when the resolution is known
    n = 0
    last_ms = 0.0  # the timestamp of the last frame decoded
    try:
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        keep = choose(declared)
        while capture.grab():
            last_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            if n in keep:
                ok, decoded = capture.retrieve(None if hold else decoded)
                if not ok:
                    break
                if hold is None:
                    hold = len(keep) * decoded.nbytes <= FULL_RESOLUTION_BUDGET
                if hold:
                    held[n] = decoded
                else:
                    resized[n] = resize_rgb(decoded, size, resize)
            n += 1
        if any(capture.grab() for _ in range(DAMAGE_PROBES)):
            raise SampleError(f"frame {n} of {path.name} does not decode, and a later one does: "
                              f"the file is damaged")
    finally:
        capture.release()
    _check_not_cut_short(path, n, declared, fps, last_ms)
    wanted = held.keys() if needed is None else held.keys() & needed(n)
    resized.update((index, resize_rgb(held[index], size, resize)) for index in sorted(wanted))
    return n, resized


def indexed_container(path: Path) -> str | None:
    """"avi" or "mp4" (the MP4 family, `MP4_FIRST_BOXES`) by the file's first bytes: the
    containers whose declared frame count is counted, not estimated; None for any other."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return "mp4" if head[4:8] in MP4_FIRST_BOXES else None


def _check_not_cut_short(path: Path, n: int, declared: int, fps: float,
                         last_ms: float) -> None:
    """Refuse a clip that decodes far fewer frames than its container's index declares and
    ends far before its declared duration: a truncated download or a damaged stream ends
    decoding early (or a frame fails to retrieve), and taken as the clip it would store flows
    and a middle frame of its first part only, as a good sample. Both must hold: an intact AVI
    may declare frames it does not decode (zero-size "drop frame" chunks, which some encoders
    write to keep a constant rate), and its count is taken less those its index lists
    (`flowstore.extraction.avi`: a clip may end on them); without that index, its frames still
    run to its end. Without a frame rate the time cannot be told, and the clip is taken as it
    decodes.

    An MP4-family file says more in its boxes (`flowstore.extraction.mp4`): one whose media
    box runs past its end is cut short whatever it decodes; and where its video track's edit
    list does not show all of its media (frames before a cut made without re-encoding, `ffmpeg
    -ss ... -c copy`, or after a trim of its end, or a part cut out of its middle), the declared
    count includes them: the clip is held to the count less them."""
    container = indexed_container(path)
    if container == "avi":  # (its drop frames counted, decoded as none)
        declared -= avi_drop_frames(path)
    if container == "mp4":
        structure = mp4_structure(path)
        if structure.cut_short:
            raise SampleError(f"{path.name} ends inside its {structure.cut_short} box: the file "
                              f"is cut short or damaged")
        if fps > 0:
            declared -= round(structure.video_hidden_s * fps)
    if declared < 2 or fps <= 0 or container is None:
        return
    frame_ms = 1000.0 / fps
    declared_ms = declared * frame_ms
    decoded_ms = last_ms + frame_ms if n else 0.0  # through the last frame's duration

    def far_short(got: float, whole: float, unit: float) -> bool:
        return whole - got > max(CUT_SHORT_FRAMES * unit, CUT_SHORT_SHARE * whole)

    if far_short(n, declared, 1.0) and far_short(decoded_ms, declared_ms, frame_ms):
        raise SampleError(f"{path.name} decodes {n} of the {declared} frames its container "
                          f"declares, {decoded_ms / 1000:.2f} s of {declared_ms / 1000:.2f} s: "
                          f"the file is cut short or damaged")


def _candidate_frames(hint: int, params: VideoParams) -> set[int]:
    """Frames needed for any n within HINT_SLACK of the container's frame count."""
    wanted: set[int] = set()
    for n in range(max(2, hint - HINT_SLACK), hint + HINT_SLACK + 1):
        wanted |= frames_needed(n, params)
    return wanted


def read_needed_frames(path: Path, params: VideoParams) -> tuple[int, dict[int, np.ndarray]]:
    """(n decoded, {index: resized RGB frame}) holding at least every frame the sample needs."""
    size, resize, decoder_threads = params.size, params.resize, params.decoder_threads
    with decoding(path):
        n, kept = decode_resized(
            path, lambda hint: _candidate_frames(hint, params) if hint >= 2 else set(), size,
            resize, decoder_threads,
            needed=lambda n: frames_needed(n, params) if n >= 2 else set())
        if n < 2:
            raise SampleError(f"only {n} decodable frame(s) in {path.name}; need at least 2")
        needed = frames_needed(n, params)
        missing = needed - kept.keys()
        if missing:
            n_again, extra = decode_resized(path, lambda _hint: missing, size, resize,
                                            decoder_threads)
            if n_again != n or missing - extra.keys():
                raise SampleError(f"decoding {path.name} is not repeatable "
                                  f"({n} then {n_again} frames)")
            kept.update(extra)
        return n, {index: kept[index] for index in sorted(needed)}


def extract_video(path: str | Path, params: VideoParams) -> VideoFeatures:
    """All arrays of one TV-HI sample, per the extraction contract.

    Raises:
        SampleError: the file is missing, empty, undecodable, has fewer than 2 frames or
            decodes far fewer than its container declares (cut short).
    """
    path = Path(path)
    n, frames = read_needed_frames(path, params)
    chosen = select_frames(n, params)
    starts = chosen.flow_starts
    flow = np.empty((len(starts), params.size, params.size, 2), params.flow_dtype)
    for k, t in enumerate(starts):  # each flow encoded while it is still in cache
        store_flow(optical_flow(frames[int(t)], frames[int(t) + 1], params.flow), flow[k], params)
    return VideoFeatures(
        middle_frame=frames[chosen.middle],
        frames=np.stack([frames[int(t)] for t in chosen.frames]),
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
