"""The tuned recipe's augmentations keep frames and flow consistent (issue 16).

Each test states a fact about motion that an augmentation of frames must carry over to their
flow: mirrored frames move mirrored (dx negated), the flow of a crop is the crop of the flow
(Farneback's own flow on the augmented frames is the reference), a resize by f makes every
displacement f times as long, and colour never changes a displacement.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flowstore.reader import colour_jitter, horizontal_flip, random_crop, random_resized_crop

SIZE = 96


def _texture(seed: int = 0) -> np.ndarray:
    """A smooth random grey texture Farneback can track everywhere (uint8, SIZE x SIZE)."""
    noise = np.random.default_rng(seed).random((SIZE // 4, SIZE // 4)).astype(np.float32)
    return np.rint(cv2.resize(noise, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC).clip(0, 1)
                   * 255).astype(np.uint8)


def _zoomed(image: np.ndarray, factor: float) -> np.ndarray:
    """`image` zoomed about its centre: a motion that differs at every position."""
    centre = (SIZE - 1) / 2
    matrix = np.float32([[factor, 0, centre * (1 - factor)], [0, factor, centre * (1 - factor)]])
    return cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def _farneback(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(first, second, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _ids(count: int) -> dict[str, np.ndarray]:
    """The `label` and `id` of a batch of `count` samples, which every augmentation passes on."""
    return {"label": np.zeros(count, np.int64), "id": np.array([f"s{k}" for k in range(count)])}


def _batch() -> dict[str, np.ndarray]:
    """One sample: two RGB frames of a zooming texture and Farneback's flow between them."""
    first = _texture()
    second = _zoomed(first, 1.04)
    frames = np.stack([np.repeat(f[..., None], 3, axis=-1) for f in (first, second)])
    return {"frames": frames[None].copy(), "flow": _farneback(first, second)[None, None].copy(),
            **_ids(1)}


def _flow_of(frames: np.ndarray) -> np.ndarray:
    """Farneback's flow between a sample's two (RGB) frames."""
    return _farneback(frames[0][..., 0], frames[1][..., 0])


def _interior(flow: np.ndarray, margin: int = 16) -> np.ndarray:
    return flow[margin:-margin, margin:-margin]


def test_a_known_motion_flipped_is_the_mirrored_motion_with_dx_negated():
    batch = _batch()
    original = batch["flow"][0, 0].copy()
    flipped = horizontal_flip(batch, np.random.default_rng(0), motion=("flow",), p=1.0)
    expected = original[:, ::-1] * np.float32([-1, 1])
    np.testing.assert_array_equal(flipped["flow"][0, 0], expected)
    # ...and it is the motion Farneback sees in the flipped frames.
    np.testing.assert_allclose(_interior(_flow_of(flipped["frames"][0])), _interior(expected),
                               atol=0.25)


def test_one_motion_feature_named_alone_is_that_feature_not_its_letters():
    """`motion="flow"` was matched by substring: a feature named "f" was negated too."""
    batch = _batch()
    batch["f"] = batch["flow"].copy()
    flipped = horizontal_flip(batch, np.random.default_rng(0), motion="flow", p=1.0)
    np.testing.assert_array_equal(flipped["f"][0, 0, :, ::-1], _batch()["flow"][0, 0])
    np.testing.assert_array_equal(flipped["flow"], flipped["f"] * np.float32([-1, 1]))


@pytest.mark.parametrize("augmentation", [horizontal_flip, random_resized_crop])
def test_the_augmentations_that_move_flow_are_told_which_features_are_motion(augmentation):
    """Without `motion` a flip would mirror the flow and keep dx, a resize keep its vectors'
    length: both silently wrong. So a caller must name the motion features (or `()`)."""
    with pytest.raises(TypeError, match="motion"):
        augmentation(_batch(), np.random.default_rng(0))
    augmentation(_batch(), np.random.default_rng(0), motion=())  # pictures only: allowed


def test_a_crop_of_flow_is_the_flow_of_the_crop():
    batch = _batch()
    cropped = random_crop(batch, np.random.default_rng(3), size=64)
    flow = cropped["flow"][0, 0]
    assert np.abs(flow).max() > 1.0  # a motion that depends on the position: a shifted window fails
    np.testing.assert_allclose(_interior(_flow_of(cropped["frames"][0]), 12), _interior(flow, 12),
                               atol=0.25)


