"""`flowstore show`: the colour wheel's hues, the documented picture layout, every flow encoding
decoded to the same picture, image stores as class grids, GIFs, bad input."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from flowstore.flow_encoding import encode_flow
from flowstore.show import (flow_tile_origin, image_grid_shape, tile_size, video_picture_shape)
from flowstore.store import open_store
from tests.conftest import TINY_BUILD, assert_one_line_error, flowstore_cli
from trainers.testing import make_tiny_store

SIZE, STEPS = 32, 4  # TINY_BUILD


def _build(source, path, *extra):
    out = flowstore_cli("build", "tvhi", "--source", source, "--store", path, *TINY_BUILD, "-q",
                        *extra)
    assert out.returncode == 0, out.stderr
    return path


@pytest.fixture(scope="module")
def stores(tiny_tvhi_source, tmp_path_factory):
    """The same tiny source built with float16 and with uint8 flow."""
    folder = tmp_path_factory.mktemp("show")
    return {dtype: _build(tiny_tvhi_source, folder / f"{dtype}.zarr", "--flow-dtype", dtype)
            for dtype in ("float16", "uint8")}


def _replace_flow(path: Path, sample: str, flow: np.ndarray) -> None:
    """Put a known (T, S, S, 2) float flow into `sample`, in the store's own encoding."""
    with open_store(path, "r+") as store:
        index = store.read("id").tolist().index(sample)
        params = store.attrs["params"]
        store.write("flow", index, encode_flow(flow, params["flow_dtype"], params["flow_bound"]))


def _show(store, out, *ids, **options) -> Path:
    """`flowstore show` in this process (the command itself is run in the tests of bad input,
    of --gif and of s3 stores)."""
    from flowstore.show import show

    show(store, out, ids, progress=False, **options)
    return Path(out)


def _png(path: Path) -> np.ndarray:
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert picture is not None, path
    return cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))[0] * 360


def test_a_flow_of_known_direction_has_the_standard_wheel_hue(stores, tmp_path):
    """Middlebury wheel: +x red, +y (down) yellow-orange, -x cyan, -y blue-violet; a uniform
    field at the sample's scale is the full colour (saturation 1)."""
    store = stores["float16"]
    directions = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    flow = np.zeros((STEPS, SIZE, SIZE, 2), np.float32)
    for step, direction in enumerate(directions):
        flow[step] = np.asarray(direction, np.float32) * 3.0
    _replace_flow(store, "handShake_0001", flow)
    picture = _png(_show(store, tmp_path / "out", "handShake_0001") / "handShake_0001.png")
    tile = tile_size(SIZE)
    colours = []
    for step in range(STEPS):
        top, left = flow_tile_origin(SIZE, STEPS, step)
        region = picture[top:top + tile, left:left + tile].reshape(-1, 3)
        assert (region == region[0]).all(), f"step {step}: a uniform flow is one colour"
        colours.append(region[0])
    assert tuple(colours[0]) == (255, 0, 0)  # pure +x: red
    expected_hues = [(0, 0), (40, 65), (180, 200), (250, 275)]  # +x, +y, -x, -y (degrees)
    for colour, (low, high), direction in zip(colours, expected_hues, directions):
        hue = _hue(colour)
        assert low <= hue <= high or (low == 0 and hue >= 355), (direction, colour, hue)
        assert colorsys.rgb_to_hsv(*(colour / 255))[1] > 0.99  # full saturation


def test_picture_size_and_layout_are_as_documented(stores, tmp_path):
    """Documented geometry (flowstore/show.py): 32 px tiles magnified 3x to 96; 4 steps in one
    block; 2 header lines of 22 px: (44 + 96 * 3) x max(4 * 96, 560). The middle frame and the
    frames sit in their tiles, pixel for pixel."""
    import flowstore

    assert video_picture_shape(SIZE, STEPS) == (332, 560)
    assert video_picture_shape(224, 16) == (44 + 224 * 5, 8 * 224)
    out = _show(stores["float16"], tmp_path / "out", "hug_0002", "kiss_0001")
    assert sorted(p.name for p in out.iterdir()) == ["hug_0002.png", "kiss_0001.png"]
    picture = _png(out / "hug_0002.png")
    assert picture.shape == (332, 560, 3)
    with flowstore.open(stores["float16"]) as ds:
        index = ds.ids.tolist().index("hug_0002")
        split = ds.split(str(ds.splits[index]))
        sample = split[int(np.searchsorted(split.indices, index))]
    magnify = lambda a: np.repeat(np.repeat(a, 3, 0), 3, 1)  # noqa: E731
    below_label = slice(20, 96)  # the tiles' captions ("middle", "t0") are drawn at the top
    middle = picture[44:44 + 96, :96]
    assert (middle[below_label] == magnify(sample["middle_frame"])[below_label]).all()
    for step in range(STEPS):
        top, left = flow_tile_origin(SIZE, STEPS, step)
        frame = picture[top - 96:top, left:left + 96]
        assert (frame[below_label] == magnify(sample["frames"][step])[below_label]).all()
    assert (picture[:44] < 128).any(), "the header's text (id, class, split, scale) is drawn"
    assert (picture[:44, 280:] == 255).any() and not (picture[:44] == 255).all()


