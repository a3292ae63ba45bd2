"""What a reader returns for each stored array: decided by the encoding the store declares.

A store declares how an array's values are encoded in its `params` attribute, under the array's
own name: `<array>_dtype` is the stored dtype the build chose for it, and a `uint8` declaration
comes with `<array>_bound` (and, since the 255-bin quantization, `<array>_quantization`) to map
it back (format 1 declares `flow` this way: `flow_dtype`, `flow_bound`, `flow_quantization`).
An array the params say nothing about holds its values as they are (uint8 pixels).

So the reader never guesses from a name or a dtype: a uint8 `frames` array stays pixels, a
uint8 array declared quantized is decoded, and a store whose declaration disagrees with what it
holds is refused rather than misread. A declared array is also a motion field ((dx, dy) per
pixel): what a horizontal flip must negate (`flowstore.reader.augment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from flowstore.errors import StoreError
from flowstore.flow_encoding import uint8_step_centre

#: What a quantized array decodes to unless a reader asks for float32: float16 rounds a decoded
#: value by less than 0.008 px within +-20 px, 5% of one quantization step, at half the bytes
#: of every later copy (batching, prefetching, host to device).
QUANTIZED_DEFAULT = np.dtype("float16")
FLOAT_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class Encoding:
    """How one array is stored and what a reader gets back.

    Attributes:
        stored: the dtype on disk.
        declared: whether the store's params declare the array (a motion field).
        step, centre: for a quantized array, value = (stored - centre) * step; else None.
    """

    stored: np.dtype
    declared: bool = False
    step: float | None = None
    centre: float | None = None

    @property
    def quantized(self) -> bool:
        return self.step is not None

    def output_dtype(self, float_dtype: str | None) -> np.dtype:
        """The dtype a reader returns: integers as stored unless quantized; floats (and decoded
        quantized values) as `float_dtype`, or as stored (float16 for quantized) when None."""
        if self.quantized:
            return np.dtype(float_dtype) if float_dtype else QUANTIZED_DEFAULT
        if self.stored.kind == "f" and float_dtype:
            return np.dtype(float_dtype)
        return self.stored

    def decode(self, stored: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Stored values as `dtype` (a quantized array's values decoded)."""
        if self.quantized:
            return np.take(self.lookup_table(dtype), stored)
        return stored.astype(dtype, copy=False)

    def lookup_table(self, dtype: np.dtype) -> np.ndarray:
        """Every stored uint8 value's decoded value, computed in float32 as
        `flowstore.flow_encoding.decode_flow` does, then rounded to `dtype`: decoding a batch is
        then one `np.take`, which runs without the GIL."""
        values = np.arange(256, dtype=np.float32)
        return ((values - np.float32(self.centre)) * np.float32(self.step)).astype(dtype)


def declared_encodings(params: Mapping[str, Any], dtypes: Mapping[str, str],
                       path: str | None = None) -> dict[str, Encoding]:
    """The encoding of each array in `dtypes` (array name -> stored dtype), from `params`.

    Raises:
        StoreError: the params declare a dtype the array does not have (the store at `path`
            is damaged, as `flowstore verify` says: an array's type edited, or its
            parameters), or a uint8 array without the bound that maps it back.
    """
    out = {}
    for name, dtype in dtypes.items():
        stored = np.dtype(dtype)
        declared = params.get(f"{name}_dtype")
        if declared is None:
            out[name] = Encoding(stored)
            continue
        damaged = "store" if path is None else f"store {str(path)!r} is damaged: it"
        if np.dtype(declared) != stored:
            raise StoreError(f"{damaged} declares {name!r} as {declared} but holds {stored}")
        if stored == np.uint8:
            if f"{name}_bound" not in params:
                raise StoreError(f"{damaged} has uint8 {name!r} but no '{name}_bound' parameter "
                                 f"to map it back")
            try:
                step, centre = uint8_step_centre(params, name)
            except (TypeError, ValueError) as exc:  # (a bound of "x", an unknown quantization)
                raise StoreError(f"{damaged} declares how {name!r} maps back wrongly: "
                                 f"{exc}") from None
            out[name] = Encoding(stored, True, step, centre)
        else:
            out[name] = Encoding(stored, True)
    return out
