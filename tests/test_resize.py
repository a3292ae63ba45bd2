"""`--resize`: how a frame or image becomes S x S (`stretch`, the report's, or `center-crop`).

A centre crop keeps the aspect: the largest centred square, resized. The tests draw frames whose
centre and sides differ in colour, so "the sides were dropped" is visible in the pixels, and
hold the extraction against the independent reference (`tests/reference.py`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import flowstore
from flowstore.errors import ParameterError
from flowstore.extraction._cv import cv2, resize_rgb
from flowstore.extraction.image import extract_image
from flowstore.extraction.video import extract_video
from flowstore.params import ImageParams, VideoParams, from_dict, to_dict
from tests.conftest import assert_one_line_error, flowstore_cli
from tests.reference import reference_image, reference_tvhi

GREEN, RED = (0, 200, 0), (200, 0, 0)


def _banded(height: int, width: int) -> np.ndarray:
    """RGB: a green centred square of side min(h, w), red outside it."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = RED
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    rgb[top:top + side, left:left + side] = GREEN
    return rgb


@pytest.mark.parametrize("height,width", [(72, 96), (96, 72), (61, 80), (50, 50)])
def test_center_crop_keeps_the_centred_square_and_stretch_the_whole_frame(height, width):
    bgr = cv2.cvtColor(_banded(height, width), cv2.COLOR_RGB2BGR)
    cropped = resize_rgb(bgr, 16, "center-crop")
    assert cropped.shape == (16, 16, 3)
    assert (cropped == GREEN).all()  # no red side left
    stretched = resize_rgb(bgr, 16, "stretch")
    if height != width:
        assert (stretched == RED).all(axis=-1).any()  # the sides squeezed in
    else:
        np.testing.assert_array_equal(stretched, cropped)
    with pytest.raises(ValueError, match="unknown resize"):
        resize_rgb(bgr, 16, "squash")


def test_a_center_cropped_clip_is_the_reference_extraction_of_its_centre(tiny_tvhi_source):
    path = tiny_tvhi_source / "hug_0001.avi"  # 96 x 72
    got = extract_video(path, VideoParams(size=24, steps=3, resize="center-crop"))
    want = reference_tvhi(path, size=24, steps=3, resize="center-crop")
    np.testing.assert_array_equal(got.middle_frame, want["middle_frame"])
    np.testing.assert_array_equal(got.frames, want["frames"])
    np.testing.assert_array_equal(got.flow.view(np.uint16),
                                  want["flow"].astype(np.float16).view(np.uint16))
    # and it is not the stretched extraction
    stretched = extract_video(path, VideoParams(size=24, steps=3))
    assert not np.array_equal(got.middle_frame, stretched.middle_frame)


def test_a_center_cropped_image_is_the_reference_of_its_centre(tmp_path):
    path = tmp_path / "tall.png"
    rgb = _banded(90, 40)
    rgb[::7] //= 2  # some texture, so that the resize has something to average
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    got = extract_image(path, ImageParams(size=20, resize="center-crop"))
    np.testing.assert_array_equal(got, reference_image(path, 20, resize="center-crop"))
    assert not (got == RED).all(axis=-1).any()


def test_resize_is_recorded_only_away_from_the_default():
    """Stores built before `--resize` existed keep their parameters, so their fingerprint."""
    for params_type in (VideoParams, ImageParams):
        assert "resize" not in to_dict(params_type())
        assert to_dict(params_type(resize="stretch")) == to_dict(params_type())
        cropped = to_dict(params_type(resize="center-crop"))
        assert cropped["resize"] == "center-crop"
        assert from_dict(params_type, cropped) == params_type(resize="center-crop")
        with pytest.raises(ParameterError,
                           match="--resize must be one of stretch, center-crop, got 'fit'"):
            params_type(resize="fit")


def _build(source, store, *extra):
    return flowstore_cli("build", "tvhi", "--source", source, "--store", store, "--size", "24",
                         "--steps", "2", "--workers", "1", "-q", *extra)


def test_a_center_crop_store_records_it_and_never_mixes_with_a_stretched_one(tiny_tvhi_source,
                                                                            tmp_path):
    stretched, cropped = tmp_path / "stretched.zarr", tmp_path / "cropped.zarr"
    assert _build(tiny_tvhi_source, stretched).returncode == 0
    done = _build(tiny_tvhi_source, cropped, "--resize", "center-crop")
    assert done.returncode == 0, done.stderr
    fingerprints = {}
    for store, resize in ((stretched, "stretch"), (cropped, "center-crop")):
        with flowstore.open(store) as dataset:
            assert dataset.params.get("resize", "stretch") == resize
            fingerprints[resize] = dataset.fingerprint
            test = dataset.split("test", features=("middle_frame",))
            sample = next(test[i] for i in range(len(test)) if test[i]["id"] == "hug_0001")
        want = reference_tvhi(tiny_tvhi_source / "hug_0001.avi", size=24, steps=2,
                              resize=resize)["middle_frame"]
        np.testing.assert_array_equal(sample["middle_frame"], want)
    assert fingerprints["stretch"] != fingerprints["center-crop"]
    shown = flowstore_cli("inspect", cropped)
    assert '"resize": "center-crop"' in shown.stdout

    # The other resize into an existing store is refused in one line, the store untouched.
    before = json.dumps(sorted(p.name for p in stretched.rglob("*")))
    refused = _build(tiny_tvhi_source, stretched, "--resize", "center-crop")
    assert ("built with other parameters (resize: store 'stretch' (the default) vs asked "
            "'center-crop')") in assert_one_line_error(refused)  # (was "store (not recorded)")
    assert json.dumps(sorted(p.name for p in stretched.rglob("*"))) == before
    # Spelling out the default resumes the stretched store.
    assert _build(tiny_tvhi_source, stretched, "--resize", "stretch").returncode == 0


@pytest.mark.parametrize("command", ["build", "estimate"])
def test_a_bad_resize_is_one_line(tiny_tvhi_source, tmp_path, command):
    store = ["--store", tmp_path / "x.zarr"] if command == "build" else []
    result = flowstore_cli(command, "tvhi", "--source", tiny_tvhi_source, *store,
                           "--resize", "fit")
    assert ("--resize must be one of stretch, center-crop, got 'fit'"
            in assert_one_line_error(result))
    assert not (tmp_path / "x.zarr").exists()
