"""Building blocks of the small synthetic sources that dataset modules write in their real
layout (UCF101, HMDB51, Kinetics, class folders of videos or images).

A clip is the synthetic TV-HI clip (`flowstore.synth.tvhi.render_clip`): class k gets one of
four (colour, motion) cues, so up to four classes need both appearance and motion to tell apart
(beyond four, classes k and k + 4 look and move alike: only four can be learnt).
An image is the synthetic Stanford-40 image (`flowstore.synth.stanford40.render_image`). Every
file is determined by the seed, its class and its own name, and a source is written into a temporary
sibling folder and renamed into place, so a killed run leaves no half-written source.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flowstore.errors import FlowstoreError, ParameterError
from flowstore.params import check_seed
from flowstore.synth.matroska import fix_identifiers

#: (colour, motion) of class k: `CUES[k % 4]`.
CUES = (("warm", "horizontal"), ("warm", "vertical"), ("cool", "horizontal"),
        ("cool", "vertical"))
#: The codec written for each container (what OpenCV's FFmpeg backend writes without warnings).
FOURCC = {".avi": "XVID", ".mkv": "XVID", ".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v"}


@dataclass(frozen=True)
class SynthClipsConfig:
    """How much a small synthetic source holds; every file is determined by `seed`, its class
    and its name."""

    classes: int = 3
    clips_per_class: int = 6
    min_frames: int = 10
    max_frames: int = 16
    width: int = 64
    height: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if not 1 <= self.classes <= 400:
            raise ParameterError(f"classes must be in 1..400, got {self.classes}")
        if not 1 <= self.clips_per_class <= 10000:
            raise ParameterError(f"clips per class must be in 1..10000, got "
                                 f"{self.clips_per_class}")
        check_clip_shape(self.min_frames, self.max_frames, (self.width, self.height))


#: The longest synthetic clip (frames) and its largest side (pixels): beyond them a clip is
#: gigabytes held in memory as it is written (100000x100000 was OpenCV's "Insufficient memory"
#: traceback), where real clips run to a few hundred frames of at most 4K.
MAX_FRAMES, MAX_SIDE = 10_000, 4096


def check_clip_shape(min_frames: int, max_frames: int,
                     resolution: tuple[int, int] | None) -> None:
    """Refuse a frame range or a (width, height) no synthetic clip can have, in one line.

    Raises:
        ParameterError: naming the range or the resolution.
    """
    if not 2 <= min_frames <= max_frames <= MAX_FRAMES:
        raise ParameterError(f"frame range must satisfy 2 <= min <= max <= {MAX_FRAMES}, got "
                             f"{min_frames}..{max_frames}")
    if resolution is not None:
        width, height = resolution
        if not (16 <= width <= MAX_SIDE and 16 <= height <= MAX_SIDE) or width % 2 or height % 2:
            raise ParameterError(f"resolution must be even and from 16x16 to "
                                 f"{MAX_SIDE}x{MAX_SIDE}, got {width}x{height}")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, *name.encode()])


def write_clip(path: Path, class_index: int, config: SynthClipsConfig) -> None:
    """One clip of class `class_index` at `path`, in the container its suffix names."""
    from flowstore.extraction._cv import cv2  # here: dataset modules import this module
    from flowstore.synth.tvhi import render_clip

    # (its class in the seed: class k and k + 4 share a cue, and `clip_02` of each was the
    # same bytes, 1,200 clips of 400 classes 12 files, every one a duplicate; found by review)
    rng = _rng(config.seed, f"{class_index}/{path.name}")
    colour, motion = CUES[class_index % len(CUES)]
    n_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    frames = render_clip(colour, motion, rng, n_frames, config.width, config.height)
    fourcc = FOURCC.get(path.suffix.lower(), "XVID")
    # written under a plain name and renamed: OpenCV's writer takes a str path
    scratch = path.with_name(f".writing{path.suffix.lower()}")
    writer = cv2.VideoWriter(str(scratch), cv2.VideoWriter_fourcc(*fourcc), 25.0,
                             (config.width, config.height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {fourcc} video {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    check_clip_written(scratch, len(frames), path.name)
    if path.suffix.lower() == ".mkv":  # (its muxer's identifiers: random each time)
        fix_identifiers(scratch, f"{config.seed}/{path.name}".encode())
    os.replace(scratch, path)


def check_clip_written(path: Path, n_frames: int, name: str | None = None) -> None:
    """Refuse a clip that OpenCV's writer left short: it reports no write error, so a full
    disk or a file-size limit (`ulimit -f`) left every clip cut short, a source that `synth`
    said it wrote and `build --synthetic` cached for good (each build after failed the same
    samples as "cut short or damaged"). Three cheap checks: the file must stop short of the
    file-size limit (a write past it was refused), the container's top-level chunks (RIFF,
    MP4 boxes) must end exactly at the file's end (the writer fixes their sizes up at
    release, whatever reached the disk), and the clip must decode `n_frames` frames (about
    0.2 ms a frame, against several to encode it). (A Matroska file that lost only the last
    bytes of its index on a full disk still passes: its frames all decode.)

    Raises:
        OSError: with what went wrong in its words (its `strerror`), for `write_source` to
            report as it reports a full disk met by any other write.
    """
    from flowstore.files import file_size_limit
    from flowstore.extraction._cv import cv2

    size, limit = path.stat().st_size, file_size_limit()
    at_limit = limit is not None and size >= limit
    if at_limit:
        short = f"it stops at {size} bytes"
    elif not _container_whole(path):
        short = f"it ends inside its container's last chunk, at {size} bytes"
    else:
        capture = cv2.VideoCapture(str(path))
        decoded = 0
        try:
            while capture.grab():
                decoded += 1
        finally:
            capture.release()
        if decoded == n_frames:
            return
        short = f"{decoded} of its {n_frames} frames decode"
    if at_limit:
        why = (f"{os.strerror(errno.EFBIG)} (this process's file-size limit, `ulimit -f`, is "
               f"{limit // 1024} KiB)")
    elif shutil.disk_usage(path.parent).free < 1 << 20:
        why = os.strerror(errno.ENOSPC)
    else:
        why = "OpenCV's video writer reports no write error (a full disk or a file-size limit?)"
    raise OSError(errno.EIO, f"the clip {name or path.name} was written short ({short}): {why}",
                  str(path))


def _container_whole(path: Path) -> bool:
    """Whether an AVI's RIFF chunks or an MP4-family file's top-level boxes end exactly at the
    file's end; True for other containers (Matroska: only its frames are counted)."""
    with open(path, "rb") as file:
        head = file.read(12)
        riff = head[:4] == b"RIFF"
        if not riff and head[4:8] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
            return True
        end, position = os.fstat(file.fileno()).st_size, 0
        while position < end:
            file.seek(position)
            raw = file.read(8)
            if len(raw) < 8:
                return False  # a header cut short
            if riff:  # a RIFF chunk's size leaves out its 8-byte header and its padding
                size = int.from_bytes(raw[4:], "little")
                size += 8 + (size & 1)
            else:  # an MP4 box's size counts its header; 1: a 64-bit size follows; 0: to the end
                size = int.from_bytes(raw[:4], "big")
                if size == 1:
                    size = int.from_bytes(file.read(8), "big")
                elif size == 0:
                    return True
                if size < 8:
                    return False  # no box is that short: damaged
            position += size
        return position == end


