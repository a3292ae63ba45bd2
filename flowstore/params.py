"""Extraction parameters as frozen, validated, hashable data.

Every number that changes what a store holds lives in one of these dataclasses. Their canonical
JSON (sorted keys, no whitespace) goes into the store's attributes and into its fingerprint, so
that the same parameters are recognised across runs and different ones never silently mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence, Union

from flowstore.errors import ParameterError

#: What the fingerprint hashes as "format": the meaning of a sample's bytes, not the store's
#: layout (`flowstore.store.layout.FORMAT`). Format 2 moved the per-sample bookkeeping into
#: columns and changed no sample's bytes, so it kept this at 1: an upgraded format-1 store, and
#: the same build made anew, keep the fingerprint the trainers' runs recorded.
CONTENT_FORMAT = 1

FLOW_DTYPES = ("float16", "float32", "uint8")

#: How a clip's flow pairs and frames are placed (`flowstore.extraction.sampling`): `linspace`
#: (the report's T evenly spaced pairs) or `segments` (TSN: K segments, L stacked flows each).
SAMPLINGS = ("linspace", "segments")
#: `--sampling segments` without `--segments`/`--stack`: TSN's 3 segments of 5 stacked flows.
DEFAULT_SEGMENTS, DEFAULT_STACK = 3, 5
#: Linspace's default T, when `steps` is not given.
DEFAULT_STEPS = 16

#: How a frame or image becomes S x S (`flowstore.extraction._cv.resize_rgb`): `stretch`, the
#: report's, squeezes the whole frame into the square (a 4:3 clip's people come out a quarter
#: narrower); `center-crop` keeps the aspect and drops the sides (or top and bottom): the
#: largest centred square, resized to S x S, what short-side-resize-then-centre-crop pipelines
#: (TSN, I3D, MMAction2's test-time `CenterCrop`) feed a model.
RESIZES = ("stretch", "center-crop")

#: Field metadata of a parameter that is recorded (and fingerprinted) only when it differs from
#: its default: a parameter added after stores were built, whose default is what those stores
#: hold, so they keep their recorded parameters and fingerprint and still resume.
RECORDED_UNLESS_DEFAULT = {"recorded_unless_default": True}

#: Version of the extraction code, recorded in every store's parameters (``extraction``) and so
#: in its fingerprint. Raised whenever flowstore changes the bytes a sample gets from the same
#: source and parameters (a decoder setting, a resize, a colour conversion), so that a store is
#: never resumed by a flowstore that would extract its remaining samples differently.
#: Stores from before it was recorded have no ``extraction`` key: they still open, read and
#: verify, but a build refuses to resume them (their parameters differ).
EXTRACTION_VERSION = "1"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ParameterError(message)


def check_seed(value: int) -> None:
    """Every `--seed` of flowstore (splits, synth, show, estimate): numpy refuses a negative one
    with a ValueError deep inside, after work has begun."""
    _require(isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0,
             f"--seed must be an integer >= 0, got {value!r}")


@dataclass(frozen=True)
class FarnebackParams:
    """Arguments of `cv2.calcOpticalFlowFarneback`; defaults are the report's (section 3)."""

    method: ClassVar[str] = "farneback"

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 5
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    flags: int = 0

    def __post_init__(self) -> None:
        _check_float(self, "pyr_scale", "in (0, 1)", lambda v: 0 < v < 1)
        _check_int(self.method, "levels", self.levels, 1)
        # (2**31 - 1 failed every sample inside OpenCV, bad_array_new_length; 10**7 takes 7 s
        # a pair of 32 px frames, and no store of a larger one was ever built)
        _check_int(self.method, "winsize", self.winsize, 1, MAX_WINSIZE)
        _check_int(self.method, "iterations", self.iterations, 1)
        _require(self.poly_n in (5, 7) and isinstance(self.poly_n, int),
                 f"farneback poly_n must be 5 or 7, got {self.poly_n!r}")
        _check_float(self, "poly_sigma", "> 0", lambda v: v > 0)
        # OpenCV's other flag, OPTFLOW_USE_INITIAL_FLOW (4), needs a flow to start from, which
        # extraction never passes: it failed every sample inside OpenCV, as if a bug
        _require(self.flags in (0, FARNEBACK_GAUSSIAN) and isinstance(self.flags, int),
                 f"farneback flags must be 0 or {FARNEBACK_GAUSSIAN} "
                 f"(cv2.OPTFLOW_FARNEBACK_GAUSSIAN), got {self.flags!r}")