@pytest.mark.parametrize("factor", [1.25, 1.5])
def test_scale_jitter_scales_flow_vectors_by_the_resize_factor(factor):
    batch = _batch()
    original = batch["flow"].copy()
    out = random_resized_crop(batch, np.random.default_rng(1), scale=(factor, factor),
                              motion=("flow",))
    flow = out["flow"][0, 0]
    assert flow.shape == original.shape[2:]  # the batch keeps its shape
    np.testing.assert_allclose(_interior(_flow_of(out["frames"][0])), _interior(flow), atol=0.3)
    # A uniform motion resized by f is f times as long, everywhere.
    uniform = {"flow": np.full((1, 1, 32, 32, 2), [1.5, -0.5], np.float16),
               "label": np.zeros(1, np.int64), "id": np.array(["u"])}
    scaled = random_resized_crop(uniform, np.random.default_rng(2), scale=(factor, factor),
                                 motion=("flow",))["flow"]
    assert scaled.dtype == np.float16
    resized_side = round(32 * factor)  # the factor a 32 px side was actually resized by
    np.testing.assert_allclose(scaled.astype(np.float32).reshape(-1, 2),
                               np.tile(np.float32([1.5, -0.5]) * resized_side / 32,
                                       (32 * 32, 1)), rtol=1e-3)


def test_scale_jitter_scales_each_motion_component_by_its_own_axis_factor():
    """A window that is not square is resized by a factor per axis, each side rounded to whole
    pixels: dx is scaled by the width's factor, dy by the height's."""
    uniform = {"flow": np.ones((1, 1, 6, 32, 2), np.float32), **_ids(1)}
    flow = random_resized_crop(uniform, np.random.default_rng(0), scale=(1.25, 1.25),
                               motion=("flow",))["flow"]
    np.testing.assert_allclose(flow[..., 0], 40 / 32, rtol=1e-5)  # 32 px resized to 40
    np.testing.assert_allclose(flow[..., 1], 8 / 6, rtol=1e-5)  # 6 px to 8 (7.5 rounded)


def test_scale_jitter_draws_its_window_anywhere_in_the_enlarged_picture():
    """The window of the original size lies anywhere in the enlarged picture, not only at its
    top left corner: a picture whose channels hold each pixel's row and column shows where."""
    rows, columns = np.mgrid[0:16, 0:16].astype(np.float32)
    picture = np.stack([rows, columns], axis=-1)
    batch = {"image": np.repeat(picture[None], 32, axis=0), **_ids(32)}
    out = random_resized_crop(batch, np.random.default_rng(5), scale=(2.0, 2.0), motion=())
    corner = out["image"][:, 0, 0]  # the window's top left, in the original's coordinates
    assert corner[:, 0].min() < 1 and corner[:, 0].max() > 5  # windows from top to bottom
    assert corner[:, 1].min() < 1 and corner[:, 1].max() > 5  # and from left to right


def _coordinates(side: int, count: int) -> dict[str, np.ndarray]:
    """`count` samples of a picture whose two channels hold each pixel's row and column."""
    rows, columns = np.mgrid[0:side, 0:side].astype(np.float32)
    return {"image": np.repeat(np.stack([rows, columns], axis=-1)[None], count, axis=0),
            **_ids(count)}


@pytest.mark.parametrize("size", [(3, 3), (6, 2), (2, 6), (8, 8)])
def test_random_crop_draws_every_window_of_the_size_asked(size):
    """Every window of the size lies within reach, the last one too, a (height, width) that is
    not square included, and a crop of the whole picture is the picture."""
    height, width = size
    batch = _coordinates(8, 200)
    out = random_crop(batch, np.random.default_rng(0), size=size)["image"]
    assert out.shape == (200, height, width, 2)
    tops, lefts = out[:, 0, 0, 0].astype(int), out[:, 0, 0, 1].astype(int)
    assert set(tops) == set(range(8 - height + 1)) and set(lefts) == set(range(8 - width + 1))
    for row, (top, left) in enumerate(zip(tops, lefts)):
        np.testing.assert_array_equal(out[row], batch["image"][row, top:top + height,
                                                               left:left + width])


def test_scale_jitter_with_one_pixel_of_slack_draws_both_windows():
    """A 16 px side enlarged to 17 leaves the window two places; it took only the first."""
    out = random_resized_crop(_coordinates(16, 64), np.random.default_rng(0),
                              scale=(17 / 16, 17 / 16), motion=())["image"]
    # the window's top left, in the original's rows: about 0 from the first place, 0.9 the next
    assert set((out[:, 0, 0, 0] > 0.5).tolist()) == {False, True}
    assert set((out[:, 0, 0, 1] > 0.5).tolist()) == {False, True}