def write_image(path: Path, class_index: int, config: SynthClipsConfig) -> None:
    """One image of class `class_index` at `path`, encoded as its suffix names."""
    from flowstore.extraction._cv import cv2
    from flowstore.synth.stanford40 import render_image

    image = render_image(class_index, _rng(config.seed, path.name), config.width, config.height)
    ok, encoded = cv2.imencode(path.suffix.lower(), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV cannot encode {path}")
    path.write_bytes(encoded.tobytes())


def write_source(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Run `fill(staging)` on a new temporary sibling of `folder`, then rename it into place.

    An empty folder that already exists (`flowstore synth tvhi .` in a new folder) is kept and
    filled with the staged entries, one rename each: replacing it would leave a shell whose
    current folder it is in a deleted one.

    A folder that is or lies inside a flowstore store is refused, as `show --out` refuses it:
    a store folder holds its arrays alone (`--overwrite` would delete the source with it,
    `inspect --bytes` count it as the store's).

    Raises:
        ParameterError: `folder` is a file, a folder that is not empty, or in a store.
        FlowstoreError: it cannot be written (the staging folder is removed), or another
            process wrote `folder` first (a race on a new folder: `OSError` ENOTEMPTY).
    """
    from flowstore.store import enclosing_store

    folder = Path(folder).absolute()  # ('.' has no name to make the staging sibling's from)
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"synthetic source folder is a file: {str(folder)!r}")
    store = enclosing_store(folder)
    if store is not None:
        raise ParameterError(f"synthetic source folder {str(folder)!r} is the store "
                             f"{str(store)!r} or lies inside it; give the source another folder")
    existed = folder.is_dir()
    if existed and any(folder.iterdir()):
        raise ParameterError(f"synthetic source folder is not empty: {str(folder)!r}")
    staging = folder.with_name(f".{folder.name}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        fill(staging)
        if existed:
            _move_into_empty(staging, folder)
        else:
            os.replace(staging, folder)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):  # a folder that cannot be written: the system's words
            raise FlowstoreError(f"cannot write the synthetic source {str(folder)!r}: "
                                 f"{exc.strerror or exc}") from exc
        raise
    return folder


#: The file a writer makes (alone: O_EXCL) in an existing empty folder while it moves its
#: staged entries in (`_move_into_empty`).
CLAIM = ".flowstore-synth-moving-in"


def _move_into_empty(staging: Path, folder: Path) -> None:
    """Move the entries of `staging` into the existing `folder`, which must still be empty.
    Two `synth` into one empty folder both found it empty before their long fill, and both
    moved their entries in over each other's, exit 0: a source of two seeds and resolutions
    (found by review). A writer now claims the folder first (`CLAIM`, made alone) and looks
    again under its claim: the second is refused as on a new folder (ENOTEMPTY)."""
    claim = folder / CLAIM
    try:
        os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(folder)) from None
    try:
        if any(entry.name != CLAIM for entry in folder.iterdir()):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(folder))
        for entry in sorted(staging.iterdir()):
            os.replace(entry, folder / entry.name)
    finally:
        os.unlink(claim)
    staging.rmdir()


def crlf(lines: list[str]) -> bytes:
    """Lines with CRLF endings, as the official UCF101 lists are written."""
    return "".join(line + "\r\n" for line in lines).encode()


def write_unlabelled(folder: Path, config: SynthClipsConfig,
                     write: Callable[[Path, int, SynthClipsConfig], None],
                     suffixes: tuple[str, ...], stem: str) -> Path:
    """A source of files of no class (`clips`, `images`): `write(path, class_index, config)`
    for `classes` x `clips_per_class` files `<stem>_NNN<suffix>`, every other one in `more/`,
    the classes (their cues) taken in turn but named nowhere, and a README.txt that is not a
    sample."""
    def fill(root: Path) -> None:
        (root / "README.txt").write_text("files to classify\n")
        (root / "more").mkdir()
        for number in range(config.classes * config.clips_per_class):
            where = root if number % 2 == 0 else root / "more"
            suffix = suffixes[number % len(suffixes)]
            write(where / f"{stem}_{number:03d}{suffix}", number % config.classes, config)

    return write_source(folder, fill)