#: `cv2.OPTFLOW_FARNEBACK_GAUSSIAN`: a Gaussian window instead of a box filter.
FARNEBACK_GAUSSIAN = 256


# -- TV-L1 and DIS: checks shared by their fields ------------------------------------------------
#: The largest integer OpenCV's flow functions take (a C int): 3000000000 iterations passed the
#: check and failed every sample inside OpenCV, "integer won't fit into a C int".
C_INT_MAX = 2**31 - 1
#: The largest `flow_bound` (pixels): twice it still within float32's range, where the uint8
#: encoding computes.
MAX_FLOW_BOUND = 1e38
#: The smallest `flow_bound` (pixels): a thousandth of a pixel, far below what a flow algorithm
#: resolves. At 1e-37 the encoding's scale (255 / 2 bound) overflowed float32: every code was
#: 0 or 254, a still pixel 254, and the store was built without a word.
MIN_FLOW_BOUND = 1e-3
#: The widest Farneback window (`FarnebackParams.winsize`).
MAX_WINSIZE = 10**7


def check_flow_bound(value: Any, name: str = "flow_bound") -> None:
    """Refuse a uint8 flow bound (pixels) outside [MIN_FLOW_BOUND, MAX_FLOW_BOUND]: a build's
    option, and a store's record of it, which the reader decodes by (a store from elsewhere
    with a bound of 0 read as still flow, a negative one as mirrored, 1e308 as inf: found by
    review). Within float32's range, in which flow is encoded and decoded: 1e39 passed,
    overflowed in the encoding and decoded to inf everywhere.

    Raises:
        ParameterError: naming `name`.
    """
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value) and MIN_FLOW_BOUND <= value <= MAX_FLOW_BOUND,
             f"{name} must be a number of pixels in [{MIN_FLOW_BOUND:g}, "
             f"{MAX_FLOW_BOUND:g}], got {value!r}")


def _check_int(method: str, name: str, value: Any, low: int, high: int = C_INT_MAX) -> None:
    within = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    allowed = (f"an integer in {low}..{high}" if high != C_INT_MAX
               else f"an integer in {low}..{high} (a C int, what OpenCV takes)"
               if isinstance(value, int) and value > high else f"an integer >= {low}")
    _require(within, f"{method} {name} must be {allowed}, got {value!r}")