def test_scale_jitter_rounds_integer_pixels_to_the_nearest():
    """Integer pictures are resized in floats and rounded back, not truncated (which darkened
    uint8 frames by half a level on average)."""
    frames = np.random.default_rng(0).integers(0, 256, (8, 2, 16, 16, 3), dtype=np.uint8)
    as_float = random_resized_crop({"frames": frames.astype(np.float32), **_ids(8)},
                                   np.random.default_rng(1), scale=(1.1, 1.3), motion=())
    as_uint8 = random_resized_crop({"frames": frames.copy(), **_ids(8)},
                                   np.random.default_rng(1), scale=(1.1, 1.3), motion=())
    np.testing.assert_array_equal(as_uint8["frames"],
                                  np.clip(np.rint(as_float["frames"]), 0, 255).astype(np.uint8))


def test_colour_jitter_keeps_float_pixels_within_0_and_1():
    frames = np.random.default_rng(0).random((16, 8, 8, 3)).astype(np.float32)
    out = colour_jitter({"frames": frames, **_ids(16)}, np.random.default_rng(1), strength=0.9)
    assert out["frames"].min() >= 0 and out["frames"].max() == 1.0  # brightened ones clipped


def test_colour_jitter_changes_only_the_brightness_of_a_flat_grey_picture():
    """Contrast scales a picture about its mean and saturation about its grey: a flat grey
    picture has neither, and only its brightness changes, by a factor within the strength."""
    frames = np.full((64, 4, 4, 3), 100, np.uint8)
    out = colour_jitter({"frames": frames, **_ids(64)}, np.random.default_rng(2),
                        strength=0.5)["frames"].reshape(64, -1)
    assert (out == out[:, :1]).all()  # each still flat and grey
    assert out.min() >= 50 and out.max() <= 150 and out.max() - out.min() > 50


def test_colour_jitter_is_its_documented_arithmetic():
    """Each sample's brightness, then its contrast about the mean of all its frames, then its
    saturation about each pixel's grey, clipped and rounded to the nearest integer pixel,
    against the formula written out here (a mutation review found none of the three checked:
    the grey taken along another axis, contrast about each frame's own mean, and pixels
    truncated, half a level darker on average, all passed)."""
    frames = np.random.default_rng(5).integers(0, 256, (6, 3, 8, 8, 3)).astype(np.uint8)
    frames[:, 0] //= 4  # (frames of other means: contrast is about the sample's)
    out = colour_jitter({"frames": frames.copy(), **_ids(6)}, np.random.default_rng(9),
                        strength=0.4)["frames"]
    factors = np.random.default_rng(9).uniform(0.6, 1.4, size=(6, 3))
    for row, (brightness, contrast, saturation) in enumerate(factors):
        pixels = frames[row].astype(np.float64) * brightness
        pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
        grey = pixels.mean(axis=-1, keepdims=True)
        expected = np.rint(np.clip((pixels - grey) * saturation + grey, 0, 255))
        difference = out[row] - expected  # (float32 arithmetic: a level off at a half)
        assert np.abs(difference).max() <= 1 and abs(difference.mean()) < 0.02, row


def test_colour_jitter_changes_frames_and_never_flow():
    batch = _batch()
    frames, flow = batch["frames"].copy(), batch["flow"].copy()
    out = colour_jitter(batch, np.random.default_rng(4), strength=0.4, motion=("flow",))
    assert not np.array_equal(out["frames"], frames)
    np.testing.assert_array_equal(out["flow"], flow)
    # Even a flow feature the caller forgot to name as motion is left alone (2 channels).
    again = _batch()
    colour_jitter(again, np.random.default_rng(4), strength=0.4)
    np.testing.assert_array_equal(again["flow"], flow)


