"""`flowstore show`: pictures of a store's samples, to see that the features are sane.

Is the flow where the action is, did a clip decode black or upside down? Numbers do not say;
a picture does. A store is read through the public reader (`flowstore.open`), so every flow
encoding is decoded to pixels first and a uint8 store looks like its float16 twin.

Video stores (`flow`): one PNG per sample, `<id>.png`, laid out (tile = one S x S picture,
magnified by the smallest whole factor that makes it at least `MIN_TILE` pixels):

    header       id, class, split; the flow scale (pixels drawn at full saturation)
    first row    the middle frame | the colour-wheel legend
    then         per block of up to `COLUMNS` steps: a row of frames, below it their flows

  width = max(min(T, COLUMNS), 2) tiles, at least `MIN_WIDTH` pixels; height = header + tile
  x (1 + 2 x ceil(T / COLUMNS)). Flow is in the Middlebury colour coding
  (`flowstore.flow_image`), normalized per sample: one magnitude, the `SCALE_PERCENTILE`th
  percentile of |flow| over the sample's T flows (its maximum is a few outlier pixels that
  would wash the rest out), is full saturation for all T, so steps compare with each other;
  the header prints it. `--gif` adds `<id>.gif`: T frames of
  frame | flow, with a bar along the bottom that marks the step.
  A segment-sampled store (`--sampling segments`) holds K frames for its K x L flows: above
  each flow is its segment's frame (the segment's centre), and the tiles are captioned
  `s<k>.<j>` (flow j of segment k) instead of `t<step>`.
Image stores (`image`): one PNG per class, `<class>.png`: a grid of the samples' images, each
captioned with its id and split.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flowstore.console import one_line
from flowstore.errors import FlowstoreError, ParameterError
from flowstore.files import write_whole
from flowstore.flow_image import flow_to_rgb, wheel_legend
from flowstore.manifest import class_label
from flowstore.params import check_seed
from flowstore.store import enclosing_store, failures

#: Steps per row of a video picture.
COLUMNS = 8
#: Smallest tile side in pixels: tiles of small stores are magnified (nearest neighbour).
MIN_TILE = 96
#: Smallest picture width: room for the header's text.
MIN_WIDTH = 560
#: Height of one line of text (header lines, captions).
LINE = 22
#: Header lines of a video picture.
HEADER_LINES = 2
#: Images per row of an image store's class grid.
GRID_COLUMNS = 4
#: The flow magnitude drawn at full colour is this percentile of the sample's |flow|: the
#: maximum itself is usually a few outlier pixels (Farneback at the frame border, a cut), and
#: normalizing by it washes every real motion out to near white.
SCALE_PERCENTILE = 99.0
#: Milliseconds per GIF frame.
GIF_FRAME_MS = 250
#: Height of the GIF's step bar.
GIF_BAR = 4

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@dataclass
class ShowResult:
    written: list[Path] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)


def tile_size(size: int) -> int:
    """Side of one tile for frames of side `size`: magnified by a whole factor to MIN_TILE."""
    return size * max(1, math.ceil(MIN_TILE / size))


def video_picture_shape(size: int, steps: int) -> tuple[int, int]:
    """(height, width) of a video sample's picture (see the module docstring)."""
    tile = tile_size(size)
    columns = min(steps, COLUMNS)
    width = max(max(columns, 2) * tile, MIN_WIDTH)
    return HEADER_LINES * LINE + tile * (1 + 2 * math.ceil(steps / columns)), width


def flow_tile_origin(size: int, steps: int, step: int) -> tuple[int, int]:
    """(top, left) pixel of flow `step`'s tile in a video picture."""
    tile, columns = tile_size(size), min(steps, COLUMNS)
    block, column = divmod(step, columns)
    return HEADER_LINES * LINE + tile * (2 + 2 * block), column * tile


def image_grid_shape(size: int, count: int) -> tuple[int, int]:
    """(height, width) of an image store's class grid of `count` images."""
    tile, columns = tile_size(size), min(count, GRID_COLUMNS)
    width = max(columns * tile, MIN_WIDTH)
    return LINE + math.ceil(count / columns) * (tile + LINE), width