def test_uint8_and_float16_stores_give_the_same_picture(stores, tmp_path):
    """The same flow field stored as float16 and as uint8 (+-20 px in 255 bins: decoded values
    are within half a bin, e = 20/255 px per component, of the field) draws the same picture.

    Tolerance: a flow error of |d| px moves a pixel's normalized vector by |d| / scale; the
    wheel's colour moves by at most K = 2.4 units of colour per unit of that (radially 1,
    around the wheel its steepest ramp: 1/4 of full colour per wheel step, 54 steps per turn,
    8.6 steps per radian; sqrt(1 + 2.15^2) = 2.4), the scale itself (a percentile of |flow|)
    moves by at most |d| too, and floor() adds one level. The wheel also has one seam, on +x,
    where blue jumps by 43 levels (its last colour is (255, 0, 43), its first (255, 0, 0)):
    pixels whose dy changes sign there are allowed that jump on top."""
    size = np.arange(SIZE, dtype=np.float32) - (SIZE - 1) / 2
    ys, xs = np.meshgrid(size, size, indexing="ij")
    field = np.stack([-ys, xs], axis=-1) * 0.45  # a rotation, 0.3 to 10 px
    flow = np.stack([field * (1 + 0.2 * step) for step in range(STEPS)])
    for store in stores.values():
        _replace_flow(store, "kiss_0002", flow)
    pictures = {dtype: _png(_show(store, tmp_path / dtype, "kiss_0002") / "kiss_0002.png")
                for dtype, store in stores.items()}
    float_picture, uint8_picture = pictures["float16"], pictures["uint8"]
    header = slice(2 * 22, None)  # the header prints the scale, which differs in its digits
    difference = np.abs(float_picture[header].astype(int) - uint8_picture[header].astype(int))
    scale = np.percentile(np.hypot(flow[..., 0], flow[..., 1]), 99)
    error = np.sqrt(2) * 20 / 255
    tolerance = 255 * (2.4 + 1) * error / scale + 1
    assert tolerance < 15  # a meaningful check: a few levels of 255
    assert np.mean(difference > tolerance) < 0.001, difference.max()
    assert difference.max() <= tolerance + 43
    assert difference.any(), "uint8 is quantized: some pixel differs"
    # undecoded (raw bins read as pixels) the pictures would be nothing alike
    raw = np.abs(float_picture.astype(int) - _png(_show_raw_uint8(stores["uint8"], tmp_path)))
    assert raw[header].max() > 100


def _show_raw_uint8(store: Path, tmp_path: Path) -> Path:
    """The uint8 store's picture drawn from the stored bins as if they were pixels (what a
    reader that forgot to decode would draw)."""
    import flowstore
    from flowstore.show import video_picture

    with flowstore.open(store) as ds:
        index = ds.ids.tolist().index("kiss_0002")
        split = ds.split(str(ds.splits[index]))
        sample = split[int(np.searchsorted(split.indices, index))]
        sample["flow"] = ds.store.read("flow", index).astype(np.float32)
        sample["split"] = str(ds.splits[index])
        picture = video_picture(sample, ds.classes)
    path = tmp_path / "raw.png"
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return path


def test_the_random_choice_is_of_done_samples_in_store_order():
    """Of a partly built store, only done samples are drawn (a pending one made `show` fail as
    a bug, or draw a neighbour), listed in store order whatever order they were drawn in."""
    from types import SimpleNamespace

    from flowstore.show import _select

    labels = np.array([0, 1] * 6)
    done = np.array([True, True, False, True, True, False, True, False, False, True, True, True])
    dataset = SimpleNamespace(labels=labels, done=done, ids=np.array([f"s{k}" for k in range(12)]))
    for seed in range(20):
        chosen = _select(dataset, "s.zarr", (), 2, seed)
        assert chosen == sorted(chosen) and done[chosen].all() and len(chosen) == 4
        assert sorted(labels[chosen].tolist()) == [0, 0, 1, 1]
    assert _select(dataset, "s.zarr", (), 9, 0) == np.flatnonzero(done).tolist()


def test_default_choice_is_per_class_and_seeded(stores, tmp_path):
    first = _show(stores["float16"], tmp_path / "a", per_class=1, seed=3)
    again = _show(stores["float16"], tmp_path / "b", per_class=1, seed=3)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert sorted(name.split("_")[0] for name in names) == ["handShake", "highFive", "hug", "kiss"]
    other = sorted(p.name for p in _show(stores["float16"], tmp_path / "d", per_class=1,
                                         seed=4).iterdir())
    assert other != names  # another seed, another choice
    two = sorted(p.name for p in _show(stores["float16"], tmp_path / "c").iterdir())
    assert len(two) == 8  # default: 2 per class


def test_gif_is_an_animation_of_the_steps(stores, tmp_path):
    from PIL import Image

    result = flowstore_cli("show", stores["uint8"], "hug_0001", "--gif", "--out", tmp_path / "gif")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote 2 picture(s) of 1 sample(s) to {tmp_path / 'gif'}"
    out = tmp_path / "gif"
    with Image.open(out / "hug_0001.gif") as gif:
        assert gif.is_animated and gif.n_frames == STEPS
        assert gif.size == (2 * tile_size(SIZE), tile_size(SIZE) + 4)


