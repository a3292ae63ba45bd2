"""`--flow farneback|tvl1|dis` and `--flow-param`: each algorithm's stored flow is exactly a
direct OpenCV call with the parameters the store records; the algorithm is part of a store's
identity (resume refused, verify --repair re-extracts with it); bad parameters are one line."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zarr

from flowstore.build import BuildConfig, build
from flowstore.errors import ParameterError
from flowstore.extraction._cv import cv2
from flowstore.extraction.flow import flow_object, optical_flow
from flowstore.params import (FLOW_METHODS, MAX_FLOW_BOUND, MIN_FLOW_BOUND, DISParams,
                              FarnebackParams, ImageParams, TVL1Params,
                              VideoParams, canonical_json, fingerprint, flow_from_options,
                              from_dict, to_dict)
import flowstore
from flowstore.store import open_store
from tests.conftest import assert_one_line_error, flowstore_cli
from tests.reference import reference_tvhi

#: DIS's medium preset needs frames of at least 46 px (DISParams.min_size); 48 fits all three.
SIZE, STEPS = 48, 2


def _build(source, store, flow, **kwargs):
    """Two worker threads: each computes with its own OpenCV object, alongside the other."""
    params = VideoParams(size=SIZE, steps=STEPS, flow_dtype="float32", flow=flow)
    result = build(BuildConfig(dataset="tvhi", source=source, store=store, params=params,
                               progress=False, workers=2, max_per_split=1, **kwargs))
    assert result.ok, result
    return store


def _direct_call(recorded: dict):
    """flow(gray_a, gray_b) made straight from OpenCV with a store's recorded `params`, written
    here without flowstore's code, one fresh OpenCV object per pair."""
    method = recorded.get("flow_method", "farneback")
    p = recorded[method]
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, **p)
    if method == "tvl1":
        return lambda a, b: cv2.optflow.DualTVL1OpticalFlow_create(
            tau=p["tau"], lambda_=p["lambda_"], theta=p["theta"], nscales=p["nscales"],
            warps=p["warps"], epsilon=p["epsilon"], innnerIterations=p["inner_iterations"],
            outerIterations=p["outer_iterations"], scaleStep=p["scale_step"], gamma=p["gamma"],
            medianFiltering=p["median_filtering"]).calc(a, b, None)
    assert method == "dis"

    def dis(a, b):
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        for name, value in p.items():
            setter = "set" + "".join(word.capitalize() for word in name.split("_"))
            getattr(flow, setter)(value)
        return flow.calc(a, b, None)
    return dis


#: OpenCV with no arguments: how MMAction2's flow_extraction runs TV-L1, and DIS's medium preset.
OPENCV_DEFAULTS = {
    "farneback": lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 5, 3, 5, 1.2, 0),
    "tvl1": lambda a, b: cv2.optflow.DualTVL1OpticalFlow_create().calc(a, b, None),
    "dis": lambda a, b: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(
        a, b, None),
}


def _stored_equals(store, source, flow) -> None:
    with open_store(store) as s:
        ids, done, stored = s.read("id").tolist(), s.read("done"), s.read("flow")
    assert done.sum() == 3
    for index in np.flatnonzero(done):
        want = reference_tvhi(source / f"{ids[index]}.avi", SIZE, STEPS, "float32", flow=flow)
        np.testing.assert_array_equal(stored[index], want["flow"])


@pytest.mark.parametrize("method", ["farneback", "tvl1", "dis"])
def test_default_flow_is_opencvs_own_defaults(method, tiny_tvhi_source, tmp_path):
    store = _build(tiny_tvhi_source, tmp_path / "s.zarr", flow_from_options(method))
    _stored_equals(store, tiny_tvhi_source, OPENCV_DEFAULTS[method])


@pytest.mark.parametrize("method,assignments", [
    ("farneback", ["winsize=9", "levels=2"]),
    ("tvl1", ["warps=3", "lambda_=0.3", "median_filtering=3", "nscales=3"]),
    ("dis", ["patch_stride=4", "finest_scale=0", "use_spatial_propagation=false"]),
])
def test_stored_flow_is_a_direct_opencv_call_with_the_recorded_params(
        method, assignments, tiny_tvhi_source, tmp_path):
    store = _build(tiny_tvhi_source, tmp_path / "s.zarr", flow_from_options(method, assignments))
    with open_store(store) as s:
        recorded = s.attrs["params"]
    assert recorded.get("flow_method", "farneback") == method
    for assignment in assignments:  # what was asked is what is recorded
        name, value = assignment.split("=")
        assert str(recorded[method][name]).lower() == value
    _stored_equals(store, tiny_tvhi_source, _direct_call(recorded))