#: Random samples of each class `show` draws when no ids are given.
SHOWN_PER_CLASS = 2


def show(store: str | os.PathLike, out: str | os.PathLike, ids: Sequence[str] = (), *,
         per_class: int | None = None, seed: int | None = None, gif: bool = False,
         progress: bool = True) -> ShowResult:
    """Write pictures of `ids` (default: `per_class` random done samples of each class, seeded
    by `seed`: `SHOWN_PER_CLASS` and 0 when not given) of `store` into the folder `out`.

    Raises:
        flowstore.errors.FlowstoreError: a missing store, an unknown or unbuilt id, a store with
            neither flow nor images; `per_class` or `seed` given with ids (they choose samples
            at random: given with ids they were silently ignored).
    """
    import flowstore
    from flowstore.verify import check_dataset_arrays, damage_of  # (only when run)

    if ids and (per_class is not None or seed is not None):
        given = [name for name, value in (("--per-class", per_class), ("--seed", seed))
                 if value is not None]
        raise ParameterError(f"{' and '.join(given)} "
                             f"{'choose' if len(given) > 1 else 'chooses'} samples at random: "
                             f"not with sample ids, which are drawn as named")
    per_class = SHOWN_PER_CLASS if per_class is None else per_class
    seed = 0 if seed is None else seed
    if per_class < 1:
        raise ParameterError(f"--per-class must be at least 1, got {per_class}")
    check_seed(seed)
    with flowstore.open(store) as dataset:
        # what verify refuses (an array of another type or shape, parameters that are not the
        # dataset's) is said in its words before a picture is drawn; a lost array is said below
        check_dataset_arrays(dataset.store, store, allow_missing=True)
        kind = "flow" if "flow" in dataset.features else "image" if "image" in dataset.features \
            else None
        if kind is None:
            raise FlowstoreError(f"store {str(store)!r} holds neither flow nor images "
                                 f"(it has {', '.join(dataset.features) or 'no features'})"
                                 + damage_of(dataset.store))
        if gif and kind != "flow":
            raise ParameterError("--gif needs a video store (one with flow)")
        lacking = [name for name in VIDEO_PICTURE_FEATURES if name not in dataset.features]
        if kind == "flow" and lacking:  # (a damaged store, or one made with flow alone)
            raise FlowstoreError(f"store {str(store)!r} has flow but no {' or '.join(lacking)}, "
                                 f"which a video sample's picture draws beside it"
                                 + (damage_of(dataset.store) or " (a store built without it)"))
        indices = _select(dataset, str(store), ids, per_class, seed)
        out = Path(out)
        _refuse_inside(out)
        made: list[Path] = []  # the folders this call makes, deepest last
        try:
            return _draw(dataset, indices, out, made, kind=kind, gif=gif, progress=progress)
        except BaseException:
            # (a sample that cannot be read, a picture that cannot be written: an --out made
            # for nothing was left behind empty, a class folder too; found by review)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # (only where empty: a picture written stays)
            raise


def _draw(dataset, indices: list[int], out: Path, made: list[Path], *, kind: str, gif: bool,
          progress: bool) -> ShowResult:
    """`show`'s pictures of the samples `indices` of the open `dataset` into `out`, each
    folder it makes added to `made`."""
    from flowstore.progress import progress_bar

    _make_folder(out, made)
    segmented = dataset.segments is not None
    result = ShowResult()
    splits: dict[str, Any] = {}
    samples = []
    taken: set[str] = set()  # (the pictures' names so far, casefolded)
    for index in progress_bar(indices, enabled=progress, unit="sample", desc="show"):
        sample = _read(dataset, splits, index)
        if kind == "flow":
            name = _picture_name(str(sample["id"]), index, taken)
            folder = (out / name).parent
            if folder != out:  # a class named like a store (`c.zarr`) meeting one in --out
                _refuse_inside(folder, f"the class folder {str(folder)!r} of --out")
            _make_folder(folder, made)
            result.written.append(_write_png(out / f"{name}.png",
                                             video_picture(sample, dataset.classes,
                                                           segmented=segmented)))
            if gif:
                result.written.append(write_gif(out / f"{name}.gif", sample))
        else:
            samples.append(sample)
        result.samples.append(str(sample["id"]))
    drawn = sorted({int(s["label"]) for s in samples})
    names = {label: class_label(dataset.classes, label)
             for label in {*range(len(dataset.classes)), *drawn}}
    files = _file_names(names)
    # made again now, if gone: another `show` into a new --out, stopped while this one read,
    # took the empty folder it had made with it, and this one failed (found by review)
    _make_folder(out, made)
    for label in drawn:
        of_class = [s for s in samples if int(s["label"]) == label]
        result.written.append(_write_png(out / f"{files[label]}.png",
                                         image_grid(of_class, names[label])))
    return result