def test_augmentations_refuse_one_sample_and_names_the_batch_lacks():
    """Silent before: `split[i]` (one sample, its T steps on the first axis) had each step
    flipped or cropped apart as if it were a sample, the middle frame left alone; a motion
    name the batch lacks (a renamed feature, a typo) mirrored the flow and kept its dx; a
    segment key it lacks made `segment_views` repeat whole clips K times as "segments"."""
    from flowstore.reader import random_segment, segment_views

    rng = np.random.default_rng(0)
    one = {key: value[0] for key, value in _batch().items()}  # what split[i] gives
    for augment in (lambda b: horizontal_flip(b, rng, motion=("flow",)),
                    lambda b: random_crop(b, rng, size=16),
                    lambda b: random_resized_crop(b, rng, motion=("flow",)),
                    lambda b: colour_jitter(b, rng)):
        with pytest.raises(ValueError, match=r"a batch \(split\[\[i, j\]\].*not one sample"):
            augment(dict(one))
    renamed = {("of" if key == "flow" else key): value for key, value in _batch().items()}
    with pytest.raises(ValueError, match="motion names 'flow', not a feature of the batch "
                                         r"\(it has frames, of\)"):
        horizontal_flip(renamed, rng, motion=("flow",), p=1.0)
    with pytest.raises(ValueError, match="motion names 'flw'"):
        random_resized_crop(_batch(), rng, motion="flw")
    with pytest.raises(ValueError, match="keys names 'flw'"):
        segment_views(_batch(), segments=2, keys=("flw",))
    with pytest.raises(ValueError, match="keys names 'flw'"):
        random_segment(_batch(), rng, segments=2, keys="flw")
    with pytest.raises(ValueError, match="segments must be a positive integer"):
        random_segment(_batch(), rng, segments=0, keys=("frames",))  # (numpy's "high <= 0")
    with pytest.raises(ValueError, match=r"size must be an integer side or \(height, width\), "
                                         r"got 16\.0"):
        random_crop(_batch(), rng, size=16.0)
    side = _batch()["frames"].shape[-2]
    for size in (side + 1, 0, (side, side + 1)):  # (numpy slices a window it lacks shorter)
        with pytest.raises(ValueError, match=rf"crop \d+x\d+ does not fit {side}x{side}"):
            random_crop(_batch(), rng, size=size)
    halved = {**_batch(), "flow": _batch()["flow"][:, :, ::2, ::2]}  # (another size than frames)
    with pytest.raises(ValueError, match="features of different sizes cannot be cropped "
                                         "together"):
        random_crop(halved, rng, size=8)


def test_an_augmentation_after_one_that_made_the_labels_soft_takes_the_batch():
    """A mixup's soft labels, (B, classes), were taken for one sample's: composed before a flip
    (README: an augmentation may change the labels), the flip refused the batch."""
    from flowstore.reader import compose

    def mixup(batch, rng):  # a user's own, as README describes: labels become soft
        return {**batch, "label": np.eye(3, dtype=np.float32)[batch["label"]]}

    rng = np.random.default_rng(0)
    out = compose(mixup, lambda b, r: horizontal_flip(b, r, motion=("flow",), p=1.0))(_batch(), rng)
    assert out["label"].shape == (1, 3)
    np.testing.assert_array_equal(out["flow"][..., 0], -_batch()["flow"][:, :, :, ::-1, 0])


def test_segments_and_frame_views_refuse_a_feature_without_time_axis_and_no_segments():
    """A single image (`middle_frame`, Stanford-40's `image`: (B, H, W, C)) had its rows taken
    for steps: `random_frame` gave one pixel row per image ((2, 32, 3)), `frame_views` B x H
    strips of rows as views ((64, 32, 3)); `segments=split.source.segments` of a store built
    without segments (None) failed as "'<' not supported between NoneType and int"."""
    from flowstore.reader import frame_views, random_frame, random_segment, segment_views

    rng = np.random.default_rng(0)
    batch = {**_batch(), "middle_frame": np.zeros((1, SIZE, SIZE, 3), np.uint8)}
    without_time = (r"keys names 'middle_frame', of shape \(96, 96, 3\) a sample, which has no "
                    r"time axis")
    for view in (lambda b: random_frame(b, rng, keys=("frames", "middle_frame")),
                 lambda b: frame_views(b, keys=("middle_frame",)),
                 lambda b: random_segment(b, rng, segments=1, keys=("middle_frame",)),
                 lambda b: segment_views(b, segments=1, keys="middle_frame")):
        with pytest.raises(ValueError, match=without_time):
            view(dict(batch))
    for segments in (None, 1.0, True, -1):
        for view in (lambda b: random_segment(b, rng, segments=segments, keys=("frames",)),
                     lambda b: segment_views(b, segments=segments, keys=("frames",))):
            with pytest.raises(ValueError, match=r"segments must be a positive integer, the K "
                                                 r"of a store built with --sampling segments "
                                                 r"\(split.source.segments, None for any other "
                                                 rf"store\), got {segments}"):
                view(dict(batch))
    assert random_segment(dict(batch), rng, segments=np.int64(2), keys=("frames",))[
        "frames"].shape == (1, 1, SIZE, SIZE, 3)