def test_defaults_are_opencvs():
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    assert TVL1Params() == TVL1Params(
        tau=tvl1.getTau(), lambda_=tvl1.getLambda(), theta=tvl1.getTheta(),
        nscales=tvl1.getScalesNumber(), warps=tvl1.getWarpingsNumber(),
        epsilon=tvl1.getEpsilon(), inner_iterations=tvl1.getInnerIterations(),
        outer_iterations=tvl1.getOuterIterations(), scale_step=tvl1.getScaleStep(),
        gamma=tvl1.getGamma(), median_filtering=tvl1.getMedianFiltering())
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for name, value in to_dict(DISParams()).items():
        getter = "get" + "".join(word.capitalize() for word in name.split("_"))
        assert getattr(dis, getter)() == pytest.approx(value), name


def _texture(seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (10, 10, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255) \
        .astype(np.uint8)


@pytest.mark.parametrize("flow", [TVL1Params(), DISParams(finest_scale=0)])
def test_one_flow_object_per_thread_reused_without_carrying_state(flow):
    """Reuse (object made once per thread) gives what a fresh object gives, in any order and
    from two threads at once; each thread has its own object."""
    pairs = [(_texture(i), np.roll(_texture(i), i % 3 + 1, axis=1)) for i in range(4)]
    from flowstore.extraction.flow import make_flow_object

    def fresh(a, b):
        return make_flow_object(flow).calc(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
                                           cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)

    want = [fresh(a, b) for a, b in pairs]
    first = flow_object(flow)
    got = [optical_flow(a, b, flow) for a, b in pairs + pairs[::-1]]
    assert flow_object(flow) is first
    for k, result in enumerate(got):
        np.testing.assert_array_equal(result, want[k if k < 4 else 7 - k])

    objects, results = {}, {}

    def work(name):
        objects[name] = flow_object(flow)
        results[name] = [optical_flow(a, b, flow) for a, b in pairs * 3]

    threads = [threading.Thread(target=work, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert objects["a"] is not objects["b"] and first not in objects.values()
    for name in "ab":
        for k, result in enumerate(results[name]):
            np.testing.assert_array_equal(result, want[k % 4])


def test_farneback_stores_keep_their_recorded_params_and_fingerprints():
    """Stores built before the choice of algorithm existed still resume: the default records
    exactly what they recorded, and hashes to the same fingerprint."""
    recorded = canonical_json(to_dict(VideoParams()))
    assert recorded == (
        '{"decoder_threads":1,"extraction":"1","farneback":{"flags":0,"iterations":3,"levels":3,'
        '"poly_n":5,"poly_sigma":1.2,"pyr_scale":0.5,"winsize":5},"flow_bound":20.0,'
        '"flow_dtype":"float16","size":224,"steps":16}')
    assert fingerprint(dataset="tvhi", params=to_dict(VideoParams()),
                       source_files={"hug_0001.avi": 123}) == \
        "b864f92d8b457a24b5f9904b28dc9acdba9027d76ee1150c9102485434b58cc2"
    for flow in (TVL1Params(), DISParams(), FarnebackParams(winsize=7)):
        params = VideoParams(flow=flow)
        assert from_dict(VideoParams, to_dict(params)) == params
        assert fingerprint(dataset="tvhi", params=to_dict(params), source_files={}) != \
            fingerprint(dataset="tvhi", params=to_dict(VideoParams()), source_files={})
    assert to_dict(VideoParams(flow=TVL1Params()))["flow_method"] == "tvl1"
    assert "farneback" not in to_dict(VideoParams(flow=DISParams()))
    # 1 and 1.0 are one value: recorded (and fingerprinted) alike; -0 and 0 too
    assert to_dict(VideoParams(flow=TVL1Params(lambda_=1))) == \
        to_dict(VideoParams(flow=TVL1Params(lambda_=1.0)))
    assert json.dumps(to_dict(VideoParams(flow=TVL1Params(gamma=-0.0)))) == \
        json.dumps(to_dict(VideoParams(flow=TVL1Params(gamma=0))))
    with pytest.raises(ParameterError, match="flow_method 'raft' is unknown"):
        from_dict(VideoParams, {**to_dict(VideoParams()), "flow_method": "raft"})


@pytest.mark.parametrize("make,match", [
    (lambda: TVL1Params(tau=0), r"tvl1 tau must be in \(0, 0.25\], got 0"),
    (lambda: TVL1Params(warps=0), "tvl1 warps must be an integer >= 1, got 0"),
    (lambda: TVL1Params(nscales=2.5), "tvl1 nscales must be an integer in 1..32, got 2.5"),
    (lambda: TVL1Params(scale_step=1.0), r"tvl1 scale_step must be in \(0, 1\)"),
    # OpenCV asserted on a pyramid level of 0 px: every sample failed as a bug in flowstore
    (lambda: VideoParams(size=32, flow=TVL1Params(scale_step=0.01)),
     "tvl1 scale_step 0.01 shrinks a 32 px frame to a pyramid level of 0 px"),
    (lambda: VideoParams(size=224, flow=TVL1Params(scale_step=0.002)), "level of 0 px"),
    (lambda: TVL1Params(warps=3_000_000_000),
     r"tvl1 warps must be an integer in 1..2147483647 \(a C int, what OpenCV takes\)"),
    (lambda: FarnebackParams(winsize=2**31 - 1), "winsize must be an integer in 1..10000000"),
    (lambda: VideoParams(flow_dtype="uint8", flow_bound=1e39),
     r"flow_bound must be a number of pixels in \[0.001, 1e\+38\], got 1e\+39"),
    # (the encoding's scale overflowed float32: a still pixel stored as 254; from review)
    (lambda: VideoParams(flow_dtype="uint8", flow_bound=1e-37),
     r"flow_bound must be a number of pixels in \[0.001, 1e\+38\], got 1e-37"),
    (lambda: TVL1Params(median_filtering=7), "median_filtering must be 1 \\(off\\), 3 or 5"),
    (lambda: TVL1Params(epsilon=float("nan")), "tvl1 epsilon must be > 0, got nan"),
    (lambda: DISParams(patch_stride=9), "dis patch_stride must be an integer in 1..8, got 9"),
    (lambda: DISParams(use_mean_normalization=1), "must be true or false, got 1"),
    (lambda: DISParams(variational_refinement_alpha=-1), "alpha must be >= 0, got -1"),
    (lambda: VideoParams(size=32, flow=DISParams()), "dis needs frames of at least 46 px"),
    (lambda: VideoParams(size=16, flow=DISParams(patch_size=12, finest_scale=0)),
     "at least 17 px"),
    (lambda: VideoParams(flow="tvl1"), "flow must be the parameters of one of"),
])
def test_parameters_are_validated(make, match):
    with pytest.raises(ParameterError, match=match):
        make()


def test_the_limits_of_size_and_flow_bound_are_inclusive():
    """--size 4096 and --flow-bound 1e38 (MAX_FLOW_BOUND) are the largest taken; one above
    each is refused. --flow-bound 1e-3 (MIN_FLOW_BOUND) is the smallest, and encodes as it
    should: 0 px to the centre code, +-bound to the ends."""
    from flowstore.flow_encoding import encode_flow

    smallest = VideoParams(flow_dtype="uint8", flow_bound=MIN_FLOW_BOUND).flow_bound
    assert encode_flow(np.array([0.0, -smallest, smallest], np.float32), "uint8",
                       smallest).tolist() == [127, 0, 254]
    with pytest.raises(ParameterError, match="flow_bound must be a number of pixels"):
        VideoParams(flow_dtype="uint8", flow_bound=np.nextafter(MIN_FLOW_BOUND, 0))
    assert VideoParams(size=4096).size == ImageParams(size=4096).size == 4096
    for params in (VideoParams, ImageParams):
        with pytest.raises(ParameterError, match="size must be an integer in 8..4096, got 4097"):
            params(size=4097)
    bound = VideoParams(flow_dtype="uint8", flow_bound=MAX_FLOW_BOUND).flow_bound
    assert bound == MAX_FLOW_BOUND
    with pytest.raises(ParameterError, match="flow_bound must be a number of pixels"):
        VideoParams(flow_dtype="uint8", flow_bound=np.nextafter(MAX_FLOW_BOUND, np.inf))


@pytest.mark.parametrize("size, scale_step, nscales", [
    (8, 0.0625, 5), (8, 0.05, 5), (32, 0.01, 5), (224, 0.002, 5), (8, 0.1, 5), (16, 0.05, 5),
    (32, 0.0625, 5), (224, 0.01, 5), (32, 0.05, 5), (64, 0.02, 5),
    (512, 0.03125, 3),  # a level of exactly 16 px goes on to the next (512 -> 16 -> 0): fails
])
def test_tvl1_empty_level_is_where_opencv_fails(size, scale_step, nscales):
    """`empty_level` says exactly where OpenCV's TV-L1 asserts on a pyramid level of 0 px, and
    no more: scale steps that compute (0.05 at 32 px) stay legal, as stores built with them."""
    params = TVL1Params(scale_step=scale_step, nscales=nscales, warps=1, outer_iterations=1,
                        inner_iterations=2)
    frames = [_texture(1, size), np.roll(_texture(1, size), 1, axis=1)]
    try:
        optical_flow(*frames, params)
        failed = False
    except cv2.error:
        failed = True
    assert params.empty_level(size) == failed


def test_dis_min_size_is_where_opencv_starts_to_work():
    """Frames one pixel smaller than `min_size` make OpenCV fail (or read outside its pyramid);
    at `min_size` it computes."""
    for params in (DISParams(), DISParams(finest_scale=0), DISParams(patch_size=12,
                                                                     finest_scale=0)):
        size = params.min_size()
        VideoParams(size=size, flow=params)
        frames = [_texture(1, size), np.roll(_texture(1, size), 1, axis=1)]
        assert np.isfinite(optical_flow(*frames, params)).all()
    assert DISParams().coarsest_scale(45) == 0 and DISParams().coarsest_scale(46) == 1


@pytest.mark.parametrize("args,message", [
    (["--flow", "tvl1", "--flow-param", "winsize=9"],
     "--flow-param winsize is a parameter of --flow farneback, not of tvl1"),
    (["--flow", "dis", "--flow-param", "speed=3"], "--flow-param speed: dis has no such parameter"),
    (["--flow", "tvl1", "--flow-param", "tau=0.5"], r"tvl1 tau must be in (0, 0.25], got 0.5"),
    (["--flow", "tvl1", "--flow-param", "warps=many"], "tvl1 warps must be an integer, got 'many'"),
    (["--flow", "raft"], "--flow must be one of farneback, tvl1, dis, got 'raft'"),
    (["--flow-param", "levels"], "--flow-param must look like NAME=VALUE, got 'levels'"),
    (["--flow", "dis", "--size", "32"], "dis needs frames of at least 46 px"),
    # OpenCV's OPTFLOW_USE_INITIAL_FLOW: every sample failed inside OpenCV, told as a bug
    (["--flow-param", "flags=4"], "farneback flags must be 0 or 256"),
    (["--flow-param", "flags=12345"], "farneback flags must be 0 or 256"),
    (["--flow-param", "levels=2.5"], "farneback levels must be an integer, got '2.5'"),
    # the last value silently won: a store built with a value its command also contradicts
    (["--flow-param", "levels=3", "--flow-param", "levels=5"],
     "--flow-param levels is given twice"),
    # stored as 0 for every flow value, decoded as -inf: verify passed
    (["--flow-dtype", "uint8", "--flow-bound", "inf"], "flow_bound must be a number of pixels"),
    # it did nothing but change the fingerprint (a resume without it refused)
    (["--flow-bound", "5"], "--flow-bound applies to --flow-dtype uint8 only (it clips the "
                            "flow it quantizes), got --flow-dtype float16"),
    (["--flow-dtype", "float32", "--flow-bound", "5"], "got --flow-dtype float32"),
    # each changed nothing OpenCV computes but the fingerprint (test_inert_parameters_...)
    (["--flow", "tvl1", "--flow-param", "nscales=1", "--flow-param", "scale_step=0.5"],
     "--flow-param scale_step applies to tvl1 nscales > 1 only"),
    (["--flow", "dis", "--flow-param", "variational_refinement_iterations=0", "--flow-param",
      "variational_refinement_alpha=1", "--flow-param", "variational_refinement_gamma=0"],
     "--flow-param variational_refinement_alpha, variational_refinement_gamma applies to dis "
     "variational_refinement_iterations > 0 only"),
])
def test_flow_options_errors_are_one_line_exit_2(args, message, tiny_tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    out = flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store, *args,
                        "-q")
    assert message in assert_one_line_error(out, 2)
    assert not store.exists()


@pytest.mark.parametrize("word, value", [
    ("true", True), ("1", True), ("yes", True), ("TRUE", True),
    ("false", False), ("0", False), ("no", False), ("No", False)])
def test_a_flow_switch_is_read_in_each_spelling_it_takes(word, value):
    """`--flow-param NAME=0` is off, as `false` and `no` are: a spelling read the other way
    builds the store with the opposite setting, recorded as asked for."""
    params = flow_from_options("dis", [f"use_mean_normalization={word}"])
    assert params.use_mean_normalization is value


@pytest.mark.parametrize("method,inert,idle,acting", [
    # (the refused parameters, the value that leaves them idle, one that lets them act)
    ("tvl1", {"scale_step": 0.5}, {"nscales": 1}, {"nscales": 3}),
    ("dis", {"variational_refinement_alpha": 1.0, "variational_refinement_delta": 0.5,
             "variational_refinement_gamma": 0.0},
     {"variational_refinement_iterations": 0}, {"variational_refinement_iterations": 5}),
])
def test_inert_parameters_change_no_flow_so_they_are_refused(method, inert, idle, acting):
    """Why `check_given` refuses them: OpenCV computes the same flow with or without them
    (were it to use them one day, this fails and the refusal must go); where their partner
    lets them act, they change the flow and are taken."""
    kind = FLOW_METHODS[method]
    a = _texture(3, size=64)
    b = np.roll(a, 2, axis=1)

    def flow(values):
        return optical_flow(a, b, kind(**values))

    def options(values):
        return [f"{name}={value}" for name, value in values.items()]

    np.testing.assert_array_equal(flow({**idle, **inert}), flow(idle))
    assert not np.array_equal(flow({**acting, **inert}), flow(acting))
    with pytest.raises(ParameterError, match="applies to"):
        flow_from_options(method, options({**idle, **inert}))
    assert flow_from_options(method, options({**acting, **inert})) == kind(**acting, **inert)
    assert flow_from_options(method, options(idle)) == kind(**idle)


@pytest.mark.parametrize("args", [("--flow", "dis"), ("--flow-param", "winsize=3")])
def test_flow_options_do_not_apply_to_still_images(tmp_path, args):
    """Named as given: --flow-param alone was refused as "--flow does not apply"."""
    out = flowstore_cli("build", "stanford40", "--synthetic", "--store", tmp_path / "s.zarr",
                        *args)
    assert f"{args[0]} does not apply to dataset 'stanford40'" in assert_one_line_error(out)


def test_a_store_refuses_a_resume_with_another_algorithm_unless_overwrite(tiny_tvhi_source,
                                                                          tmp_path):
    store = tmp_path / "s.zarr"
    common = ["build", "tvhi", "--source", tiny_tvhi_source, "--store", store, "--size", "48",
              "--steps", "2", "--max-per-split", "1", "-q"]
    assert flowstore_cli(*common).returncode == 0  # Farneback, recorded as stores always were
    line = assert_one_line_error(flowstore_cli(*common, "--flow", "dis"))
    assert "was built with other parameters (flow_method: store 'farneback' (the default) vs asked 'dis')" in line
    assert flowstore_cli(*common, "--flow", "dis", "--overwrite").returncode == 0
    line = assert_one_line_error(flowstore_cli(*common, "--flow", "tvl1"))
    assert "(flow_method: store 'dis' vs asked 'tvl1')" in line  # not every parameter listed
    line = assert_one_line_error(flowstore_cli(*common, "--flow", "dis",
                                               "--flow-param", "patch_stride=4"))
    assert "(dis.patch_stride: store 3 vs asked 4)" in line
    line = assert_one_line_error(flowstore_cli(*common))
    assert "flow_method: store 'dis' vs asked 'farneback' (the default)" in line
    out = flowstore_cli(*common, "--flow", "dis")  # the same algorithm resumes: nothing to do
    assert out.returncode == 0 and "0 computed, 3 already done" in out.stdout
    with open_store(store) as s:
        assert s.attrs["params"]["flow_method"] == "dis"


def test_verify_repair_reextracts_a_dis_store_with_its_algorithm(tiny_tvhi_source, tmp_path):
    store = tmp_path / "s.zarr"
    assert flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                         "--size", "48", "--steps", "2", "--flow", "dis", "--flow-param",
                         "patch_stride=4", "-q").returncode == 0
    group = zarr.open_group(str(store), mode="r+")
    before = group["flow"][:]
    ids = list(group["id"][:])
    damaged = ids.index("hug_0002")
    group["flow"][damaged] = np.zeros_like(before[damaged])
    out = flowstore_cli("verify", store, "--repair", "--source", tiny_tvhi_source, "-q")
    assert out.returncode == 0 and "repaired 1 of 1" in out.stdout, out.stderr
    after = zarr.open_group(str(store), mode="r")["flow"][:]
    assert after.view(np.uint16).tobytes() == before.view(np.uint16).tobytes()
    assert not np.array_equal(  # and the repair did not fall back to Farneback
        before[damaged], reference_tvhi(tiny_tvhi_source / "hug_0002.avi", 48, 2)["flow"])


def test_readers_and_show_take_any_algorithms_store(tiny_tvhi_source, tmp_path):
    store = _build(tiny_tvhi_source, tmp_path / "s.zarr", TVL1Params())
    split = flowstore.open(store).split("train", features=("frames", "flow"))
    sample = split[0]
    assert sample["flow"].shape == (STEPS, SIZE, SIZE, 2) and sample["flow"].dtype == np.float32
    from flowstore.show import show

    result = show(store, tmp_path / "pictures", (), progress=False)
    assert result.written and all(path.stat().st_size > 0 for path in result.written)


def test_numbers_record_the_same_however_they_are_written(tiny_tvhi_source, tmp_path):
    """`flow_bound=20` through the API and `--flow-bound 20` record (and fingerprint) alike: the
    API's int refused the CLI's store with "built with other parameters ()", naming nothing."""
    store = tmp_path / "s.zarr"
    common = ("--size", "48", "--steps", "2", "--max-per-split", "1", "-q")
    assert flowstore_cli("build", "tvhi", "--source", tiny_tvhi_source, "--store", store,
                         "--flow-dtype", "uint8", "--flow-bound", "20", *common).returncode == 0
    result = build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=store,
                               params=VideoParams(size=48, steps=2, flow_dtype="uint8",
                                                  flow_bound=20,
                                                  flow=FarnebackParams(poly_sigma=1.2, levels=3)),
                               max_per_split=1, progress=False))
    assert result.computed == 0 and not result.failures
    assert VideoParams(flow_bound=20) == VideoParams(flow_bound=20.0)
    assert FarnebackParams(pyr_scale=1 / 2, poly_sigma=1) == FarnebackParams(poly_sigma=1.0)


def test_a_store_recorded_with_integers_resumes_and_is_recorded_as_now(tiny_tvhi_source, tmp_path):
    """A store built through the API before numbers were normalised records flow_bound 20 and
    poly_sigma 1: resuming it (or `verify --repair`, which builds with the recorded values read
    back as 20.0) must not be refused, and the record takes the normalised form."""
    from flowstore.store import open_store

    store = tmp_path / "s.zarr"
    params = VideoParams(size=48, steps=2, flow=FarnebackParams(poly_sigma=1.0))
    build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=store, params=params,
                      max_per_split=1, progress=False))
    recorded = zarr.open_group(str(store), mode="r+")
    old = recorded.attrs["params"]
    old["flow_bound"], old["farneback"]["poly_sigma"] = 20, 1  # as an older flowstore wrote them
    recorded.attrs["params"] = old
    result = build(BuildConfig(dataset="tvhi", source=tiny_tvhi_source, store=store,
                               params=params, progress=False))
    assert result.already_done > 0 and not result.failures
    with open_store(store) as opened:
        assert canonical_json(opened.attrs["params"]) == canonical_json(
            {**old, "flow_bound": 20.0, "farneback": {**old["farneback"], "poly_sigma": 1.0}})
