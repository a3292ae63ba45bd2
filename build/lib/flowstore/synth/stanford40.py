"""A synthetic Stanford-40 source in the real layout, whose class is visible in every image.

Each image is a noisy grey background with one coloured shape on it, at a random place, size
and angle. The class fixes the pair (colour, shape): class k has colour ``k % 8`` and shape
``k % 5`` (8 x 5 = 40 distinct pairs, and any first few classes already differ in both).
Telling the 40 classes apart thus needs colour and shape together, which a small CNN learns.

The layout is the real one (see `flowstore.datasets.stanford40`): ``JPEGImages/{action}_
{number:03d}.jpg`` for numbers 1..train+test of each class, and ``ImageSplits/`` with
actions.txt (tab-padded columns, header line), train.txt and test.txt (the per-class lists
concatenated in alphabetical class order) and the per-class ``{action}_train.txt`` /
``{action}_test.txt`` (numbers in random order, as in the real files). Which numbers of a class
are train or test is drawn at random too. LF line endings, like the real files.

Defaults: all 40 real action names, 10 train + 10 test images per class (800 images; the real
dataset has 100 train and 85 to 196 test per class), sides of 200 to 500 pixels. That keeps
``flowstore build stanford40 --synthetic`` to seconds; `--train-per-class 100` gives the real
dataset's 4000 / 3600 / 400 split.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowstore.datasets.stanford40 import (ACTIONS, ACTIONS_FILE, IMAGE_SUFFIX, IMAGES_DIR,
                                           SPLITS_DIR, split_file_name)
from flowstore.errors import ParameterError
from flowstore.params import check_seed
from flowstore.synth.clips import write_source
from flowstore.extraction._cv import cv2

#: Object colours (RGB), chosen far apart from each other and from the grey background.
COLOURS = (
    (225, 30, 30), (30, 180, 50), (40, 70, 230), (235, 215, 30),
    (210, 40, 210), (30, 205, 215), (15, 15, 15), (250, 250, 250),
)
SHAPES = ("disc", "square", "triangle", "ring", "cross")
JPEG_QUALITY = 90
#: actions.txt pads its first column with tabs (8 columns wide) up to this column.
_ACTIONS_COLUMN = 32


@dataclass(frozen=True)
class SynthStanford40Config:
    """How much synthetic data to write; every image is determined by `seed` and its id."""

    classes: int = 40
    train_per_class: int = 10
    test_per_class: int = 10
    min_side: int = 200
    max_side: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if not 1 <= self.classes <= len(ACTIONS):
            raise ParameterError(f"classes must be in 1..{len(ACTIONS)}, got {self.classes}")
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ParameterError(f"train and test images per class must be >= 1, got "
                                 f"{self.train_per_class} and {self.test_per_class}")
        if self.train_per_class + self.test_per_class > 999:
            raise ParameterError(f"train + test images per class must be at most 999 (numbers "
                                 f"have 3 digits), got {self.train_per_class + self.test_per_class}")
        if not 32 <= self.min_side <= self.max_side <= 4096:
            raise ParameterError(f"image sides must satisfy 32 <= min <= max <= 4096, got "
                                 f"{self.min_side}..{self.max_side}")


def class_cue(class_index: int) -> tuple[tuple[int, int, int], str]:
    """The (RGB colour, shape) that marks class `class_index`; distinct for 0..39."""
    return COLOURS[class_index % len(COLOURS)], SHAPES[class_index % len(SHAPES)]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth grey-ish clutter (coarse noise upsampled, slightly tinted) as float RGB."""
    coarse = rng.uniform(70, 190, size=(max(2, height // 24), max(2, width // 24), 1))
    tint = rng.uniform(-12, 12, size=(1, 1, 3))
    coarse = coarse + tint + rng.uniform(-10, 10, size=coarse.shape[:2] + (3,))
    return cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def _polygon(centre: np.ndarray, radius: float, angle: float, points: np.ndarray) -> np.ndarray:
    """`points` (unit-radius outline) scaled, rotated and moved to `centre`, as int32 pixels."""
    c, s = np.cos(angle), np.sin(angle)
    rotated = points @ np.array([[c, s], [-s, c]])
    return np.round(centre + radius * rotated).astype(np.int32)


_UNIT_SQUARE = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75
_UNIT_TRIANGLE = np.array([[np.cos(a), np.sin(a)] for a in np.radians([-90, 30, 150])])
_ARM = 0.3
_UNIT_CROSS = np.array([
    [-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM], [_ARM, 1],
    [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM]])


def _draw(canvas: np.ndarray, shape: str, colour: np.ndarray, centre: np.ndarray,
          radius: float, angle: float) -> None:
    colour_tuple = tuple(float(v) for v in colour)
    if shape in ("disc", "ring"):
        thickness = -1 if shape == "disc" else max(2, int(round(radius * 0.35)))
        r = radius if shape == "disc" else radius - thickness / 2
        cv2.circle(canvas, tuple(int(v) for v in np.round(centre)), int(round(r)), colour_tuple,
                   thickness, cv2.LINE_AA)
        return
    outline = {"square": _UNIT_SQUARE, "triangle": _UNIT_TRIANGLE, "cross": _UNIT_CROSS}[shape]
    cv2.fillPoly(canvas, [_polygon(centre, radius, angle, outline)], colour_tuple, cv2.LINE_AA)


def render_image(class_index: int, rng: np.random.Generator, width: int,
                 height: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of one sample of class `class_index`."""
    colour, shape = class_cue(class_index)
    canvas = _background(rng, height, width)
    radius = rng.uniform(0.16, 0.3) * min(width, height)
    centre = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
    jitter = rng.uniform(-18, 18, size=3)
    _draw(canvas, shape, np.clip(np.array(colour) + jitter, 0, 255), centre, radius,
          rng.uniform(0, 2 * np.pi))
    canvas += 36.0 * rng.random(size=canvas.shape, dtype=np.float32) - 18.0  # pixel noise, sd 10
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def write_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(IMAGE_SUFFIX, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"OpenCV cannot encode JPEG {path}")
    path.write_bytes(encoded.tobytes())


def format_actions(counts: dict[str, int]) -> str:
    """actions.txt in the real file's format: header, then name and count, tab-padded."""
    def line(name: str, value: str) -> str:
        column, tabs = len(name), 0
        while tabs == 0 or column < _ACTIONS_COLUMN:
            column, tabs = (column // 8 + 1) * 8, tabs + 1
        return name + "\t" * tabs + value + "\n"

    return line("action_name", "number_of_images") + "".join(
        line(name, str(count)) for name, count in counts.items())


def format_image_list(ids: list[str]) -> str:
    return "".join(f"{sample_id}{IMAGE_SUFFIX}\n" for sample_id in ids)


def _image_rng(seed: int, class_index: int, number: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, number, 1])


def _split_rng(seed: int, class_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, 0, 2])


def write_synthetic_stanford40(folder: str | Path,
                               config: SynthStanford40Config = SynthStanford40Config()) -> Path:
    """Write a synthetic Stanford-40 source into `folder` (created; must be empty or absent).

    Written into a temporary sibling and renamed, so a killed run leaves no half-written source.
    """
    return write_source(folder, functools.partial(_fill, config=config))


def _fill(staging: Path, config: SynthStanford40Config) -> None:
    (staging / IMAGES_DIR).mkdir()
    (staging / SPLITS_DIR).mkdir()
    actions = ACTIONS[: config.classes]
    per_class = config.train_per_class + config.test_per_class
    lists: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for class_index, action in enumerate(actions):
        for number in range(1, per_class + 1):
            rng = _image_rng(config.seed, class_index, number)
            width, height = (int(v) for v in rng.integers(config.min_side, config.max_side + 1,
                                                          size=2))
            write_jpeg(staging / IMAGES_DIR / f"{action}_{number:03d}{IMAGE_SUFFIX}",
                       render_image(class_index, rng, width, height))
        numbers = _split_rng(config.seed, class_index).permutation(np.arange(1, per_class + 1))
        lists["train"][action] = [f"{action}_{n:03d}" for n in numbers[: config.train_per_class]]
        lists["test"][action] = [f"{action}_{n:03d}" for n in numbers[config.train_per_class:]]
    splits = staging / SPLITS_DIR
    (splits / ACTIONS_FILE).write_bytes(
        format_actions({action: per_class for action in actions}).encode())
    for split, by_class in lists.items():
        for action, ids in by_class.items():
            (splits / split_file_name(action, split)).write_bytes(format_image_list(ids).encode())
        # The real train.txt / test.txt: the per-class lists in alphabetical class order.
        combined = [i for action in sorted(by_class) for i in by_class[action]]
        (splits / f"{split}.txt").write_bytes(format_image_list(combined).encode())