def test_an_image_store_gives_a_grid_per_class(tmp_path):
    from flowstore.synth.stanford40 import SynthStanford40Config, write_synthetic_stanford40

    source = write_synthetic_stanford40(tmp_path / "s40", SynthStanford40Config(
        classes=2, train_per_class=3, test_per_class=2, min_side=32, max_side=40))
    store = tmp_path / "s40.zarr"
    built = flowstore_cli("build", "stanford40", "--source", source, "--store", store,
                          "--size", "32", "-q")
    assert built.returncode == 0, built.stderr
    out = _show(store, tmp_path / "out", per_class=3)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["applauding.png", "blowing_bubbles.png"]
    assert image_grid_shape(32, 3) == (22 + 96 + 22, 560)
    assert _png(out / "applauding.png").shape == (140, 560, 3)
    # more per class than a class has: all of its 5 images (numpy's choice refused the size)
    every = _show(store, tmp_path / "every", per_class=9)
    assert _png(every / "applauding.png").shape == (*image_grid_shape(32, 5), 3)
    gif = flowstore_cli("show", store, "--out", tmp_path / "g", "--gif")
    assert "video store" in assert_one_line_error(gif)


def test_ids_alike_but_for_case_or_with_characters_fat_refuses_get_pictures_of_their_own():
    """On FAT, exFAT or macOS `a/Clip` and `a/clip` are one file: one picture was written over
    the other and both counted; and a clip `t:1` (FAT refuses `"*:<>?|`) stopped every picture
    after it (found by review). Names are made here for any file system alike."""
    from flowstore.show import _picture_name

    taken: set[str] = set()
    names = [_picture_name(sample, index, taken) for index, sample in enumerate(
        ["a/Clip", "a/clip", "a/CLIP", "b/t:1", 'b/q"x?', "b/tab\there", "b/plain"])]
    assert names == ["a/Clip", "a/clip-1", "a/CLIP-2", "b/t_1-3", "b/q_x_-4", "b/tab_here-5",
                     "b/plain"]
    assert len({name.casefold() for name in names}) == len(names)


def test_an_out_folder_taken_away_while_the_images_are_read_is_made_again(tmp_path,
                                                                          monkeypatch):
    """Two `show` into one new --out: the first, stopped while the second read its images,
    removed the empty folder it had made, and the second failed "No such file or directory"
    (found by review). The grids are written into --out made again."""
    import flowstore.show as show

    store = make_tiny_store(tmp_path / "s40.zarr", dataset="stanford40", size=16,
                            per_class=(2, 1, 1))
    out = tmp_path / "out"
    read = show._read

    def read_while_another_cleans_up(*args):
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        return read(*args)

    monkeypatch.setattr(show, "_read", read_while_another_cleans_up)
    drawn = _show(store, out, per_class=2)
    assert sorted(p.name for p in drawn.iterdir()) == ["applauding.png", "climbing.png",
                                                        "jumping.png"]


def test_a_grids_captions_leave_out_the_class_its_title_names(monkeypatch):
    """An imagefolder id is `<class>/<image>`: under a long class name each caption was cut to
    some 5 px and the image's own name lost (found by review); the grid's title names the
    class once."""
    import flowstore.show as show

    said: list[str] = []
    monkeypatch.setattr(show, "_text", lambda canvas, text, *args, **kwargs: said.append(text))
    name = "playing musical instrument (wind) in a concert hall"
    image = np.zeros((16, 16, 3), np.uint8)
    show.image_grid([{"image": image, "id": f"{name}/img_01", "split": "train"},
                     {"image": image, "id": "elsewhere/img_02", "split": "test"}], name)
    assert said == [f"class {name}: 2 image(s)", "img_01 (train)", "elsewhere/img_02 (test)"]


def test_class_names_that_look_like_paths_stay_file_names_inside_out(tmp_path):
    """A split file may name a class `../escape` or `a/b`: its grid was written outside --out, or
    the command failed after writing some pictures."""
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "s.zarr", dataset="imagefolder", per_class=(1, 0, 0),
                            classes=("../escape", "a/b", ".hidden", "a_b"))
    out = _show(store, tmp_path / "out", per_class=1)
    assert sorted(p.name for p in out.iterdir()) == [
        "_.._escape-0.png", "_.hidden-2.png", "a_b-1.png", "a_b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.zarr"]