def _check_float(params: Any, name: str, allowed: str, within: Callable[[float], bool]) -> None:
    """Check a float field (`allowed` names the range) and store it as a float, so that 1 and
    1.0 record (and fingerprint) the same."""
    value = getattr(params, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _require(ok and within(float(value)),
             f"{params.method} {name} must be {allowed}, got {value!r}")
    # (+ 0.0: -0.0 recorded as 0.0, else `gamma=-0` fingerprinted otherwise than `gamma=0`)
    object.__setattr__(params, name, float(value) + 0.0)


def _check_size(value: Any) -> None:
    """The side of the stored frames, videos' and images' alike."""
    _require(isinstance(value, int) and 8 <= value <= 4096,
             f"size must be an integer in 8..4096, got {value!r}")


def _check_resize(value: Any) -> None:
    _require(value in RESIZES, f"--resize must be one of {', '.join(RESIZES)}, got {value!r}")


def _check_bool(method: str, name: str, value: Any) -> None:
    _require(isinstance(value, bool), f"{method} {name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class TVL1Params:
    """TV-L1 flow (Zach et al. 2007) as `cv2.optflow.DualTVL1OpticalFlow` computes it (contrib).

    Defaults are OpenCV's own, which is how the two-stream field runs it: MMAction2's
    `tools/misc/flow_extraction.py` calls `cv2.optflow.DualTVL1OpticalFlow_create()` with no
    arguments (one object per video, grayscale frames), and denseflow (open-mmlab/denseflow,
    `src/denseflow_gpu.cpp`, which MMAction2's data tools run) calls
    `cuda::OpticalFlowDual_TVL1::create()` with its defaults: the same tau 0.25, lambda 0.15,
    theta 0.3, 5 scales, 5 warps, epsilon 0.01, scale step 0.8, gamma 0, and 300 iterations per
    warp, which the CPU class splits into 30 inner x 10 outer (and median-filters the flow with a
    5x5 window, a CPU-only step). Field names are the Python binding's keywords in snake case.
    """

    method: ClassVar[str] = "tvl1"

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def __post_init__(self) -> None:
        # tau: the time step of Chambolle's dual projection, proven to converge for
        # tau <= 1/8 and used up to 1/4 in practice (OpenCV's default).
        _check_float(self, "tau", "in (0, 0.25]", lambda v: 0 < v <= 0.25)
        _check_float(self, "lambda_", "> 0", lambda v: v > 0)
        _check_float(self, "theta", "> 0", lambda v: v > 0)
        _check_int(self.method, "nscales", self.nscales, 1, 32)
        _check_int(self.method, "warps", self.warps, 1)
        _check_float(self, "epsilon", "> 0", lambda v: v > 0)
        _check_int(self.method, "inner_iterations", self.inner_iterations, 1)
        _check_int(self.method, "outer_iterations", self.outer_iterations, 1)
        _check_float(self, "scale_step", "in (0, 1)", lambda v: 0 < v < 1)
        _check_float(self, "gamma", ">= 0", lambda v: v >= 0)
        # OpenCV median-filters the float flow: its medianBlur takes only 3 and 5 there.
        _require(self.median_filtering in (1, 3, 5) and isinstance(self.median_filtering, int)
                 and not isinstance(self.median_filtering, bool),
                 f"tvl1 median_filtering must be 1 (off), 3 or 5, got {self.median_filtering!r}")

    @classmethod
    def check_given(cls, given: Mapping[str, Any]) -> None:
        """Refuse a `scale_step` given with one scale: no pyramid is built, so it changes no
        stored byte, yet it changed the fingerprint (a resume without it, or `--reuse-from`
        of a store with the same arrays, refused), as `VideoParams.check_given` refuses an
        unused flow bound.

        Raises:
            ParameterError: naming the parameter.
        """
        if "scale_step" in given and given.get("nscales", cls.nscales) == 1:
            raise ParameterError("--flow-param scale_step applies to tvl1 nscales > 1 only (it "
                                 "scales the pyramid that nscales=1 does not build)")

    def empty_level(self, size: int) -> bool:
        """Whether OpenCV's pyramid of an S x S frame has a level of 0 px, on which it asserts
        (every sample failed inside OpenCV: scale_step 0.01 at --size 32, 0.002 at 224). It
        resizes each level by `scale_step`, rounding to the nearest pixel (half to even, as
        `cvRound`), and stops below 16 px."""
        side = size
        for _ in range(1, self.nscales):
            side = round(side * self.scale_step)
            if side == 0:
                return True
            if side < 16:
                return False
        return False


@dataclass(frozen=True)
class DISParams:
    """Dense Inverse Search (Kroeger et al. 2016) as `cv2.DISOpticalFlow` computes it (core).

    Defaults are OpenCV's medium preset, `cv2.DISOpticalFlow_create(DISOPTICAL_FLOW_PRESET_
    MEDIUM)`: every value that preset sets or leaves at its default, set one by one. Two knobs
    stay at OpenCV's defaults and are not settable here, because their setters are newer than the
    OpenCV this project supports (>= 4.8): the variational refinement's epsilon (0.01; setter since
    4.10) and the coarsest pyramid level (chosen from the frame size).
    """

    method: ClassVar[str] = "dis"

    finest_scale: int = 1
    patch_size: int = 8
    patch_stride: int = 3
    gradient_descent_iterations: int = 25
    variational_refinement_iterations: int = 5
    variational_refinement_alpha: float = 20.0
    variational_refinement_delta: float = 5.0
    variational_refinement_gamma: float = 10.0
    use_mean_normalization: bool = True
    use_spatial_propagation: bool = True

    def __post_init__(self) -> None:
        _check_int(self.method, "finest_scale", self.finest_scale, 0, 10)
        _check_int(self.method, "patch_size", self.patch_size, 4, 64)
        _check_int(self.method, "patch_stride", self.patch_stride, 1,
                   self.patch_size if isinstance(self.patch_size, int) else None)
        _check_int(self.method, "gradient_descent_iterations",
                   self.gradient_descent_iterations, 1)
        _check_int(self.method, "variational_refinement_iterations",
                   self.variational_refinement_iterations, 0)
        for name in ("variational_refinement_alpha", "variational_refinement_delta",
                     "variational_refinement_gamma"):
            _check_float(self, name, ">= 0", lambda v: v >= 0)
        _check_bool(self.method, "use_mean_normalization", self.use_mean_normalization)
        _check_bool(self.method, "use_spatial_propagation", self.use_spatial_propagation)

    @classmethod
    def check_given(cls, given: Mapping[str, Any]) -> None:
        """Refuse the variational refinement's weights given with no refinement iterations:
        OpenCV then skips the refinement, so they change no stored byte, yet they changed the
        fingerprint (as `TVL1Params.check_given` says).

        Raises:
            ParameterError: naming the parameters.
        """
        weights = [name for name in ("variational_refinement_alpha",
                                     "variational_refinement_delta",
                                     "variational_refinement_gamma") if name in given]
        iterations = given.get("variational_refinement_iterations",
                               cls.variational_refinement_iterations)
        if weights and iterations == 0:
            raise ParameterError(f"--flow-param {', '.join(weights)} applies to dis "
                                 f"variational_refinement_iterations > 0 only (0 skips the "
                                 f"refinement it weighs)")

    def coarsest_scale(self, size: int) -> int:
        """The coarsest pyramid level OpenCV picks for S x S frames (dis_flow.cpp, `calc`),
        in the same arithmetic: a level below 0, or below `finest_scale`, is a frame too small
        for the patch (OpenCV then fails, or reads outside its pyramid)."""
        if size // self.patch_size == 0:
            return -1
        return min(int(math.log(size / (4.0 * self.patch_size)) / math.log(2.0) + 0.5),
                   int(math.log(size // self.patch_size) / math.log(2.0)))

    def min_size(self) -> int:
        """The smallest frame side S these parameters can compute flow on."""
        size = 12  # OpenCV's own floor ("either width or height >= 12")
        while self.coarsest_scale(size) < self.finest_scale:
            size += 1
        return size


#: The flow algorithms by their `--flow` name. Farneback is the report's and the default.
FlowParams = Union[FarnebackParams, TVL1Params, DISParams]
FLOW_METHODS: dict[str, type] = {"farneback": FarnebackParams, "tvl1": TVL1Params,
                                 "dis": DISParams}


#: The key of a store's `params` naming its flow algorithm (absent: Farneback, `flow_record`).
FLOW_METHOD = "flow_method"


def flow_record(flow: FlowParams) -> dict[str, Any]:
    """How a store records its flow algorithm: Farneback as stores always did (its parameters
    under `farneback`, no method named, so stores built before the choice existed keep their
    fingerprints and still resume); another algorithm named by `flow_method` and its
    parameters under that name."""
    values = dataclasses.asdict(flow)
    if isinstance(flow, FarnebackParams):
        return {"farneback": values}
    return {FLOW_METHOD: flow.method, flow.method: values}


def flow_from_record(values: Mapping[str, Any]) -> FlowParams:
    """The flow parameters a store's `params` record (the inverse of `flow_record`)."""
    method = values.get(FLOW_METHOD, "farneback")
    if method not in FLOW_METHODS:
        raise ParameterError(f"the store's flow_method {method!r} is unknown to this flowstore "
                             f"(it knows {', '.join(FLOW_METHODS)})")
    return from_dict(FLOW_METHODS[method], values.get(method) or {})


def flow_from_options(method: str | None, assignments: Sequence[str] = ()) -> FlowParams | None:
    """The flow parameters of `--flow METHOD` and repeated `--flow-param NAME=VALUE`.

    None when neither is given (the default). Each value is read as its field's type and the
    whole set validated against the chosen algorithm (Farneback when only --flow-param is
    given): a name of another algorithm, an unknown name or a bad value is a ParameterError.
    """
    if method is None and not assignments:
        return None
    method = "farneback" if method is None else method
    if method not in FLOW_METHODS:
        raise ParameterError(f"--flow must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
    params_type = FLOW_METHODS[method]
    types = typing.get_type_hints(params_type)
    names = [f.name for f in dataclasses.fields(params_type)]
    values: dict[str, Any] = {}
    for text in assignments:
        name, equals, raw = text.partition("=")
        name, raw = name.strip(), raw.strip()
        if not equals or not name or not raw:
            raise ParameterError(f"--flow-param must look like NAME=VALUE, got {text!r}")
        if name not in names:
            owners = [other for other, kind in FLOW_METHODS.items()
                      if name in {f.name for f in dataclasses.fields(kind)}]
            if owners:
                raise ParameterError(f"--flow-param {name} is a parameter of --flow "
                                     f"{' and '.join(owners)}, not of {method}")
            raise ParameterError(f"--flow-param {name}: {method} has no such parameter "
                                 f"(it has {', '.join(names)})")
        if name in values:
            raise ParameterError(f"--flow-param {name} is given twice")
        values[name] = _parse_value(raw, types[name], f"{method} {name}")
    return _from_given(params_type, values)


def _parse_value(text: str, kind: type, what: str) -> Any:
    """A command-line value read as `kind` (int, float or bool)."""
    if kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise ParameterError(f"{what} must be true or false, got {text!r}")
        return words[text.lower()]
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ParameterError(f"{what} must be {expected}, got {text!r}") from None


@dataclass(frozen=True)
class VideoParams:
    """What a TV-HI sample holds: frame size S, flow steps T, flow encoding, flow algorithm.

    `flow` is the algorithm and its settings (`FarnebackParams`, `TVL1Params`, `DISParams`);
    it is recorded in a form of its own (`flow_record`), so that Farneback stores keep the
    parameters and fingerprints they always had.

    `flow_bound` (pixels) is used by the uint8 encoding only, but always recorded: it is part
    of what a uint8 store means.

    `decoder_threads` is the FFmpeg decoder thread count of each capture. It is not a speed
    knob only: on some real FMP4 clips (TV-HI hug_0010, hug_0045, kiss_0005) one thread gives
    decoded frames up to 8, 6 and 5 levels (of 255) away from FFmpeg's default multi-threaded
    decode, so it is part of what a store holds and is recorded with the other parameters.

    `sampling` picks which frames a sample holds (`flowstore.extraction.sampling` documents
    the exact indices): `linspace`, the report's T = `steps` evenly spaced flow pairs; or
    `segments`, TSN's `segments` K segments with `stack` L consecutive flows each, so that
    `steps` is K x L (derived: give K and L, not T). The three are recorded only for
    `segments`, so linspace stores keep the parameters and fingerprint they were built with.

    `resize` is how each frame becomes S x S (`RESIZES`), recorded only when not `stretch`, so
    stores built before it keep their parameters and fingerprint; flow is computed on the
    frames as resized, so its pixels are those of the stored frames either way.
    """

    size: int = 224
    steps: int | None = None  # T; None: DEFAULT_STEPS (linspace) or segments x stack
    flow_dtype: str = "float16"
    flow_bound: float = 20.0
    flow: FlowParams = field(default_factory=FarnebackParams)
    decoder_threads: int = 1
    sampling: str = field(default="linspace", metadata=RECORDED_UNLESS_DEFAULT)
    segments: int | None = field(default=None, metadata=RECORDED_UNLESS_DEFAULT)
    stack: int | None = field(default=None, metadata=RECORDED_UNLESS_DEFAULT)
    resize: str = field(default="stretch", metadata=RECORDED_UNLESS_DEFAULT)

    #: Fields that `recorded()` writes in a form of their own and `from_recorded` reads back.
    RECORDED_APART: ClassVar[tuple[str, ...]] = ("flow",)

    @classmethod
    def check_given(cls, given: Mapping[str, Any]) -> None:
        """Refuse options given that do nothing with the others (`from_options`): a flow bound
        without the uint8 encoding that uses it, which still changed the fingerprint (a
        resume without it, or `--reuse-from` of a store with the same arrays, refused).

        Raises:
            ParameterError: naming the flag.
        """
        if "flow_bound" in given and given.get("flow_dtype", cls.flow_dtype) != "uint8":
            raise ParameterError(f"--flow-bound applies to --flow-dtype uint8 only (it clips "
                                 f"the flow it quantizes), got --flow-dtype "
                                 f"{given.get('flow_dtype', cls.flow_dtype)}")

    def __post_init__(self) -> None:
        _check_size(self.size)
        _check_resize(self.resize)
        self._check_sampling()
        _require(isinstance(self.steps, int) and 1 <= self.steps <= 1024,
                 f"steps must be an integer in 1..1024, got {self.steps!r}")
        _require(self.flow_dtype in FLOW_DTYPES,
                 f"flow_dtype must be one of {', '.join(FLOW_DTYPES)}, got {self.flow_dtype!r}")
        check_flow_bound(self.flow_bound)
        object.__setattr__(self, "flow_bound", float(self.flow_bound))  # 20 records as 20.0
        _require(isinstance(self.decoder_threads, int) and self.decoder_threads >= 1,
                 f"decoder_threads must be an integer >= 1, got {self.decoder_threads!r}")
        _require(isinstance(self.flow, tuple(FLOW_METHODS.values())),
                 f"flow must be the parameters of one of {', '.join(FLOW_METHODS)}, "
                 f"got {self.flow!r}")
        if isinstance(self.flow, TVL1Params) and self.flow.empty_level(self.size):
            raise ParameterError(
                f"tvl1 scale_step {self.flow.scale_step:g} shrinks a {self.size} px frame to a "
                f"pyramid level of 0 px, which OpenCV cannot compute (a larger scale_step, "
                f"fewer nscales or a larger --size)")
        if isinstance(self.flow, DISParams) and self.size < self.flow.min_size():
            raise ParameterError(
                f"dis needs frames of at least {self.flow.min_size()} px with patch_size "
                f"{self.flow.patch_size} and finest_scale {self.flow.finest_scale}, got --size "
                f"{self.size} (a smaller finest_scale or patch_size fits smaller frames)")

    def _check_sampling(self) -> None:
        """Validate the sampling options and fill in what they imply (`steps`; K and L).

        Messages name the command-line options: that is where these values come from.
        """
        _require(self.sampling in SAMPLINGS,
                 f"--sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.sampling == "linspace":
            _require(self.segments is None and self.stack is None,
                     "--segments and --stack need --sampling segments (linspace takes --steps)")
            if self.steps is None:
                object.__setattr__(self, "steps", DEFAULT_STEPS)
            return
        for name, default in (("segments", DEFAULT_SEGMENTS), ("stack", DEFAULT_STACK)):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, value := default)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                     f"--{name} must be an integer >= 1, got {value!r}")
        flows = self.segments * self.stack
        # `steps` is given back as K x L when a store's recorded parameters are read again;
        # any other value is a --steps given with --sampling segments.
        _require(self.steps in (None, flows),
                 f"--steps does not apply to --sampling segments (its flows are --segments x "
                 f"--stack = {flows}), got --steps {self.steps!r}")
        _require(flows <= 1024, f"--segments x --stack must be at most 1024 flows, got "
                                f"{self.segments} x {self.stack} = {flows}")
        object.__setattr__(self, "steps", flows)

    def recorded(self) -> dict[str, Any]:
        """The flow algorithm (`flow_record`); the extraction version; and uint8 stores name
        their quantization, so a reader decodes each store as written and a store quantized
        another way is never resumed into (its fingerprint differs)."""
        from flowstore.flow_encoding import QUANTIZATION

        quantization = {"flow_quantization": QUANTIZATION} if self.flow_dtype == "uint8" else {}
        return {**flow_record(self.flow), "extraction": EXTRACTION_VERSION, **quantization}

    @classmethod
    def from_recorded(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the fields recorded apart, from a store's `params`."""
        return {"flow": flow_from_record(values)}


@dataclass(frozen=True)
class ImageParams:
    """What a still-image sample holds: the image resized to S x S (`resize`, as for videos)."""

    size: int = 224
    resize: str = field(default="stretch", metadata=RECORDED_UNLESS_DEFAULT)

    def __post_init__(self) -> None:
        _check_size(self.size)
        _check_resize(self.resize)

    def recorded(self) -> dict[str, Any]:
        """The extraction version (see EXTRACTION_VERSION)."""
        return {"extraction": EXTRACTION_VERSION}


#: The fields of the parameters (of those that have each) that every store has recorded, format
#: 1 on: its arrays' shapes and types follow from them, so a store that lacks one describes
#: itself wrongly (`flowstore.verify.check_dataset_arrays`), rather than meaning the default.
SHAPE_FIELDS = ("size", "steps", "flow_dtype")

#: The value a store's `params` means by leaving out a `RECORDED_UNLESS_DEFAULT` field.
UNRECORDED_DEFAULTS: dict[str, Any] = {
    f.name: f.default for cls in (VideoParams, ImageParams) for f in dataclasses.fields(cls)
    if f.metadata.get("recorded_unless_default")}


def recorded_value(recorded: Mapping[str, Any], key: str) -> Any:
    """The value a store's `params` (flat) means for `key`: its own, or the default it means by
    leaving the field out (`UNRECORDED_DEFAULTS`, and Farneback, named by no `flow_method`);
    `NOT_RECORDED` where it records none at all (a uint8 store's `flow_quantization` in a
    float store, a field of a later version)."""
    if key in recorded:
        return recorded[key]
    return {**UNRECORDED_DEFAULTS, FLOW_METHOD: "farneback"}.get(key, NOT_RECORDED)


#: `recorded_value` of a field a store records nothing for.
NOT_RECORDED = "(not recorded)"


def shown_value(recorded: Mapping[str, Any], key: str) -> str:
    """`recorded_value` as a message shows it: "'stretch' (the default)" for a default left
    out, "none (the default)" for one that is None (linspace stores' `segments`), "(not
    recorded)", never Python's None, which no command line takes."""
    value = recorded_value(recorded, key)
    if value == NOT_RECORDED:
        return NOT_RECORDED
    shown = "none" if value is None else repr(value)
    return shown if key in recorded else f"{shown} (the default)"


def to_dict(params: Any) -> dict[str, Any]:
    """Plain nested dict of a parameter dataclass (what goes into store attributes).

    A parameter class may add entries that say what its stored values mean (`recorded()`),
    e.g. the extraction version or how uint8 flow was quantized; they go into the fingerprint
    like any parameter. A field marked `RECORDED_UNLESS_DEFAULT` is left out at its default.
    Fields a class names in `RECORDED_APART` are left to `recorded()` to write in a form of
    their own (and to `from_recorded` to read back).
    """
    apart = getattr(params, "RECORDED_APART", ())
    values = {key: value for key, value in dataclasses.asdict(params).items() if key not in apart}
    for f in dataclasses.fields(params):
        if (f.metadata.get("recorded_unless_default") and f.name in values
                and values[f.name] == f.default):
            del values[f.name]
    recorded = getattr(params, "recorded", None)
    return {**values, **recorded()} if recorded else values


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(*, dataset: str, params: Mapping[str, Any], source_files: Mapping[str, int | None],
                options: Mapping[str, Any] | None = None) -> str:
    """Hash of everything that decides a store's content.

    Covers the format version, the dataset, the parameters, the dataset's split options (a
    split file by its content hash; `Dataset.recorded_options`) and the source files' names and
    sizes (None for a listed file that is missing). Absolute paths and mtimes are left out on
    purpose: the same data copied elsewhere is the same store. A dataset without options hashes
    as before options existed, so its stores keep their fingerprints.
    """
    payload = {
        "format": CONTENT_FORMAT,
        "dataset": dataset,
        "params": dict(params),
        **({"options": dict(options)} if options else {}),
    }
    # The canonical JSON hashed as it is encoded, a batch of pieces at a time: the whole text
    # of a 300,000-clip source list (and json.dumps' own copies) would be tens of MB at once.
    digest, pieces = hashlib.sha256(), []
    for piece in _canonical_pieces(payload, "source_files", source_files):
        pieces.append(piece)
        if len(pieces) == 4096:
            digest.update("".join(pieces).encode())
            pieces.clear()
    digest.update("".join(pieces).encode())
    return digest.hexdigest()


def _canonical_pieces(payload: Mapping[str, Any], key: str,
                      files: Mapping[str, Any]) -> Iterator[str]:
    """`canonical_json({**payload, key: files})` in pieces, `files` walked in sorted key order
    itself: the encoder would copy it into a dict and sort a list of its items, two copies of
    a 300,000-clip source list held at once at the end of a build (benchmarks/build_scale.py)."""
    encode = _CANONICAL.encode
    yield "{"
    for number, name in enumerate(sorted([*payload, key])):
        yield ("," if number else "") + encode(name) + ":"
        if name != key:
            yield from _CANONICAL.iterencode(payload[name])
            continue
        # a dataset's SourceSizes sorts its rows' names without a dict of them
        items_sorted = getattr(files, "items_sorted", None)
        items = items_sorted() if items_sorted else ((file, files[file]) for file in sorted(files))
        yield "{"
        for count, (file, size) in enumerate(items):
            yield ("," if count else "") + encode(file) + ":" + encode(size)
        yield "}"
    yield "}"


#: The encoder of `canonical_json`, for encoding piece by piece (`JSONEncoder.iterencode` gives
#: the same text as `json.dumps` with the same settings).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def from_options(params_type: type, dataset: str, *, flags: Mapping[str, str] | None = None,
                 **options: Any) -> Any:
    """Parameters of `params_type` from command-line options; None means "the default".

    An option the dataset has no use for (e.g. --steps for still images) is an error rather
    than silently ignored, naming the flag the user gave (`flags`, where an option's flag is
    not its name: `flow` is made from --flow or --flow-param).
    """
    given = {key: value for key, value in options.items() if value is not None}
    known = {f.name for f in dataclasses.fields(params_type)}
    unused = sorted(set(given) - known)
    if unused:
        named = ", ".join((flags or {}).get(name) or "--" + name.replace("_", "-")
                          for name in unused)
        raise ParameterError(f"{named} does not apply to dataset {dataset!r}")
    return _from_given(params_type, given)


def _from_given(params_type: type, given: Mapping[str, Any]) -> Any:
    """`params_type` made of the options `given`, after its `check_given` where it has one:
    an option another's value leaves unused is refused, since it would change the
    fingerprint and no stored byte."""
    if hasattr(params_type, "check_given"):
        params_type.check_given(given)
    return params_type(**given)


def from_dict(params_type: type, values: Mapping[str, Any]) -> Any:
    """Rebuild a parameter dataclass from its `to_dict` form (a store's `params` attribute)."""
    hints = typing.get_type_hints(params_type)
    apart = getattr(params_type, "RECORDED_APART", ())
    kwargs = params_type.from_recorded(values) if apart else {}
    for f in dataclasses.fields(params_type):
        if f.name in values and f.name not in apart:
            kind, value = hints[f.name], values[f.name]
            kwargs[f.name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) else value
    return params_type(**kwargs)
