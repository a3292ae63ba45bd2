"""Flow encodings: float16, float32, and uint8 quantized to +-bound (MMAction2/denseflow style)."""

from __future__ import annotations

import numpy as np
import pytest

from flowstore.build import BuildConfig, build
from flowstore.errors import ParameterError, StoreMismatchError
from flowstore.flow_encoding import QUANTIZATION, decode_flow, encode_flow
from flowstore.params import VideoParams, to_dict
from flowstore.store import open_store


UINT8 = {"flow_dtype": "uint8", "flow_bound": 20.0, "flow_quantization": QUANTIZATION}


def test_uint8_round_trip_error_is_at_most_half_a_step_and_saturates():
    rng = np.random.default_rng(0)
    flow = rng.uniform(-25, 25, size=(1000, 2)).astype(np.float32)
    stored = encode_flow(flow, "uint8", bound=20.0)
    assert stored.dtype == np.uint8 and stored.min() == 0 and stored.max() == 254  # 255 bins
    back = decode_flow(stored, UINT8)
    inside = np.abs(flow) <= 20
    step = 40.0 / 255
    assert np.abs(back[inside] - flow[inside]).max() <= step / 2 + 1e-5
    # saturated values decode to the outermost bins' centres
    np.testing.assert_allclose(back[flow > 20], 20.0 - step / 2, atol=1e-5)
    np.testing.assert_allclose(back[flow < -20], -20.0 + step / 2, atol=1e-5)


def test_uint8_keeps_still_pixels_exactly_still_and_is_symmetric():
    """Zero is a bin centre: no bias on still pixels; and -x decodes to minus what x does."""
    still = decode_flow(encode_flow(np.zeros(4, np.float32), "uint8", 20.0), UINT8)
    np.testing.assert_array_equal(still, 0.0)
    flow = np.random.default_rng(1).uniform(-19.9, 19.9, size=1000).astype(np.float32)
    flow = flow[np.abs(np.modf((flow + 20) * 255 / 40)[0] - 0.0) > 1e-3]  # off bin edges
    np.testing.assert_allclose(decode_flow(encode_flow(-flow, "uint8", 20.0), UINT8),
                               -decode_flow(encode_flow(flow, "uint8", 20.0), UINT8), atol=1e-5)


def test_stores_from_before_flow_quantization_still_decode_as_written():
    old = {"flow_dtype": "uint8", "flow_bound": 20.0}  # 0..255, rounded: the first scheme
    np.testing.assert_allclose(decode_flow(np.array([0, 255], np.uint8), old), [-20.0, 20.0])
    with pytest.raises(ValueError, match="unknown uint8 flow quantization"):
        decode_flow(np.zeros(1, np.uint8), {**old, "flow_quantization": "something-else"})


def test_uint8_params_record_the_quantization_and_float_params_do_not():
    assert to_dict(VideoParams(flow_dtype="uint8"))["flow_quantization"] == QUANTIZATION
    assert "flow_quantization" not in to_dict(VideoParams())  # float16 fingerprints unchanged


def test_float_encodings_are_plain_casts():
    flow = np.array([1.23456, -7.5], np.float32)
    assert encode_flow(flow, "float16", 20.0).dtype == np.float16
    np.testing.assert_array_equal(decode_flow(encode_flow(flow, "float32", 20.0), {"flow_dtype": "float32"}), flow)


def test_bad_bound_is_rejected():
    with pytest.raises(ParameterError, match="flow_bound"):
        VideoParams(flow_dtype="uint8", flow_bound=0)


def test_uint8_store_is_a_quarter_of_float32_and_decodes_close(tiny_tvhi_source, tmp_path):
    stores = {}
    for dtype in ("float32", "uint8"):
        path = tmp_path / f"{dtype}.zarr"
        build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=path, progress=False,
                          params=VideoParams(size=32, steps=4, flow_dtype=dtype), max_per_split=1))
        stores[dtype] = open_store(path)
    f32, u8 = stores["float32"], stores["uint8"]
    assert u8.attrs["params"]["flow_bound"] == 20.0 and u8.read("flow").dtype == np.uint8
    assert u8.info("flow").nbytes * 4 == f32.info("flow").nbytes
    done = f32.read("done")
    exact = f32.read("flow")[done]
    decoded = decode_flow(u8.read("flow")[done], u8.attrs["params"])
    assert np.abs(decoded - np.clip(exact, -20, 20)).max() <= 40 / 255 / 2 + 1e-4
    assert f32.attrs["fingerprint"] != u8.attrs["fingerprint"]


def test_a_uint8_store_quantized_the_old_way_is_never_resumed_into(tiny_tvhi_source, tmp_path):
    path = tmp_path / "old.zarr"
    config = BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=path, progress=False,
                         params=VideoParams(size=32, steps=4, flow_dtype="uint8"),
                         max_per_split=1)
    build(config)
    with open_store(path, "r+") as store:  # what a store from before `flow_quantization` holds
        params = store.attrs["params"]
        del params["flow_quantization"]
        store.update_attrs({"params": params})
        store.write("done", slice(None), np.zeros(store.num_samples, bool))
    with pytest.raises(StoreMismatchError, match="flow_quantization"):
        build(config)
    with open_store(path) as store:
        assert not store.read("done").any()  # nothing written into it
