"""A synthetic TV-HI source in the real layout, whose class needs both appearance and motion.

Each clip shows a textured square over a textured background. The class is one of two colours
times one of two motion axes:

=========  ==========  ==========
class      colour      motion
=========  ==========  ==========
handShake  warm        horizontal
highFive   warm        vertical
hug        cool       horizontal
kiss       cool       vertical
=========  ==========  ==========

The two colours have the same grey level (the luminance texture is shared, only the chroma
differs), so optical flow, computed on grey frames, cannot see the colour; and one still frame
cannot see the motion axis. A frames-only or a flow-only model therefore tops out near 50%,
while a model that sees both can reach 100%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowstore.datasets.tvhi import CLASSES, format_readme, sample_id
from flowstore.errors import ParameterError
from flowstore.params import check_seed
from flowstore.synth.clips import check_clip_shape, check_clip_written, write_source
from flowstore.extraction._cv import cv2

#: Resolutions seen in the real clips (width, height).
TV_RESOLUTIONS = ((624, 352), (400, 288), (688, 384), (512, 288))
FPS = 25.0

# ITU-R BT.601 grey weights (what COLOR_RGB2GRAY uses); each colour is scaled to grey level 1.
_GREY = np.array([0.299, 0.587, 0.114])
_COLOURS = {"warm": np.array([1.6, 0.8, 0.35]), "cool": np.array([0.3, 0.9, 2.3])}
_CLASS_CUES = {
    "handShake": ("warm", "horizontal"),
    "highFive": ("warm", "vertical"),
    "hug": ("cool", "horizontal"),
    "kiss": ("cool", "vertical"),
}


@dataclass(frozen=True)
class SynthTVHIConfig:
    """How much synthetic data to write; every clip is determined by `seed` and its id."""

    videos_per_class: int = 50
    negatives: int = 10
    min_frames: int = 22
    max_frames: int = 120
    resolution: tuple[int, int] | None = None  # (width, height); None draws from TV_RESOLUTIONS
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
        # (odd clips go to set 1, even ones to set 2: one clip a class leaves set 2 empty,
        # a readme `build` refuses)
        if not 2 <= self.videos_per_class <= 9999:
            raise ParameterError(f"videos per class must be in 2..9999, got {self.videos_per_class}")
        if self.negatives < 0:
            raise ParameterError(f"negatives must be >= 0, got {self.negatives}")
        check_clip_shape(self.min_frames, self.max_frames, self.resolution)


def _colour(name: str, rng: np.random.Generator) -> np.ndarray:
    """An RGB colour of grey level exactly 1, jittered per clip."""
    colour = _COLOURS[name] * rng.uniform(0.9, 1.1, size=3)
    return colour / float(_GREY @ colour)


def _texture(rng: np.random.Generator, height: int, width: int, low: float, high: float) -> np.ndarray:
    """Smooth random luminance in [low, high]: coarse noise upsampled, so flow has structure."""
    coarse = rng.uniform(0.0, 1.0, size=(max(2, height // 6), max(2, width // 6)))
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    smooth = (smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-6)
    return low + (high - low) * smooth


def _bounce(start: float, velocity: float, t: int, span: float) -> float:
    """Position after t steps of constant velocity, reflected at 0 and `span`."""
    if span <= 0:
        return 0.0
    x = (start + velocity * t) % (2 * span)
    return x if x <= span else 2 * span - x


def render_clip(colour: str, motion: str, rng: np.random.Generator, n_frames: int,
                width: int, height: int) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames of one clip."""
    background = _texture(rng, height, width, 60, 200)
    background = np.repeat(background[..., None], 3, axis=2)
    side = int(rng.uniform(0.28, 0.4) * min(width, height))
    patch = _texture(rng, side, side, 25, 105)[..., None] * _colour(colour, rng)
    speed = rng.uniform(0.012, 0.022) * min(width, height) * rng.choice([-1.0, 1.0])
    x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
    vx, vy = {"horizontal": (speed, 0.0), "vertical": (0.0, speed),
              "diagonal": (speed * 0.7, speed * 0.7)}[motion]
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for t in range(n_frames):
        frame = background.copy()
        x = int(round(_bounce(x0, vx, t, width - side)))
        y = int(round(_bounce(y0, vy, t, height - side)))
        frame[y:y + side, x:x + side] = patch
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_avi(path: Path, frames_rgb: np.ndarray, fps: float = FPS) -> None:
    """XVID AVI, as most real TV-HI clips are; checked whole (`check_clip_written`: OpenCV's
    writer tells no write error)."""
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write XVID video {path}")
    try:
        for frame in frames_rgb:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    check_clip_written(path, len(frames_rgb))


def _clip_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, *name.encode()])


def _write_one(folder: Path, name: str, colour: str, motion: str, config: SynthTVHIConfig) -> None:
    rng = _clip_rng(config.seed, name)
    width, height = config.resolution or TV_RESOLUTIONS[rng.integers(len(TV_RESOLUTIONS))]
    n_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    write_avi(folder / f"{name}.avi", render_clip(colour, motion, rng, n_frames, width, height))


def write_synthetic_tvhi(folder: str | Path, config: SynthTVHIConfig = SynthTVHIConfig()) -> Path:
    """Write a synthetic TV-HI source into `folder` (created; must be empty or absent).

    Odd clip numbers go to set 1 (test) and even ones to set 2, listed in readme.txt as the real
    dataset does. Written into a temporary sibling and renamed, so a killed run leaves no
    half-written source.
    """
    numbers = range(1, config.videos_per_class + 1)

    def fill(staging: Path) -> None:
        for class_name in CLASSES:
            colour, motion = _CLASS_CUES[class_name]
            for number in numbers:
                _write_one(staging, sample_id(class_name, number), colour, motion, config)
        for number in range(1, config.negatives + 1):
            colour = ("warm", "cool")[number % 2]
            _write_one(staging, sample_id("negative", number), colour, "diagonal", config)
        sets = {1: {c: [i for i in numbers if i % 2] for c in CLASSES},
                2: {c: [i for i in numbers if not i % 2] for c in CLASSES}}
        (staging / "readme.txt").write_text(format_readme(sets))

    return write_source(folder, fill)