@pytest.mark.parametrize("dataset", ["videofolder", "imagefolder"])
def test_names_the_file_system_encoding_cannot_hold_are_written_with_underscores(tmp_path,
                                                                                 dataset):
    """Under a C locale without UTF-8 mode (`LC_ALL=C PYTHONUTF8=0`, some clusters' jobs) file
    names are ASCII: a store of Chinese class names (a videofolder's ids hold them too) was an
    internal error. Each such character is "_", and two names changed alike stay apart."""
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "s.zarr", dataset=dataset, per_class=(1, 0, 0),
                            classes=("跑步", "跳", "走路", "a"))
    result = flowstore_cli("show", store, "--out", tmp_path / "out", "--per-class", "1",
                           env={"LC_ALL": "C", "PYTHONUTF8": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote 4 picture(s) of 4 sample(s)"), result.stdout
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert len(written) == 4 and all(name.isascii() for name in written), written
    if dataset == "imagefolder":
        assert written == ["_-1.png", "__-0.png", "__-2.png", "a.png"]


def test_a_class_whose_name_another_changed_name_takes_keeps_its_own_grid(tmp_path):
    """`a/b` (label 0) is written as `a_b-0`, which was another class's name as it stood: one
    grid overwrote the other, and 2 pictures were said written where 1 was (from review)."""
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "s.zarr", dataset="imagefolder", per_class=(1, 0, 0),
                            classes=("a/b", "a_b-0"))
    result = flowstore_cli("show", store, "--out", tmp_path / "out", "--per-class", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_b-0-1.png", "a_b-0.png"]
    assert result.stdout.startswith("wrote 2 picture(s)")


def test_a_class_name_too_long_for_a_file_name_is_cut_and_drawn(tmp_path):
    """A class folder's name may take all 255 bytes a file name has: with `.png` it was "File
    name too long", and no grid was written, not even the other classes' (found by review)."""
    from trainers.testing import make_tiny_store

    long = "é" * 126  # 252 bytes in UTF-8
    store = make_tiny_store(tmp_path / "s.zarr", dataset="imagefolder", per_class=(1, 0, 0),
                            classes=(long, "ok"))
    result = flowstore_cli("show", store, "--out", tmp_path / "out", "--per-class", "1")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written[0] == "ok.png" and written[1].endswith("-0.png")
    assert written[1].startswith("é" * 100) and len(os.fsencode(written[1])) <= 255


def test_class_file_names_stay_apart_when_a_changed_name_meets_a_chain_of_others():
    """`a/b` is `a_b-0`, so `a_b-0` became `a_b-0-1`: the name of the third class as it
    stood, whose grid was then written over (from a mutation review)."""
    from flowstore.show import _file_names

    assert _file_names({0: "a/b", 1: "a_b-0", 2: "a_b-0-1"}) == {
        0: "a_b-0", 1: "a_b-0-1", 2: "a_b-0-1-2"}
    assert _file_names({0: "a/b", 1: "a_b", 2: "x"}) == {0: "a_b-0", 1: "a_b", 2: "x"}
    # a long one changed so stays a file name (it was 257 bytes: found by review)
    long = _file_names({0: "a/" + "b" * 247, 1: "a_" + "b" * 247 + "-0"})
    assert long[0] == "a_" + "b" * 247 + "-0" and long[1].endswith("-1")
    assert all(len(os.fsencode(name + ".png")) <= 255 for name in long.values())
    assert long[0] != long[1]


def test_ids_of_a_store_from_elsewhere_never_put_a_picture_outside_out(stores, tmp_path):
    """A store's ids are another's data: an absolute id or one of `..` parts wrote its
    pictures, and made folders, outside --out (exit 0), and a NUL byte was an internal error
    (found by review). Each now lies inside --out, under a name that says which it is."""
    import shutil

    import zarr

    from flowstore.store.checksum import COLUMNS_DIGEST, columns_digest

    store = Path(shutil.copytree(stores["float16"], tmp_path / "theirs.zarr"))
    group = zarr.open_group(str(store), mode="r+")
    ids = group["id"][:]
    done = np.flatnonzero(group["done"][:])
    hostile = [str(tmp_path / "abs" / "ESCAPED"), "../../ESCAPED", "a\x00b", "", "./.", "..",
               "x/../../../ESCAPED"]
    for index, sample in zip(done, hostile):
        ids[index] = sample
    group["id"][:] = ids
    group.attrs[COLUMNS_DIGEST] = columns_digest(group.attrs["classes"], ids, group["label"][:],
                                                 group["split"][:])
    out = tmp_path / "deep" / "pictures"
    _show(store, out, *hostile[:3], *hostile[4:], gif=True)  # (no NUL in a command's argument)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(written) == 2 * (len(hostile) - 1), written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "theirs.zarr"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["pictures"]
    name = f"_{tmp_path / 'abs' / 'ESCAPED'}"  # (the part before its first "/", "": "_")
    assert {f"{name}-{done[0]}.png", f"_../_../ESCAPED-{done[1]}.png",
            f"a_b-{done[2]}.png", f"_./_.-{done[4]}.png", f"_..-{done[5]}.png",
            f"x/_../_../_../ESCAPED-{done[6]}.png"} <= set(written), written
    # and those no id was asked for: a random draw of each class
    drawn = flowstore_cli("show", store, "--out", tmp_path / "deep" / "drawn", "--per-class", "9")
    assert drawn.returncode == 0, drawn.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "theirs.zarr"]


def test_a_link_left_in_out_under_a_pictures_name_is_replaced_not_written_through(stores,
                                                                                   tmp_path):
    """A link named as a picture (`hug_0001.png` -> another store's zarr.json) had the picture
    written over its target, and that store was unreadable (from review; `trainers report
    --out` had the same, mended before)."""
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    out = tmp_path / "pictures"
    out.mkdir()
    for name in ("hug_0001.png", "hug_0001.gif"):
        (out / name).symlink_to(victim)
    result = flowstore_cli("show", stores["uint8"], "hug_0001", "--gif", "--out", out)
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "{}"
    for name in ("hug_0001.png", "hug_0001.gif"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 100


LONG_ID = "writing_on_a_book/writing_on_a_book_long_filename_001.jpg (train)"  # imagefolder's


def test_a_class_folder_of_out_that_is_a_store_is_refused(tmp_path):
    """A videofolder class named like a store (`c.zarr`) put its pictures into a store of that
    name already in --out (only --out itself was checked): `--overwrite` deleted them with it,
    `inspect --bytes` counted them."""
    import shutil

    from flowstore.errors import ParameterError
    from trainers.testing import make_tiny_store

    store = make_tiny_store(tmp_path / "v.zarr", per_class=(1, 0, 0), classes=("c.zarr/x", "y"))
    out = tmp_path / "out"
    shutil.copytree(store, out / "c.zarr")  # a store of that name where a class folder goes
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ParameterError, match=r"the class folder '.*out/c\.zarr' of --out is the "
                                             r"store '.*out/c\.zarr' or lies inside it"):
        _show(store, out, "c.zarr/x_train_0000")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


HEADER = ("flow: hue = direction (wheel), full colour = |flow| >= 0.53 px (99th percentile of "
          "this sample); T = 6 = 3 segments x 2")


@pytest.mark.parametrize("outline", [None, (0, 0, 0)])
@pytest.mark.parametrize("width,text", [(576, HEADER), (96, "highFive_0012 val"),
                                        (96, LONG_ID)])
def test_a_caption_is_shrunk_until_it_fits_its_box(width, text, outline):
    """A segment store's header (`HEADER`) lost its end at 32 px: the shrink was computed
    once, in proportion, and Hershey strokes do not shrink so."""
    from flowstore.show import _text

    canvas = np.full((40, width + 40, 3), 255, np.uint8)  # room to see an overflow
    _text(canvas, text, 4, 30, width=width, colour=(0, 0, 255), outline=outline)
    inked = np.flatnonzero((canvas != 255).any(axis=(0, 2)))
    assert inked.size and inked.max() < width


def test_a_caption_writes_control_characters_as_escapes():
    """An id holding a newline broke its caption in two, the second line cut off (review)."""
    from flowstore.show import _text

    drawn, escaped = (np.full((40, 400, 3), 255, np.uint8) for _ in range(2))
    _text(drawn, "clips/new\nline (val)", 4, 30, width=400)
    _text(escaped, "clips/new\\nline (val)", 4, 30, width=400)
    np.testing.assert_array_equal(drawn, escaped)


def test_a_caption_too_long_at_the_smallest_scale_loses_its_middle_not_its_ends():
    """An image grid's `<class>/<file> (split)` captions ran over each other, none readable."""
    from flowstore.show import fitted_text

    text, scale = fitted_text(LONG_ID, 88)
    assert scale < 0.21 and "..." in text and len(text) < len(LONG_ID)
    assert text.startswith("writing_") and text.endswith("01.jpg (train)"), text
    assert fitted_text("highFive_0012 val", 88)[0] == "highFive_0012 val"  # (fits: as it is)


def test_a_store_with_nothing_to_draw_is_one_line_and_makes_no_folder(tmp_path):
    """A store of frames alone (no flow, no images: made with other tools, a tvhi store to
    flowstore, which writes flow into every one: damaged), and one no sample of which is built
    yet, have no picture to draw."""
    from trainers.testing import make_tiny_store

    frames_only = make_tiny_store(tmp_path / "frames.zarr", per_class=(1, 0, 0),
                                  arrays=("middle_frame", "frames"))
    assert assert_one_line_error(flowstore_cli(
        "show", frames_only, "--out", tmp_path / "out")) == (
        f"error: store {str(frames_only)!r} holds neither flow nor images (it has "
        f"frames, middle_frame): the store is damaged (store {str(frames_only)!r} says dataset "
        f"'tvhi' but lacks array(s) flow); rebuild it with --overwrite")
    unbuilt = make_tiny_store(tmp_path / "unbuilt.zarr", per_class=(1, 0, 0),
                              not_done=range(4))
    assert assert_one_line_error(flowstore_cli("show", unbuilt, "--out", tmp_path / "out")) == (
        f"error: store {str(unbuilt)!r} has no built sample to show")
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line(stores, tmp_path, monkeypatch):
    unknown = flowstore_cli("show", stores["float16"], "no_such_0001", "--out", tmp_path / "x")
    assert "no_such_0001" in assert_one_line_error(unknown)
    # the store named as given (it was its absolute path), as every other command names it
    monkeypatch.chdir(stores["float16"].parent)
    relative = flowstore_cli("show", "float16.zarr", "no_such_0001", "--out", tmp_path / "x")
    assert "in store 'float16.zarr'" in assert_one_line_error(relative)
    missing = flowstore_cli("show", tmp_path / "missing.zarr", "--out", tmp_path / "x")
    assert "missing.zarr" in assert_one_line_error(missing)
    zero = flowstore_cli("show", stores["float16"], "--out", tmp_path / "x", "--per-class", "0")
    assert "--per-class" in assert_one_line_error(zero)
    # the options of a random choice, given with ids, were ignored without a word (review)
    for options, given in ((("--per-class", "3"), "--per-class chooses"),
                           (("--seed", "0"), "--seed chooses"),
                           (("--per-class", "3", "--seed", "1"), "--per-class and --seed choose")):
        with_ids = flowstore_cli("show", stores["float16"], "hug_0001", *options,
                                 "--out", tmp_path / "x")
        assert assert_one_line_error(with_ids) == (
            f"error: {given} samples at random: not with sample ids, which are drawn as named")
    assert not (tmp_path / "x").exists()
    # pictures never go into the store they show (nor over it)
    before = sorted(p.relative_to(stores["float16"]) for p in stores["float16"].rglob("*"))
    for out in ("float16.zarr/pictures", "float16.zarr/pictures/nested", "float16.zarr"):
        inside = flowstore_cli("show", "float16.zarr", "--out", out)
        assert assert_one_line_error(inside).endswith(
            f"--out {out!r} is the store {str(stores['float16'])!r} or lies inside it; give the "
            f"pictures another folder")
    assert sorted(p.relative_to(stores["float16"])
                  for p in stores["float16"].rglob("*")) == before
    # a picture that cannot be written says why (OpenCV's imwrite said only that it failed)
    (tmp_path / "blocked" / "hug_0001.png").mkdir(parents=True)
    blocked = flowstore_cli("show", "float16.zarr", "hug_0001", "--out", tmp_path / "blocked")
    assert assert_one_line_error(blocked) == (
        f"error: cannot write {str(tmp_path / 'blocked' / 'hug_0001.png')!r}: Is a directory")
    # --out naming a file: "File exists" of the folder asked for (found by review)
    (tmp_path / "afile").write_text("")
    afile = flowstore_cli("show", "float16.zarr", "hug_0001", "--out", tmp_path / "afile")
    assert assert_one_line_error(afile) == (
        f"error: cannot write pictures into {str(tmp_path / 'afile')!r}: it is a file, not a "
        f"folder")
    # nor into another store (its flow array's folder held them, counted as its flow bytes)
    other = stores["uint8"]
    others = sorted(p.relative_to(other) for p in other.rglob("*"))
    inside = flowstore_cli("show", "float16.zarr", "--out", other / "flow")
    assert assert_one_line_error(inside).endswith(
        f"--out {str(other / 'flow')!r} is the store {str(other)!r} or lies inside it; give "
        f"the pictures another folder")
    assert sorted(p.relative_to(other) for p in other.rglob("*")) == others


def test_an_id_that_begins_with_a_dash_is_told_to_go_after_two_dashes(stores, tmp_path):
    """Real ids begin with '-' (a Kinetics clip's YouTube id, 644 of its 19,906 val clips): Click
    takes one for options, "No such option: -X", which named neither the id nor the way round
    it (found by review). The line says both; after '--' the id reaches `show`."""
    kinetics_id = "-XvstEcJxV0_000001_000011"
    as_option = flowstore_cli("show", stores["float16"], kinetics_id, "--out", tmp_path / "x")
    assert assert_one_line_error(as_option) == (
        f"error: No such option: -X (ids that begin with '-' go after '--': ... -- {kinetics_id})")
    after = flowstore_cli("show", stores["float16"], "--out", tmp_path / "x", "--", kinetics_id)
    assert assert_one_line_error(after).startswith(f"error: no sample '{kinetics_id}' in store")
    # (nor a typo of an option, which Click names, nor a command that takes no list of values)
    typo = flowstore_cli("show", stores["float16"], "--outt", tmp_path / "x")
    assert assert_one_line_error(typo) == (
        "error: No such option: --outt (Possible options: --out, --quiet)")
    inspected = flowstore_cli("inspect", stores["float16"], "--bogus")
    assert assert_one_line_error(inspected) == "error: No such option: --bogus"


def test_a_show_that_fails_leaves_no_folder_it_made(stores, tmp_path):
    """A sample whose chunk is lost stopped `show` in one line, but left the --out folder it
    had made (and its parents) behind, empty (found by review); a folder there before stays,
    and so does a picture written before the failure."""
    import shutil

    from tests.conftest import chunk_file

    store = Path(shutil.copytree(stores["float16"], tmp_path / "lost.zarr"))
    with open_store(store) as opened:
        second = opened.read("id").tolist()[1]
    chunk_file(store, "flow", 1).unlink()
    out = tmp_path / "new" / "pictures"
    result = flowstore_cli("show", store, second, "--out", out)
    assert "is missing" in assert_one_line_error(result)
    assert not (tmp_path / "new").exists()
    (tmp_path / "there").mkdir()
    first = flowstore_cli("show", store, "kiss_0001", "--out", tmp_path / "there")
    assert first.returncode == 0, first.stderr
    again = flowstore_cli("show", store, "kiss_0001", second, "--out", tmp_path / "there")
    assert "is missing" in assert_one_line_error(again)
    assert [p.name for p in (tmp_path / "there").iterdir()] == ["kiss_0001.png"]


@pytest.mark.parametrize("lost", ["frames", "middle_frame"])
def test_a_video_store_that_lost_its_frames_is_one_line(stores, tmp_path, lost):
    """A video store without one of the arrays its picture draws was a KeyError traceback."""
    import shutil

    store = Path(shutil.copytree(stores["float16"], tmp_path / "lost.zarr"))
    shutil.rmtree(store / lost)
    result = flowstore_cli("show", store, "--out", tmp_path / "pictures")
    line = assert_one_line_error(result)
    assert f"has flow but no {lost}" in line
    assert line.endswith(f"the store is damaged (store {str(store)!r} says dataset 'tvhi' but "
                         f"lacks array(s) {lost}); rebuild it with --overwrite")
    assert not (tmp_path / "pictures").exists()


def test_a_video_store_that_lost_its_flow_is_said_to_be_damaged(stores, tmp_path):
    """It read as a store of another kind: "holds neither flow nor images", where inspect and
    verify say DAMAGED (found by review)."""
    import shutil

    store = Path(shutil.copytree(stores["float16"], tmp_path / "lost.zarr"))
    shutil.rmtree(store / "flow")
    line = assert_one_line_error(flowstore_cli("show", store, "--out", tmp_path / "pictures"))
    assert line == (f"error: store {str(store)!r} holds neither flow nor images (it has "
                    f"frames, middle_frame): the store is damaged (store {str(store)!r} says "
                    f"dataset 'tvhi' but lacks array(s) flow); rebuild it with --overwrite")


def test_a_sample_asked_twice_is_drawn_and_counted_once(stores, tmp_path):
    result = flowstore_cli("show", stores["float16"], "kiss_0001", "hug_0002", "kiss_0001",
                           "--out", tmp_path / "x")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 picture(s) of 2 sample(s)" in result.stdout  # said 3 of 3, wrote 2
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["hug_0002.png", "kiss_0001.png"]


def test_an_hdf5_store_and_an_unwritable_output(tiny_tvhi_source, tmp_path):
    store = _build(tiny_tvhi_source, tmp_path / "s.h5")
    picture = _png(_show(store, tmp_path / "out", "kiss_0001") / "kiss_0001.png")
    assert picture.shape == (332, 560, 3)
    (tmp_path / "file").write_text("not a folder")
    blocked = flowstore_cli("show", store, "--out", tmp_path / "file")
    assert "cannot write pictures" in assert_one_line_error(blocked)


def _under_a_file_size_limit(limit: int, call):
    """`call()` with this process's file-size limit (`ulimit -f`) at `limit` bytes: a write
    past it fails with EFBIG, as a full disk fails one."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (EFBIG, not a killed process)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        return call()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_picture_whose_write_fails_is_not_left_cut_short(stores, tmp_path):
    """Under `ulimit -f 1` show said why, but left a 1 KiB PNG (and had already truncated an
    earlier picture of the same name); a GIF likewise. Now nothing half-written is left and an
    earlier picture is kept as it was."""
    from flowstore.errors import FlowstoreError
    from flowstore.show import write_gif

    out = _show(stores["float16"], tmp_path / "pictures", "kiss_0001")
    earlier = (out / "kiss_0001.png").read_bytes()
    with pytest.raises(FlowstoreError) as refused:
        _under_a_file_size_limit(1000, lambda: _show(stores["float16"], out, "kiss_0001",
                                                     "hug_0001"))
    assert str(refused.value) == f"cannot write {str(out / 'kiss_0001.png')!r}: File too large"
    assert [p.name for p in out.iterdir()] == ["kiss_0001.png"]
    assert (out / "kiss_0001.png").read_bytes() == earlier
    rng = np.random.default_rng(0)
    sample = {"frames": rng.integers(0, 256, (STEPS, SIZE, SIZE, 3), dtype=np.uint8),
              "flow": rng.normal(size=(STEPS, SIZE, SIZE, 2)).astype(np.float32)}
    with pytest.raises(FlowstoreError, match="cannot write .*a.gif'"):
        _under_a_file_size_limit(1000, lambda: write_gif(out / "a.gif", sample))
    assert [p.name for p in out.iterdir()] == ["kiss_0001.png"]


def test_a_failed_sample_is_said_failed_with_its_reason_and_long_names_are_drawn(
        tiny_tvhi_source, tmp_path):
    """`show` called a sample whose build failed "not built yet (run its build again)", which
    only failed it again; and a picture whose name is legal but within 18 bytes of the 255-byte
    limit was refused ("File name too long": its temporary name was 18 bytes longer)."""
    import shutil

    source = Path(shutil.copytree(tiny_tvhi_source, tmp_path / "source"))
    (source / "hug_0001.avi").write_bytes(b"not a video" * 100)
    store = tmp_path / "t.zarr"
    out = flowstore_cli("build", "tvhi", "--source", source, "--store", store, *TINY_BUILD, "-q")
    assert out.returncode == 1, out.stderr
    line = assert_one_line_error(flowstore_cli("show", store, "hug_0001", "--out",
                                               tmp_path / "x"))
    assert line.startswith(f"error: sample 'hug_0001' of store {str(store)!r} failed to build "
                           f"(cannot open video"), line
    # a sample after it in its split is the one drawn (the split's rows skip the failed one)
    drawn = _show(store, tmp_path / "after", "kiss_0003", "handShake_0001")
    assert sorted(p.name for p in drawn.iterdir()) == ["handShake_0001.png", "kiss_0003.png"]
    from flowstore.files import write_whole

    long = tmp_path / ("x" * 251 + ".png")
    write_whole(long, b"picture")
    assert long.read_bytes() == b"picture" and [p.name for p in tmp_path.glob(".x*")] == []
    # a name that is not UTF-8 (bytes as Python escapes them), cut inside a character too
    odd = tmp_path / (os.fsdecode(b"rep\xffx") + "\u00e9" * 120 + ".html")  # (cut at byte 200)
    write_whole(odd, b"report")
    assert odd.read_bytes() == b"report"


def _video_sample(steps: int, size: int = 16, flow=(1.0, 0.0)) -> dict:
    """A video sample as the reader gives it: `steps` frames and uniform flows `flow` (px)."""
    rng = np.random.default_rng(0)
    return {"id": "hug_0001", "label": 2, "split": "test",
            "middle_frame": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "frames": rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8),
            "flow": np.broadcast_to(np.float32(flow), (steps, size, size, 2)).copy()}


def test_flow_longer_than_the_full_colour_magnitude_is_drawn_in_the_full_colour():
    """Flow beyond `max_magnitude` (1% of a sample's pixels in `show`, whose scale is the 99th
    percentile) is clipped to the full colour of its direction, not wrapped to other hues."""
    from flowstore.flow_image import flow_to_rgb

    directions = np.array([(1, 0), (0, 1), (-1, 0), (0, -1), (0.6, -0.8)], np.float32)
    at_scale = flow_to_rgb(directions * 2.0, max_magnitude=2.0)
    for factor in (1.5, 4.0, 50.0):
        assert (flow_to_rgb(directions * 2.0 * factor, max_magnitude=2.0) == at_scale).all()
    assert (flow_to_rgb(np.zeros((1, 2), np.float32), max_magnitude=2.0) == 255).all()


def test_the_full_colour_magnitude_is_the_99th_percentile_not_a_few_outliers():
    """Documented (README, module docstring): normalizing by the maximum let a few outlier
    pixels (Farneback at the frame border) wash every real motion out to near white."""
    from flowstore.show import flow_scale

    flow = _video_sample(4, size=32, flow=(0.0, 1.5))["flow"]
    flow[0, :2, :2] = (40.0, 0.0)  # 4 outlier pixels of 4096
    assert flow_scale(flow) == pytest.approx(1.5)


def test_a_sample_of_more_steps_than_one_row_draws_every_flow_in_its_own_row():
    """12 steps are two rows of up to 8 (`COLUMNS`): the picture is one row of tiles for the
    middle frame, then two rows of frames each above a row of flows."""
    from flowstore.show import video_picture

    tile = tile_size(16)
    assert video_picture_shape(16, 12) == (44 + tile * 5, 8 * tile)
    picture = video_picture(_video_sample(12), ["a", "b", "c"])
    assert picture.shape == (44 + tile * 5, 8 * tile, 3)
    for step in (7, 8, 11):  # the last of the first row, and the second row's
        top, left = flow_tile_origin(16, 12, step)
        assert (top, left) == (44 + tile * (2 + 2 * (step // 8)), tile * (step % 8))
        assert (picture[top + tile // 2:top + tile, left:left + tile] == (255, 0, 0)).all()


def test_the_gif_draws_the_flow_in_the_colours_of_its_png(tmp_path):
    """Each GIF frame went through one 256-colour palette shared by the video frame and the
    flow picture, mostly the video's colours: on real clips 27% of the saturated flow pixels
    came out another colour, up to 158 levels off, some in hues of another direction (found by
    review). The flow is now drawn in a palette of the coding's own colours."""
    from PIL import Image

    from flowstore.show import gif_frames, write_gif

    steps, size = 3, 64
    rng = np.random.default_rng(0)
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j].astype(np.float32)
    blob = 4.0 * (np.hypot(x, y) < 0.35)[..., None]  # a turning blob on still ground, as real
    flow = np.stack([np.stack([np.cos(a) * x - np.sin(a) * y, np.sin(a) * x + np.cos(a) * y],
                              axis=-1) * blob + 0.05 * rng.normal(size=(size, size, 2))
                     for a in np.linspace(0, 3, steps)]).astype(np.float32)
    sample = {"frames": rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8),
              "flow": flow}  # (frames of noise: 16M colours to compete for a shared palette)
    write_gif(tmp_path / "a.gif", sample)
    wanted = gif_frames(sample)
    tile = wanted[0].shape[1] // 2
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == steps
        for step in range(steps):
            gif.seek(step)
            got = np.asarray(gif.convert("RGB")).astype(int)
            error = np.abs(got - wanted[step])
            # (a shared palette: 63-67 levels off; the coding's: 37-44, its rings 0.2 apart)
            assert error[:tile, tile:].max() <= 50, (step, error[:tile, tile:].max())
            assert error[tile:].max() == 0  # the bar: black on white
            assert np.median(error[:tile, :tile]) <= 16  # the frame (11-12 either way)


def test_the_gif_bar_grows_with_the_step_and_fills_the_width_at_the_last():
    """The bar along the bottom of each GIF frame marks its step: (t + 1) / T of the width."""
    from flowstore.show import GIF_BAR, gif_frames

    frames = gif_frames(_video_sample(4))
    tile = tile_size(16)
    assert len(frames) == 4
    for step, frame in enumerate(frames):
        assert frame.shape == (tile + GIF_BAR, 2 * tile, 3)
        bar = (frame[tile:] == 0).all(axis=(0, 2))
        assert bar.sum() == round(2 * tile * (step + 1) / 4) and bar[:bar.sum()].all(), step