def _picture_name(sample_id: str, index: int, taken: set[str]) -> str:
    """Where in `--out` the pictures of the video sample `sample_id` (at `index`) go, without
    their suffix: the id, whose `/` makes a class folder (a videofolder id is `<class>/<clip>`),
    each part of it a file name this system holds (`_safe_name`). A store from elsewhere may
    hold any id: an absolute one or one of `..` parts wrote pictures and made folders outside
    --out, and a NUL byte was an internal error (found by review). An id that had to change
    gets its sample's index, so that two ids changed alike stay apart; and so does one that
    meets a name already `taken` (casefolded, and added to it) but for letter case: `a/Clip`
    and `a/clip` are one file on FAT, exFAT or macOS, where one picture was written over the
    other and both counted (found by review)."""
    *folders, name = [_safe_name(part) for part in sample_id.split("/")]
    changed = "/".join((*folders, name)) != sample_id
    if changed or len(os.fsencode(name + ".png")) > NAME_MAX_BYTES:
        name = _labelled(name, index)
    if "/".join((*folders, name)).casefold() in taken:
        name = _labelled(name, index)
    taken.add("/".join((*folders, name)).casefold())
    return "/".join((*folders, name))


def _safe_name(name: str) -> str:
    """`name` as one file name inside a folder: no `/`, `\\`, control character, nor any of
    `"*:<>?|`, which FAT and exFAT refuse (each "_": a clip `t:1` stopped the pictures written
    to a USB stick at it; found by review), no leading dot (a `..`, or a hidden file: "_"
    before it), never empty, every character one the file system's encoding holds
    (`file_name_here`)."""
    name = "".join("_" if character in UNSAFE_IN_NAMES or ord(character) < 32 else character
                   for character in name)
    name = file_name_here(name)
    return "_" + name if name.startswith(".") or not name else name


def _file_names(names: dict[int, str]) -> dict[int, str]:
    """Each class's name (label -> name) as one file name inside `--out`, no two alike: a
    split file may name a class `a/b` or `../x`, which as a path would be a folder that does
    not exist, or a file outside `--out`. A name that had to change gets its label too, so that
    `a/b` (`a_b-0`) does not overwrite `a_b`; and so does a name left as it was that another's
    changed one meets (`a_b-0` beside `a/b`: one grid was written over the other). A name too
    long for a file with its `.png` (a class folder's name may take all of `NAME_MAX_BYTES`) is
    cut, and changed so, gets its label: it was "File name too long", and no grid at all."""
    cleaned = {label: _safe_name(name) for label, name in names.items()}
    files = {label: file_name if file_name == names[label]
             and len(os.fsencode(file_name + ".png")) <= NAME_MAX_BYTES
             else _labelled(file_name, label) for label, file_name in cleaned.items()}
    # A label ends every changed name, so changed names never meet: only a plain one can meet
    # a changed one, and changed, it may meet another plain one (`a/b`, `a_b-0`, `a_b-0-1`):
    # again until none does (each round changes one more name for good).
    while True:
        taken = {file_name for label, file_name in files.items() if file_name != names[label]}
        meeting = [label for label, file_name in files.items()
                   if file_name == names[label] and file_name in taken]
        if not meeting:
            return files
        files.update((label, _labelled(files[label], label)) for label in meeting)