def test_augmentations_refuse_a_batch_of_tensors_naming_the_value():
    """A DataLoader's batch (torch tensors, which `_checked`'s own message recommended) failed
    deep inside: "step must be greater than zero", "Cannot interpret 'torch.float16' as a data
    type", no `astype`, an issubdtype TypeError."""
    from flowstore.reader import frame_views, random_frame, random_segment, segment_views

    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    tensors = {key: (value.tolist() if key == "id" else torch.from_numpy(value))
               for key, value in _batch().items()}
    for augment in (lambda b: horizontal_flip(b, rng, motion=("flow",)),
                    lambda b: random_crop(b, rng, size=16),
                    lambda b: random_resized_crop(b, rng, motion=("flow",)),
                    lambda b: colour_jitter(b, rng),
                    lambda b: random_segment(b, rng, segments=2, keys=("frames",)),
                    lambda b: segment_views(b, segments=2, keys=("frames",)),
                    lambda b: random_frame(b, rng, keys=("frames",)),
                    lambda b: frame_views(b, keys=("frames",))):
        with pytest.raises(TypeError, match=r"augmentations take numpy batches, and 'frames' is "
                                            r"a torch.Tensor: augment the split's numpy batch"):
            augment(dict(tensors))
    # one sample is said to be one sample, no longer "a DataLoader's batch" wanted instead
    with pytest.raises(ValueError, match=r"not one sample") as refused:
        horizontal_flip({key: value[0] for key, value in _batch().items()}, rng, motion=())
    assert "DataLoader" not in str(refused.value)


@pytest.mark.parametrize("call, message", [
    (lambda b, rng: random_resized_crop(b, rng, motion=("flow",), scale=1.2),
     r"scale must be a range \(low, high\) of factors, 1 <= low <= high, got 1\.2"),
    (lambda b, rng: random_resized_crop(b, rng, motion=("flow",), scale=(1.0, float("inf"))),
     r"scale must be a range .*got \(1\.0, inf\)"),
    (lambda b, rng: random_resized_crop(b, rng, motion=("flow",), scale=("1", "2")),
     r"scale must be a range .*got \('1', '2'\)"),
    (lambda b, rng: random_resized_crop(b, rng, motion=("flow",), scale=(1.2, 1.1)),
     r"scale must be a range .*got \(1\.2, 1\.1\)"),
    # a zoom out (below 1) was clamped to 1 for every sample: no augmentation, no word
    (lambda b, rng: random_resized_crop(b, rng, motion=("flow",), scale=(0.5, 1.0)),
     r"scale must be a range .*1 <= low <= high, got \(0\.5, 1\.0\)"),
    # a bool is no probability (True flipped every sample)
    (lambda b, rng: horizontal_flip(b, rng, motion=("flow",), p=True),
     r"p must be a number in \[0, 1\], got True"),
    (lambda b, rng: horizontal_flip(b, rng, motion=("flow",), p="0.5"),
     r"p must be a number in \[0, 1\], got '0\.5'"),
    (lambda b, rng: horizontal_flip(b, rng, motion=("flow",), p=2),
     r"p must be a number in \[0, 1\], got 2"),
    (lambda b, rng: colour_jitter(b, rng, strength=float("nan")),
     r"strength must be a number in \[0, 1\], got nan"),
    (lambda b, rng: colour_jitter(b, rng, strength=(0.1, 0.2)),
     r"strength must be a number in \[0, 1\], got \(0\.1, 0\.2\)"),
])
def test_augmentation_arguments_are_refused_naming_them(call, message):
    """`scale=1.2` failed as "cannot unpack non-iterable float object"; a p or strength that is
    not a number in [0, 1] failed inside numpy, or (p=2, strength=1.5) ran as something else."""
    with pytest.raises(ValueError, match=message):
        call(_batch(), np.random.default_rng(0))


def test_augmentation_arguments_numpy_computed_are_taken():
    """What numpy computes (a range as an array, a 0-d p) was taken before the arguments were
    checked, and is still: the check refused `np.array([1.0, 1.2])` and `np.array(0.5)`."""
    rng = np.random.default_rng(0)
    out = random_resized_crop(_batch(), rng, motion=("flow",), scale=np.array([1.0, 1.2]))
    assert out["flow"].shape == _batch()["flow"].shape
    horizontal_flip(_batch(), rng, motion=("flow",), p=np.array(0.5))
    colour_jitter(_batch(), rng, strength=np.float32(0.2))
