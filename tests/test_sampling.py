"""Segment (TSN) sampling: the documented frame indices, end to end through a build, its
parameters and fingerprint, resume refusals, option errors, and the trainers on such a store.

The clips here encode their frame number: frame i has a flat top-left block of grey level
`INDEX_STEP * i` (lossless FFV1, and a block the resize maps to whole pixels), so a stored frame
says which source frame it is without trusting flowstore's index arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowstore.extraction._cv import cv2
from flowstore.extraction.sampling import (flow_positions, segment_centres,
                                           segment_flow_positions, select_frames)
from flowstore.extraction.video import frames_needed
from flowstore.errors import ParameterError
from flowstore.params import VideoParams, fingerprint, from_dict, to_dict
from flowstore.store import open_store
from tests.conftest import assert_one_line_error, flowstore_cli

INDEX_STEP = 5  # grey level per frame number: frames 0..50 fit in uint8
SIDE, SIZE = 64, 32  # clip side and store size: the 16 px index block resizes to 8 px exactly
BLOCK = 16
SEGMENTS, STACK = 3, 2


def documented_starts(n: int, k_segments: int, stack: int) -> list[int]:
    """The first frame of each flow pair, written out from the module docstring's formulas."""
    starts = []
    for k in range(k_segments):
        centre = (2 * k + 1) * n // (2 * k_segments)
        first = min(max(centre - stack // 2, 0), max(n - 1 - stack, 0))
        starts += [min(first + j, n - 2) for j in range(stack)]
    return starts


def documented_centres(n: int, k_segments: int) -> list[int]:
    return [(2 * k + 1) * n // (2 * k_segments) for k in range(k_segments)]


def write_numbered_clip(path, n_frames: int) -> None:
    """A texture moving 1 px right per frame; frame i's top-left block is grey INDEX_STEP * i."""
    rng = np.random.default_rng(n_frames)
    texture = cv2.resize(rng.uniform(0, 255, (24, 24 + n_frames)).astype(np.float32),
                         (SIDE + n_frames * 4, SIDE), interpolation=cv2.INTER_CUBIC)
    texture = np.clip(texture, 0, 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25, (SIDE, SIDE))
    for i in range(n_frames):
        x0 = n_frames * 4 - 1 - i
        frame = np.repeat(texture[:, x0:x0 + SIDE, None], 3, axis=2)
        frame[:BLOCK, :BLOCK] = INDEX_STEP * i
        writer.write(frame)
    writer.release()


def frame_number(frame: np.ndarray) -> int:
    """The source frame a stored (resized) frame is, from its index block."""
    block = frame[:BLOCK * SIZE // SIDE, :BLOCK * SIZE // SIDE]
    assert (block == block.flat[0]).all(), "the index block is not flat"
    value, rest = divmod(int(block.flat[0]), INDEX_STEP)
    assert rest == 0
    return value


def decode_all(path) -> list[np.ndarray]:
    """Every frame, independently of flowstore: read(), BGR to RGB, INTER_AREA to SIZE."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        frames.append(cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    capture.release()
    return frames


# -- the index arithmetic ----------------------------------------------------------------------

def test_segment_indices_are_the_documented_ones():
    # worked examples (module docstring): 90 frames, K = 3, L = 2
    chosen = select_frames(90, VideoParams(sampling="segments", segments=3, stack=2))
    assert chosen.frames.tolist() == [15, 45, 75]
    assert chosen.flow_starts.tolist() == [14, 15, 44, 45, 74, 75]  # pairs centred on c_k
    assert chosen.middle == 45
    # a window that would start before frame 0 or end past the last frame is shifted inside
    assert segment_flow_positions(10, 3, 5).tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7,
                                                         4, 5, 6, 7, 8]
    # too short for the window: pairs past the last one repeat it; 2 frames: all (0, 1)
    assert segment_flow_positions(5, 3, 2).tolist() == [0, 1, 1, 2, 2, 3]
    assert segment_flow_positions(3, 1, 4).tolist() == [0, 1, 1, 1]
    assert segment_flow_positions(2, 3, 2).tolist() == [0] * 6
    assert segment_centres(2, 3).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="at least 2 frames"):
        segment_flow_positions(1, 3, 2)


@pytest.mark.parametrize("k_segments", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("stack", [1, 2, 5])
def test_segment_indices_hold_their_promises_for_every_length(k_segments, stack):
    params = VideoParams(sampling="segments", segments=k_segments, stack=stack)
    for n in range(2, 130):
        chosen = select_frames(n, params)
        starts = chosen.flow_starts.reshape(k_segments, stack)
        assert starts.tolist() == np.reshape(documented_starts(n, k_segments, stack),
                                             (k_segments, stack)).tolist()
        assert ((0 <= starts) & (starts <= n - 2)).all()
        centres = chosen.frames
        for k, c in enumerate(centres.tolist()):  # frame c shows from c to c + 1
            assert c <= (k + 0.5) * n / k_segments < c + 1
        if n >= stack + 1:  # L distinct consecutive flows per segment
            assert (np.diff(starts, axis=1) == 1).all()
        if n >= k_segments * (stack + 2):  # each window stays inside its own segment
            for k in range(k_segments):
                assert k * n / k_segments <= starts[k, 0] < starts[k, -1] + 1 \
                    < (k + 1) * n / k_segments
        if k_segments % 2:  # odd K: the middle frame is the middle segment's centre
            assert chosen.middle == centres[k_segments // 2] == n // 2
        assert frames_needed(n, params) == ({int(t) for t in starts.flat}
                                            | {int(t) + 1 for t in starts.flat}
                                            | set(centres.tolist()) | {n // 2})


def test_linspace_selection_is_unchanged():
    chosen = select_frames(79, VideoParams(steps=16))
    assert chosen.flow_starts.tolist() == flow_positions(79, 16).tolist()
    assert chosen.frames.tolist() == chosen.flow_starts.tolist() and chosen.middle == 39


# -- parameters -----------------------------------------------------------------------------

def test_linspace_parameters_and_fingerprint_are_what_they_were():
    """Stores built before sampling existed must resume: nothing new is recorded for them."""
    for params in (VideoParams(), VideoParams(sampling="linspace", steps=4, size=32)):
        recorded = to_dict(params)
        assert not {"sampling", "segments", "stack"} & recorded.keys()
    assert to_dict(VideoParams(sampling="linspace")) == to_dict(VideoParams())
    old = {"size": 32, "steps": 4, "flow_dtype": "float16", "flow_bound": 20.0,
           "farneback": to_dict(VideoParams())["farneback"], "decoder_threads": 1,
           "extraction": to_dict(VideoParams())["extraction"]}
    assert to_dict(VideoParams(size=32, steps=4)) == old


def test_segment_parameters_are_recorded_and_read_back():
    params = VideoParams(sampling="segments", segments=SEGMENTS, stack=STACK, size=SIZE)
    recorded = to_dict(params)
    assert (recorded["sampling"], recorded["segments"], recorded["stack"], recorded["steps"]) \
        == ("segments", 3, 2, 6)
    assert from_dict(VideoParams, recorded) == params
    tsn = VideoParams(sampling="segments")  # TSN's defaults: K = 3, L = 5
    assert (tsn.segments, tsn.stack, tsn.steps) == (3, 5, 15)

    def fp(p):
        return fingerprint(dataset="tvhi", params=to_dict(p), source_files={"a.avi": 1})

    others = [VideoParams(size=SIZE, steps=6),
              VideoParams(sampling="segments", segments=2, stack=3, size=SIZE),
              VideoParams(sampling="segments", segments=3, stack=3, size=SIZE)]
    assert len({fp(params), *map(fp, others)}) == 4


@pytest.mark.parametrize("kwargs,message", [
    (dict(segments=3), "--segments and --stack need --sampling segments"),
    (dict(stack=2), "--segments and --stack need --sampling segments"),
    (dict(sampling="tsn"), "--sampling must be one of linspace, segments, got 'tsn'"),
    (dict(sampling="segments", segments=0), "--segments must be an integer >= 1, got 0"),
    (dict(sampling="segments", stack=-2), "--stack must be an integer >= 1, got -2"),
    (dict(sampling="segments", steps=8), "--steps does not apply to --sampling segments"),
    (dict(sampling="segments", segments=64, stack=32), "at most 1024 flows"),
])
def test_bad_sampling_parameters_are_refused(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        VideoParams(**kwargs)


def test_segments_times_stack_of_exactly_1024_flows_is_accepted():
    """The limit is inclusive: 32 x 32 = 1024 flows is taken, 1025 (41 x 25) is refused."""
    assert VideoParams(sampling="segments", segments=32, stack=32).steps == 1024
    with pytest.raises(ParameterError, match="at most 1024 flows, got 41 x 25 = 1025"):
        VideoParams(sampling="segments", segments=41, stack=25)


@pytest.mark.parametrize("args,message", [
    (["tvhi", "--segments", "3"], "--segments and --stack need --sampling segments"),
    (["tvhi", "--sampling", "linspace", "--stack", "2"], "need --sampling segments"),
    (["tvhi", "--sampling", "segments", "--segments", "0"], "--segments must be an integer >= 1"),
    (["tvhi", "--sampling", "segments", "--stack", "0"], "--stack must be an integer >= 1"),
    (["tvhi", "--sampling", "segments", "--steps", "4"], "--steps does not apply"),
    (["tvhi", "--sampling", "random"], "--sampling must be one of linspace, segments"),
    (["stanford40", "--sampling", "segments"], "--sampling does not apply to dataset"),
    (["stanford40", "--stack", "2"], "--stack does not apply to dataset 'stanford40'"),
])
def test_bad_sampling_options_are_one_line_errors(tmp_path, args, message):
    result = flowstore_cli("build", *args, "--synthetic", "--store", tmp_path / "x.zarr")
    assert message in assert_one_line_error(result)
    assert not (tmp_path / "x.zarr").exists()


# -- a build ---------------------------------------------------------------------------------

#: Clip lengths: 2 (the shortest), 5 (shorter than K x (L + 1)), 7, 31, 46 (segments of 15.3).
LENGTHS = {"a/two": 2, "a/five": 5, "a/seven": 7, "b/thirtyone": 31, "b/fortysix": 46,
           "b/eleven": 11}


@pytest.fixture(scope="module")
def numbered_source(tmp_path_factory):
    source = tmp_path_factory.mktemp("numbered") / "src"
    for sample, n in LENGTHS.items():
        (source / sample).parent.mkdir(parents=True, exist_ok=True)
        write_numbered_clip(source / f"{sample}.avi", n)
    return source


SEGMENT_BUILD = ["--sampling", "segments", "--segments", str(SEGMENTS), "--stack", str(STACK)]


def _build(source, store, *extra, size=SIZE):
    return flowstore_cli("build", "videofolder", "--source", source, "--store", store,
                         "--size", str(size), "--workers", "1", "-q", *extra)


@pytest.fixture(scope="module")
def segment_store(numbered_source, tmp_path_factory):
    """A segment store of the numbered clips, shared by the tests that only read it (or mend
    what they damage)."""
    store = tmp_path_factory.mktemp("built") / "seg.zarr"
    result = _build(numbered_source, store, *SEGMENT_BUILD)
    assert result.returncode == 0, result.stderr
    return store


def test_segment_store_holds_the_documented_frames_and_flow(numbered_source, tmp_path, suffix):
    store = tmp_path / f"seg{suffix}"
    result = _build(numbered_source, store, *SEGMENT_BUILD)
    assert result.returncode == 0, result.stderr
    with open_store(store) as built:
        assert built.attrs["params"]["sampling"] == "segments"
        ids = built.read("id").tolist()
        assert built.read("done").all()
        assert built.info("frames").shape[1:] == (SEGMENTS, SIZE, SIZE, 3)
        assert built.info("flow").shape[1:] == (SEGMENTS * STACK, SIZE, SIZE, 2)
        farneback = to_dict(VideoParams())["farneback"]
        for sample, n in LENGTHS.items():
            index = ids.index(sample)
            frames, middle = built.read("frames", index), built.read("middle_frame", index)
            flow = built.read("flow", index)
            # which source frames they are, read from the pixels
            assert [frame_number(f) for f in frames] == documented_centres(n, SEGMENTS), sample
            assert frame_number(middle) == n // 2
            # and the flow is Farneback's on the documented pairs, bit for bit
            decoded = decode_all(numbered_source / f"{sample}.avi")
            assert len(decoded) == n
            gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in decoded]
            want = np.stack([cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, **farneback)
                             for t in documented_starts(n, SEGMENTS, STACK)])
            np.testing.assert_array_equal(flow.view(np.uint16),
                                          want.astype(np.float16).view(np.uint16), sample)
            np.testing.assert_array_equal(frames, np.stack(
                [decoded[c] for c in documented_centres(n, SEGMENTS)]))


def test_a_segment_store_refuses_other_sampling_unless_overwritten(numbered_source, tmp_path):
    store = tmp_path / "seg.zarr"
    assert _build(numbered_source, store, *SEGMENT_BUILD).returncode == 0
    with open_store(store) as built:
        before = built.attrs["fingerprint"]
    for other, differences in [
            ([], "sampling: store 'segments' vs asked 'linspace' (the default)"),
            (["--sampling", "linspace", "--steps", "6"],
             "sampling: store 'segments' vs asked 'linspace' (the default)"),
            (["--sampling", "segments", "--segments", "2", "--stack", "3"],
             "segments: store 3 vs asked 2"),
            (["--sampling", "segments", "--segments", "3", "--stack", "3"],
             "stack: store 2 vs asked 3")]:
        line = assert_one_line_error(_build(numbered_source, store, *other))
        assert differences in line and "--overwrite" in line, line
    again = _build(numbered_source, store, *SEGMENT_BUILD)  # the same options: a no-op resume
    assert again.returncode == 0 and "0 computed, 6 already done" in again.stdout
    rebuilt = _build(numbered_source, store, "--overwrite")
    assert rebuilt.returncode == 0, rebuilt.stderr
    with open_store(store) as built:
        assert "sampling" not in built.attrs["params"] and built.attrs["fingerprint"] != before
        assert built.info("frames").shape[1] == built.info("flow").shape[1] == 16


def test_a_linspace_store_resumes_with_sampling_linspace_spelled_out(numbered_source, tmp_path):
    store = tmp_path / "lin.h5"
    assert _build(numbered_source, store, "--steps", "3").returncode == 0
    again = _build(numbered_source, store, "--steps", "3", "--sampling", "linspace")
    assert again.returncode == 0 and "0 computed, 6 already done" in again.stdout, again.stderr


def test_inspect_and_verify_repair_work_on_a_segment_store(numbered_source, segment_store):
    import json

    import zarr

    store = segment_store
    shown = flowstore_cli("inspect", store, "--json")
    assert shown.returncode == 0, shown.stderr  # (once empty, in a full run: say why if again)
    summary = json.loads(shown.stdout)
    assert {k: summary["params"][k] for k in ("sampling", "segments", "stack", "steps")} == {
        "sampling": "segments", "segments": SEGMENTS, "stack": STACK, "steps": SEGMENTS * STACK}
    shapes = {a["name"]: a["shape"][1:] for a in summary["arrays"]}
    assert shapes["frames"] == [SEGMENTS, SIZE, SIZE, 3]
    assert shapes["flow"] == [SEGMENTS * STACK, SIZE, SIZE, 2]
    group = zarr.open_group(str(store), mode="r+")
    index = list(group["id"][:]).index("b/fortysix")
    good = group["flow"][index]
    group["flow"][index] = np.zeros_like(good)  # bytes changed behind flowstore's back
    fixed = flowstore_cli("verify", store, "--repair", "--source", numbered_source, "-q")
    assert fixed.returncode == 0 and "repaired 1 of 1" in fixed.stdout, fixed.stderr
    np.testing.assert_array_equal(zarr.open_group(str(store), mode="r")["flow"][index], good)


def test_estimate_measures_a_segment_build(numbered_source):
    out = flowstore_cli("estimate", "videofolder", "--source", numbered_source, "--size",
                        str(SIZE), *SEGMENT_BUILD, "--sample", "3", "-q")
    assert out.returncode == 0, out.stderr
    assert "float16" in out.stdout and "<- --flow-dtype" in out.stdout
    line = assert_one_line_error(flowstore_cli("estimate", "videofolder", "--source",
                                               numbered_source, "--stack", "2"))
    assert "--segments and --stack need --sampling segments" in line


def test_show_draws_a_segment_store(segment_store, tmp_path):
    from flowstore.show import frame_of_flow, step_caption

    assert [frame_of_flow(s, 3, 6) for s in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [step_caption(s, 3, 6, True) for s in (0, 1, 5)] == ["s0.0", "s0.1", "s2.1"]
    assert step_caption(4, 16, 16, False) == "t4"
    # `--stack 1`: as many frames as flows, and still segments (was captioned t0, t1, t2)
    assert [step_caption(s, 3, 3, True) for s in range(3)] == ["s0.0", "s1.0", "s2.0"]
    result = flowstore_cli("show", segment_store, "a/seven", "--gif", "--out", tmp_path / "pics", "-q")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "pics" / "a").iterdir()} == {"seven.png", "seven.gif"}



def test_show_tells_a_segment_store_by_its_sampling(segment_store, tmp_path, monkeypatch):
    """The captions follow the store's `sampling`, not whether it holds fewer frames than
    flows (a `--stack 1` store holds as many)."""
    import flowstore.show

    told = []
    caption = flowstore.show.step_caption
    monkeypatch.setattr(flowstore.show, "step_caption",
                        lambda *args: told.append(args[3]) or caption(*args))
    flowstore.show.show(segment_store, tmp_path / "pics", ["a/seven"], progress=False)
    assert told and all(told)


# -- the trainers ------------------------------------------------------------------------------

def test_flow_and_two_stream_train_on_a_segment_store(numbered_source, tmp_path):
    """The flow model's T comes from the store (K x L), the frames model reads middle_frame."""
    import keras
    from typer.testing import CliRunner

    from trainers.cli import app
    from trainers.runs import list_runs

    store = tmp_path / "seg.zarr"
    assert _build(numbered_source, store, "--sampling", "segments", "--segments", "3",
                  "--stack", "2", "--test-fraction", "0.34", "--val-fraction", "0.2",
                  size=16).returncode == 0
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "two_stream", "--store", str(store), "--runs-dir",
                                      str(runs), "--epochs", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = {r.model: r for r in list_runs(runs)}
    assert set(records) == {"frames", "flow", "two_stream"}
    flow_model = keras.saving.load_model(records["flow"].model_file, compile=False)
    assert flow_model.input_shape == (None, SEGMENTS * STACK, 16, 16, 2)
    fused = keras.saving.load_model(records["two_stream"].model_file, compile=False)
    assert {tuple(t.shape) for t in fused.inputs} == {
        (None, 16, 16, 3), (None, SEGMENTS * STACK, 16, 16, 2)}
