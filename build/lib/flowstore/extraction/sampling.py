"""Which frames of a clip of n decoded frames a sample holds: pure index arithmetic, no OpenCV.

Both schemes give a `FrameSelection`: the first frame t of each flow pair (t, t + 1), in the
order the flows are stored; the frame indices stored in `frames`; and the `middle_frame` index.

`linspace` (the default; the report's, DESIGN.md "Extraction contract"), T = `steps`:
    flow pairs start at t_k = round(linspace(0, n - 2, T)) (numpy rounding), k = 0..T-1;
    `frames` (T, S, S, 3) holds frame t_k, the first frame of flow k; middle frame n // 2.
    A clip shorter than T + 1 frames repeats pairs (n = 2: every pair is (0, 1)).

`segments` (TSN), K = `segments`, L = `stack`, T = K x L:
    segment k covers the time [k n / K, (k + 1) n / K) of the clip, frame i showing from i to
    i + 1; its centre frame is the one showing at its middle, c_k = floor((2k + 1) n / 2K).
    Its L flows are the consecutive pairs (s_k + j, s_k + j + 1), j = 0..L-1, of a window
    centred on c_k: s_k = c_k - L // 2, then shifted to lie inside the clip,
    s_k = min(max(c_k - L // 2, 0), max(n - 1 - L, 0)). A clip of fewer than L + 1 frames cannot
    hold the window: its pairs past the last one repeat the last pair (n - 2, n - 1), as
    linspace repeats pairs. `flow` (K*L, S, S, 2) is segment-major: flow[k*L + j] is flow j of
    segment k. `frames` (K, S, S, 3) holds the centres c_k. The middle frame is n // 2, as in
    linspace, so a frames model sees the same input whatever the sampling; for odd K it is
    exactly the centre of the middle segment, c_{(K-1)/2} = n // 2 (for even K there is no
    middle segment and n // 2 is the boundary of the two middle ones).

Why centred and not starting at c_k (the two-stream paper stacks the L flows after its frame):
the stored frame c_k then sits in the middle of the motion stacked for it, and each window sits
in the middle of its segment, as MMAction2's TSN test-time sampling places its clips (it divides
the n - L possible window starts into K shares rather than the n frames, so its windows lie a
frame or a few apart from these: for n = 90, K = 3, L = 5 its windows start at 14, 42, 70 and
these at 13, 43, 73). Shifting a window that would run off either end, instead of clamping each
pair, keeps L distinct consecutive flows whenever the clip has L + 1 frames. A window stays
inside its own segment whenever the segments are at least L + 2 frames long (n >= K (L + 2));
in shorter ones it may reach a frame into its neighbour's, or, past either end, be shifted into
it. Both schemes need n >= 2 (the extraction fails a shorter clip with its reason); neither
fails a short clip otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowstore.params import VideoParams

__all__ = ["FrameSelection", "flow_positions", "frame_count", "segment_centres",
           "segment_flow_positions", "select_frames"]


@dataclass(frozen=True)
class FrameSelection:
    """The frame indices one sample uses, for a clip of `n_frames` decoded frames."""

    flow_starts: np.ndarray  # (T,) int64: flow k is the pair (flow_starts[k], flow_starts[k] + 1)
    frames: np.ndarray  # int64 indices of the frames stored in `frames`, in stored order
    middle: int  # index of `middle_frame`

    @property
    def needed(self) -> set[int]:
        """Every frame the sample reads: both frames of each pair, the frames, the middle."""
        starts = {int(t) for t in self.flow_starts}
        return starts | {t + 1 for t in starts} | {int(i) for i in self.frames} | {self.middle}


def _check_length(n_frames: int) -> None:
    if n_frames < 2:
        raise ValueError(f"need at least 2 frames for optical flow, got {n_frames}")


def flow_positions(n_frames: int, steps: int) -> np.ndarray:
    """First frame of each linspace flow pair: ``round(linspace(0, n - 2, T))`` (numpy rounding)."""
    _check_length(n_frames)
    return np.round(np.linspace(0, n_frames - 2, steps)).astype(np.int64)


def segment_centres(n_frames: int, segments: int) -> np.ndarray:
    """c_k = floor((2k + 1) n / 2K): the centre frame of each of K equal segments."""
    k = np.arange(segments, dtype=np.int64)
    return (2 * k + 1) * n_frames // (2 * segments)


def segment_flow_positions(n_frames: int, segments: int, stack: int) -> np.ndarray:
    """First frame of each of the K x L flow pairs, segment-major (see the module docstring)."""
    _check_length(n_frames)
    centres = segment_centres(n_frames, segments)
    first = np.clip(centres - stack // 2, 0, max(n_frames - 1 - stack, 0))
    starts = first[:, None] + np.arange(stack, dtype=np.int64)[None, :]
    return np.minimum(starts, n_frames - 2).reshape(-1)


def frame_count(params: VideoParams) -> int:
    """Frames a sample stores in `frames`: T (one per flow) for linspace, K for segments."""
    return params.segments if params.sampling == "segments" else params.steps


def select_frames(n_frames: int, params: VideoParams) -> FrameSelection:
    """The frames a sample of `params` uses from a clip of `n_frames` decoded frames.

    Raises:
        ValueError: fewer than 2 frames (no flow pair).
    """
    if params.sampling == "segments":
        starts = segment_flow_positions(n_frames, params.segments, params.stack)
        frames = segment_centres(n_frames, params.segments)
    else:
        starts = flow_positions(n_frames, params.steps)
        frames = starts
    return FrameSelection(flow_starts=starts, frames=frames, middle=n_frames // 2)