#: What `_safe_name` writes as "_": a path's separators, and what FAT and exFAT refuse.
UNSAFE_IN_NAMES = frozenset('/\\"*:<>?|')

#: The bytes of a file name most file systems hold (ext4's, XFS's and Btrfs' NAME_MAX).
NAME_MAX_BYTES = 255


def _labelled(name: str, label: int) -> str:
    """`name` and `-label`, without as many of the name's last characters as it takes for that
    and `.png` to fit `NAME_MAX_BYTES` in the file system's encoding."""
    room = NAME_MAX_BYTES - len(f"-{label}.png")
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f"{name}-{label}"


def file_name_here(name: str) -> str:
    """`name`, each character the file system's encoding cannot hold as "_": a Chinese class or
    clip name under a C or latin-1 locale without UTF-8 mode (`LC_ALL=C PYTHONUTF8=0`, some
    clusters' jobs) was an internal error. (Callers keep two names changed alike apart.)"""
    try:
        os.fsencode(name)
        return name
    except UnicodeEncodeError:
        return "".join(character if _encodable(character) else "_" for character in name)


def _encodable(character: str) -> bool:
    try:
        os.fsencode(character)
        return True
    except UnicodeEncodeError:
        return False


def _refuse_inside(out: Path, what: str | None = None) -> None:
    """Pictures are never written into a store, the one they show or another: a store folder
    holds its arrays alone (`inspect --bytes` would count them, `--overwrite` delete them with
    it). `what` names `out` where it is not --out itself."""
    store = enclosing_store(out)
    if store is not None:
        raise ParameterError(f"{what or f'--out {str(out)!r}'} is the store {str(store)!r} or "
                             f"lies inside it; give the pictures another folder")


