"""Extraction parameters as frozen, validated, hashable data.

Every number that changes what a store holds lives in one of these dataclasses. Their canonical
JSON (sorted keys, no whitespace) goes into the store's attributes and into its fingerprint, so
that the same parameters are recognised across runs and different ones never silently mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

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


@dataclass(frozen=True)
class FarnebackParams:
    """Arguments of `cv2.calcOpticalFlowFarneback`; defaults are the report's (section 3)."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 5
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    flags: int = 0

    def __post_init__(self) -> None:
        _require(0.0 < self.pyr_scale < 1.0, f"pyr_scale must be in (0, 1), got {self.pyr_scale!r}")
        _require(self.levels >= 1, f"levels must be >= 1, got {self.levels!r}")
        _require(self.winsize >= 1, f"winsize must be >= 1, got {self.winsize!r}")
        _require(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations!r}")
        _require(self.poly_n in (5, 7), f"poly_n must be 5 or 7, got {self.poly_n!r}")
        _require(self.poly_sigma > 0, f"poly_sigma must be > 0, got {self.poly_sigma!r}")


@dataclass(frozen=True)
class VideoParams:
    """What a TV-HI sample holds: frame size S, flow steps T, flow encoding, Farneback settings.

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
    """

    size: int = 224
    steps: int | None = None  # T; None: DEFAULT_STEPS (linspace) or segments x stack
    flow_dtype: str = "float16"
    flow_bound: float = 20.0
    farneback: FarnebackParams = field(default_factory=FarnebackParams)
    decoder_threads: int = 1
    sampling: str = field(default="linspace", metadata=RECORDED_UNLESS_DEFAULT)
    segments: int | None = field(default=None, metadata=RECORDED_UNLESS_DEFAULT)
    stack: int | None = field(default=None, metadata=RECORDED_UNLESS_DEFAULT)

    def __post_init__(self) -> None:
        _require(isinstance(self.size, int) and 8 <= self.size <= 4096,
                 f"size must be an integer in 8..4096, got {self.size!r}")
        self._check_sampling()
        _require(isinstance(self.steps, int) and 1 <= self.steps <= 1024,
                 f"steps must be an integer in 1..1024, got {self.steps!r}")
        _require(self.flow_dtype in FLOW_DTYPES,
                 f"flow_dtype must be one of {', '.join(FLOW_DTYPES)}, got {self.flow_dtype!r}")
        _require(isinstance(self.flow_bound, (int, float)) and self.flow_bound > 0,
                 f"flow_bound must be a positive number of pixels, got {self.flow_bound!r}")
        _require(isinstance(self.decoder_threads, int) and self.decoder_threads >= 1,
                 f"decoder_threads must be an integer >= 1, got {self.decoder_threads!r}")

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
        """The extraction version; and uint8 stores name their quantization, so a reader
        decodes each store as written and a store quantized another way is never resumed into
        (its fingerprint differs)."""
        from flowstore.flow_encoding import QUANTIZATION

        quantization = {"flow_quantization": QUANTIZATION} if self.flow_dtype == "uint8" else {}
        return {"extraction": EXTRACTION_VERSION, **quantization}


@dataclass(frozen=True)
class ImageParams:
    """What a still-image sample holds: the image resized to S x S."""

    size: int = 224

    def __post_init__(self) -> None:
        _require(isinstance(self.size, int) and 8 <= self.size <= 4096,
                 f"size must be an integer in 8..4096, got {self.size!r}")

    def recorded(self) -> dict[str, Any]:
        """The extraction version (see EXTRACTION_VERSION)."""
        return {"extraction": EXTRACTION_VERSION}


def to_dict(params: Any) -> dict[str, Any]:
    """Plain nested dict of a parameter dataclass (what goes into store attributes).

    A parameter class may add entries that say what its stored values mean (`recorded()`),
    e.g. the extraction version or how uint8 flow was quantized; they go into the fingerprint
    like any parameter. A field marked `RECORDED_UNLESS_DEFAULT` is left out at its default.
    """
    values = dataclasses.asdict(params)
    for f in dataclasses.fields(params):
        if f.metadata.get("recorded_unless_default") and values[f.name] == f.default:
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
        "source_files": dict(sorted(source_files.items())),
        **({"options": dict(options)} if options else {}),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def from_options(params_type: type, dataset: str, **options: Any) -> Any:
    """Parameters of `params_type` from command-line options; None means "the default".

    An option the dataset has no use for (e.g. --steps for still images) is an error rather
    than silently ignored.
    """
    given = {key: value for key, value in options.items() if value is not None}
    known = {f.name for f in dataclasses.fields(params_type)}
    unused = sorted(set(given) - known)
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise ParameterError(f"{flags} does not apply to dataset {dataset!r}")
    return params_type(**given)


def from_dict(params_type: type, values: Mapping[str, Any]) -> Any:
    """Rebuild a parameter dataclass from its `to_dict` form (a store's `params` attribute)."""
    import typing

    hints = typing.get_type_hints(params_type)
    kwargs = {}
    for f in dataclasses.fields(params_type):
        if f.name in values:
            kind, value = hints[f.name], values[f.name]
            kwargs[f.name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) else value
    return params_type(**kwargs)
