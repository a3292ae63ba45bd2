"""Still-image extraction: one image file to an S x S RGB array.

Decoding is OpenCV's (`cv2.imdecode` with `IMREAD_COLOR`, which gives 3 channels for grey,
CMYK and alpha images alike and applies the EXIF orientation, exactly as `cv2.imread` does);
resizing is `cv2.INTER_AREA`, as for video frames.

An alpha channel is dropped, not composited over a background: a transparent pixel is stored
as the colour its file holds under it (often black), as PIL's `convert("RGB")` and
torchvision's `ImageReadMode.RGB` read it too, so a store reads like the images in those
loaders. A dataset of cut-outs on transparency is best flattened onto its intended background
before the build.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from flowstore.errors import SampleError
from flowstore.extraction import not_a_file
from flowstore.extraction._cv import cv2, decoding, resize_rgb
from flowstore.params import ImageParams

_JPEG_START = b"\xff\xd8"
# In entropy-coded data, 0xFF is followed by a stuffed 0x00 or is a restart marker (RST0-7);
# any other byte after a run of 0xFF (fill bytes) is the next segment's marker.
_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")
_END = 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers with no length field


def _is_truncated_jpeg(data: bytes) -> bool:
    """A JPEG that ends before its image's end-of-image marker, i.e. a cut-off file.

    OpenCV 4 decodes such a file with a warning and fills the missing rows with grey; we want a
    failure instead. The segments are walked from the start by their length fields (so a
    thumbnail inside APP1, itself a whole JPEG, is skipped), the scans' entropy-coded data up
    to the next marker; the file is whole once the first image's end marker is reached. What
    follows it is ignored, as decoders ignore it: phones append a whole MP4 to a "motion
    photo", whose bytes may hold a start-of-scan marker with no end marker after it (a search
    for the last one from the end refused 4 of 10 such files that OpenCV decodes).
    """
    if not data.startswith(_JPEG_START):
        return False
    position = len(_JPEG_START)
    while (found := _NEXT_MARKER.search(data, position)) is not None:
        marker, position = found.group(1)[0], found.end()
        if marker == _END:
            return False
        if marker in _STANDALONE:
            continue
        if position + 2 > len(data):
            return True
        position += int.from_bytes(data[position:position + 2], "big")  # (it counts itself)
        if position > len(data):
            return True
        # After a scan's header come its entropy-coded data, which the next search skips.
    return True


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as an (H, W, 3) uint8 BGR array.

    Raises:
        SampleError: the file is missing, empty (0 bytes), cut off, or not an image OpenCV decodes.
    """
    path = Path(path)
    reason = not_a_file(path, "image")
    if reason is not None:
        raise SampleError(reason)
    data = path.read_bytes()
    if not data:
        raise SampleError(f"image file is empty (0 bytes): {path.name}")
    if _is_truncated_jpeg(data):
        raise SampleError(f"truncated JPEG (no end-of-image marker): {path.name}")
    with decoding(path):  # (OpenCV's decoders catch their own errors, allocations' too)
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            raise SampleError(f"not a decodable image ({len(data)} bytes): {path.name}")
    return image


def extract_image(path: str | Path, params: ImageParams) -> np.ndarray:
    """The (S, S, 3) uint8 RGB array of one image: decoded, resized with INTER_AREA.

    Raises:
        SampleError: see `read_image`.
    """
    image = read_image(path)
    with decoding(Path(path)):
        return resize_rgb(image, params.size, params.resize)