def _make_folder(folder: Path, made: list[Path]) -> None:
    """Make `folder` and its missing parents, each added to `made`, topmost first."""
    missing = []
    for parent in (folder, *folder.parents):
        if os.path.lexists(parent):
            break
        missing.append(parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        made.extend(reversed(missing))
    except FileExistsError:  # (said "File exists" of the folder asked for)
        raise FlowstoreError(f"cannot write pictures into {str(folder)!r}: it is a file, not "
                             f"a folder") from None
    except OSError as exc:
        raise FlowstoreError(f"cannot write pictures into {str(folder)!r}: "
                             f"{exc.strerror or exc}") from None


def _not_done(dataset, store: str, sample: str) -> str:
    """Why `sample` has nothing to show: its build's recorded failure (a build again retries
    it, and fails it again), or that no build has reached it yet."""
    try:
        reason = failures(dataset.store).get(sample)
    except FlowstoreError:  # (a damaged `failure` column: the reason unknown)
        reason = None
    if reason:
        return (f"sample {sample!r} of store {store!r} failed to build ({reason}); `flowstore "
                f"inspect` lists the failures")
    return f"sample {sample!r} is not built yet in store {store!r} (run its build again)"


def _select(dataset, store: str, ids: Sequence[str], per_class: int, seed: int) -> list[int]:
    """Store indices of the samples to show: `ids` in the order given (each once), or a seeded
    random `per_class` of each class's done samples in store order. `store` names the store
    in messages as the user gave it."""
    if ids:
        position = {sample: i for i, sample in enumerate(dataset.ids.tolist())}
        indices = []
        for sample in dict.fromkeys(ids):  # `show s.zarr a a` draws a once, and says so
            if sample not in position:
                raise FlowstoreError(f"no sample {sample!r} in store {store!r}")
            if not dataset.done[position[sample]]:
                raise FlowstoreError(_not_done(dataset, store, sample))
            indices.append(position[sample])
        return indices
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(dataset.labels[dataset.done]):  # (a store of clips: no class)
        candidates = np.flatnonzero((dataset.labels == label) & dataset.done)
        chosen += rng.choice(candidates, size=min(per_class, candidates.size),
                             replace=False).tolist()
    if not chosen:
        raise FlowstoreError(f"store {store!r} has no built sample to show")
    return sorted(chosen)


def _read(dataset, splits: dict[str, Any], index: int) -> dict[str, Any]:
    """One sample by store index, through the reader (flow decoded to float32 pixels)."""
    name = str(dataset.splits[index])
    if name not in splits:
        splits[name] = dataset.split(name, float_dtype="float32")
    split = splits[name]
    sample = split[int(np.searchsorted(split.indices, index))]
    sample["split"] = name
    return sample


# -- drawing -------------------------------------------------------------------------------------
def _cv2():
    from flowstore.extraction._cv import cv2

    return cv2


def _magnified(picture: np.ndarray, tile: int) -> np.ndarray:
    factor = tile // picture.shape[0]
    return picture if factor == 1 else np.repeat(np.repeat(picture, factor, 0), factor, 1)


def _text(canvas: np.ndarray, text: str, left: int, baseline: int, *, width: int,
          colour=BLACK, outline=None) -> None:
    """Text at (left, baseline), shrunk to fit `width` pixels less a margin of 4 on each side;
    `outline` draws it legible on a picture; control characters written as escapes, as every
    listing writes them (`one_line`: an id's newline broke a caption in two, its second line
    cut off).

    Hershey glyphs do not shrink in proportion to the scale (their strokes are whole pixels),
    so the fit is measured again at each smaller scale, not computed once."""
    cv2 = _cv2()
    font = cv2.FONT_HERSHEY_SIMPLEX
    text, scale = fitted_text(one_line(text), width - 8, thickness=3 if outline is not None else 1)
    if outline is not None:
        cv2.putText(canvas, text, (left, baseline), font, scale, outline, 3, cv2.LINE_AA)
    cv2.putText(canvas, text, (left, baseline), font, scale, colour, 1, cv2.LINE_AA)


def fitted_text(text: str, width: int, *, thickness: int = 1) -> tuple[str, float]:
    """`text` and the Hershey scale (0.5 down to 0.2) at which it fits `width` pixels; a text
    too long even at 0.2 (an imagefolder id, `<class>/<file>`) loses its middle to "..." until
    it fits, keeping its start and its end (where a file's number and the split are): drawn
    whole, it ran over its neighbours' captions, and none could be read."""
    cv2 = _cv2()
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5

    def fits(candidate: str) -> bool:
        return cv2.getTextSize(candidate, font, scale, thickness)[0][0] <= width

    while scale > 0.2 and not fits(text):
        scale *= 0.95
    whole = text
    head, tail = len(whole) - len(whole) // 2, len(whole) // 2  # (kept of each end)
    while not fits(text) and head + tail > 0:
        if head > tail:
            head -= 1
        else:
            tail -= 1
        text = whole[:head] + "..." + whole[len(whole) - tail:]
    return text, scale


def flow_scale(flow: np.ndarray) -> float:
    """The |flow| (pixels) drawn at full colour for one sample's flows (`SCALE_PERCENTILE`)."""
    return float(np.percentile(np.hypot(flow[..., 0], flow[..., 1]), SCALE_PERCENTILE))


def frame_of_flow(step: int, frames: int, flows: int) -> int:
    """The stored frame shown with flow `step`: the same step when a sample holds one frame
    per flow (linspace), else its segment's (`flows` = K x L flows over `frames` = K)."""
    return step * frames // flows


def step_caption(step: int, frames: int, flows: int, segmented: bool) -> str:
    """`t<step>`, or `s<k>.<j>` (flow j of segment k) for a segment-sampled sample (told by
    the store's sampling, not by counts: with `--stack 1` it holds as many frames as flows)."""
    if not segmented:
        return f"t{step}"
    segment = frame_of_flow(step, frames, flows)
    return f"s{segment}.{step - segment * flows // frames}"


#: What `video_picture` draws of a sample.
VIDEO_PICTURE_FEATURES = ("middle_frame", "frames", "flow")


def video_picture(sample: dict[str, Any], classes: Sequence[str], *,
                  segmented: bool = False) -> np.ndarray:
    """The (H, W, 3) uint8 RGB picture of one video sample (layout: the module docstring);
    `segmented`: its store was built with `--sampling segments`."""
    frames, flow = sample["frames"], sample["flow"]
    steps, size = flow.shape[0], flow.shape[1]
    height, width = video_picture_shape(size, steps)
    tile = tile_size(size)
    canvas = np.full((height, width, 3), 255, np.uint8)
    scale = flow_scale(flow)
    label = int(sample["label"])
    _text(canvas, f"{sample['id']}   class {class_label(classes, label)} ({label})   "
                  f"split {sample['split']}",
          4, LINE - 6, width=width)
    _text(canvas, f"flow: hue = direction (wheel), full colour = |flow| >= {scale:.2f} px "
                  f"({SCALE_PERCENTILE:g}th percentile of this sample); T = {steps}"
                  + ("" if not segmented else
                     f" = {len(frames)} segments x {steps // len(frames)}"), 4,
          2 * LINE - 6, width=width)
    top = HEADER_LINES * LINE
    canvas[top:top + tile, :tile] = _magnified(sample["middle_frame"], tile)
    _text(canvas, "middle", 3, top + 14, width=tile, colour=WHITE, outline=BLACK)
    canvas[top:top + tile, tile:2 * tile] = wheel_legend(tile)
    _text(canvas, "+x", 2 * tile - 22, top + tile // 2 + 5, width=tile)
    _text(canvas, "+y", tile + tile // 2 - 8, top + tile - 3, width=tile)
    pictures = flow_to_rgb(flow, max_magnitude=scale)
    for step in range(steps):
        flow_top, left = flow_tile_origin(size, steps, step)
        frame = frames[frame_of_flow(step, len(frames), steps)]
        canvas[flow_top - tile:flow_top, left:left + tile] = _magnified(frame, tile)
        canvas[flow_top:flow_top + tile, left:left + tile] = _magnified(pictures[step], tile)
        _text(canvas, step_caption(step, len(frames), steps, segmented), left + 3,
              flow_top - tile + 14, width=tile, colour=WHITE, outline=BLACK)
    return canvas


def image_grid(samples: Sequence[dict[str, Any]], class_name: str) -> np.ndarray:
    """The (H, W, 3) uint8 RGB grid of one class's images, each captioned id and split."""
    size = samples[0]["image"].shape[0]
    height, width = image_grid_shape(size, len(samples))
    tile, columns = tile_size(size), min(len(samples), GRID_COLUMNS)
    canvas = np.full((height, width, 3), 255, np.uint8)
    _text(canvas, f"class {class_name}: {len(samples)} image(s)", 4, LINE - 6, width=width)
    for position, sample in enumerate(samples):
        row, column = divmod(position, columns)
        top, left = LINE + row * (tile + LINE), column * tile
        canvas[top:top + tile, left:left + tile] = _magnified(sample["image"], tile)
        # (an imagefolder id is `<class>/<image>`: the class, the grid's title already, left
        # out; under a long class name the caption was cut to some 5 px, the image's own name
        # lost; found by review)
        shown = str(sample["id"]).removeprefix(f"{class_name}/")
        _text(canvas, f"{shown} ({sample['split']})", left + 2, top + tile + LINE - 6,
              width=tile)
    return canvas


def gif_frames(sample: dict[str, Any]) -> list[np.ndarray]:
    """The T frames of a sample's animation: frame t | flow t, and a bar that marks t (which
    also keeps consecutive frames distinct, so none is merged away)."""
    frames, flow = sample["frames"], sample["flow"]
    steps, size = flow.shape[0], flow.shape[1]
    tile = tile_size(size)
    pictures = flow_to_rgb(flow, max_magnitude=flow_scale(flow))
    out = []
    for step in range(steps):
        canvas = np.full((tile + GIF_BAR, 2 * tile, 3), 255, np.uint8)
        canvas[:tile, :tile] = _magnified(frames[frame_of_flow(step, len(frames), steps)], tile)
        canvas[:tile, tile:] = _magnified(pictures[step], tile)
        canvas[tile:, :round(2 * tile * (step + 1) / steps)] = BLACK
        out.append(canvas)
    return out


def write_gif(path: Path, sample: dict[str, Any]) -> Path:
    """`sample`'s animation as an endlessly looping GIF (Pillow), written whole or not at all
    (`flowstore.files.write_whole`)."""
    from PIL import Image

    coding = Image.new("P", (1, 1))  # (the flow's palette, once a GIF)
    coding.putpalette(_gif_flow_palette())
    images = [_gif_image(frame, coding) for frame in gif_frames(sample)]
    encoded = io.BytesIO()
    images[0].save(encoded, format="GIF", save_all=True, append_images=images[1:],
                   duration=GIF_FRAME_MS, loop=0)
    return write_whole(path, encoded.getvalue(), replace_links=True)


#: The flow picture's palette in a GIF frame: the coding's colours at these fractions of the
#: full magnitude, with as many directions at each as it has here (more where the colours of
#: two directions are further apart), and white (no motion): 125 colours, 44 directions 8
#: degrees apart at the full colour.
GIF_FLOW_RINGS = ((0.2, 8), (0.4, 16), (0.6, 24), (0.8, 32), (1.0, 44))
#: Colours of a GIF frame's palette for the video frame: with the flow's and the bar's black
#: and white, 256, the most a GIF palette holds.
GIF_FRAME_COLOURS = 256 - 2 - 1 - sum(count for _, count in GIF_FLOW_RINGS)


def _gif_flow_palette() -> list[int]:
    """`GIF_FLOW_RINGS`' colours and white, as a flat RGB list."""
    vectors = [(0.0, 0.0)]
    for radius, count in GIF_FLOW_RINGS:
        angles = 2 * np.pi * np.arange(count) / count
        vectors += list(zip(radius * np.cos(angles), radius * np.sin(angles)))
    return flow_to_rgb(np.array(vectors), max_magnitude=1.0).ravel().tolist()


def _gif_image(canvas: np.ndarray, coding: "PIL.Image.Image") -> "PIL.Image.Image":
    """One frame of `gif_frames` as a palette image: the video frame quantized to a palette of
    its own, the flow picture mapped to the nearest colour of the flow coding's own
    (`coding`, a palette image of `_gif_flow_palette`). Quantized together (Pillow's own
    conversion, one 256-colour palette for both, made mostly of the video's colours), on real
    clips a quarter of the saturated flow pixels came out up to 158 levels off, some in the hue
    of another direction (found by review)."""
    from PIL import Image

    tile = canvas.shape[1] // 2
    frame = Image.fromarray(np.ascontiguousarray(canvas[:tile, :tile])).quantize(
        GIF_FRAME_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    frame_palette = (frame.getpalette() or [])[:3 * GIF_FRAME_COLOURS]
    frame_palette += [0] * (3 * GIF_FRAME_COLOURS - len(frame_palette))
    flow_palette = coding.getpalette()
    flow = Image.fromarray(np.ascontiguousarray(canvas[:tile, tile:])).quantize(
        palette=coding, dither=Image.Dither.NONE)
    indices = np.empty(canvas.shape[:2], np.uint8)
    indices[:tile, :tile] = np.asarray(frame)
    indices[:tile, tile:] = np.asarray(flow) + GIF_FRAME_COLOURS
    black = GIF_FRAME_COLOURS + len(flow_palette) // 3
    indices[tile:] = np.where((canvas[tile:] == BLACK).all(axis=-1), black, black + 1)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(frame_palette + flow_palette + [*BLACK, 255, 255, 255])
    return image


def _write_png(path: Path, picture: np.ndarray) -> Path:
    """(Encoded by OpenCV, written by Python: `cv2.imwrite` says only that it failed, not why;
    written whole or not at all: `flowstore.files.write_whole`, so a full disk or `ulimit -f`
    leaves no cut-short picture and an earlier one of the same name as it was.)"""
    cv2 = _cv2()
    _, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return write_whole(path, png.tobytes(), replace_links=True)
