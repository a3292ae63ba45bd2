"""Still-image extraction: one image file to an S x S RGB array.

Decoding is OpenCV's (`cv2.imdecode` with `IMREAD_COLOR`, which gives 3 channels for grey,
CMYK and alpha images alike and applies the EXIF orientation, exactly as `cv2.imread` does);
resizing is `cv2.INTER_AREA`, as for video frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowstore.errors import SampleError
from flowstore.extraction._cv import cv2, decoding, resize_rgb
from flowstore.params import ImageParams

_JPEG_START = b"\xff\xd8"
_JPEG_SCAN = b"\xff\xda"
_JPEG_END = b"\xff\xd9"


def _is_truncated_jpeg(data: bytes) -> bool:
    """A JPEG whose last scan has no end-of-image marker after it, i.e. a cut-off file.

    OpenCV 4 decodes such a file with a warning and fills the missing rows with grey; we want a
    failure instead. The marker bytes cannot occur inside entropy-coded data (0xFF is always
    stuffed there), so searching after the last start-of-scan marker is exact; bytes after the
    end marker, which some real files carry, are ignored as decoders ignore them.
    """
    if not data.startswith(_JPEG_START):
        return False
    scan = data.rfind(_JPEG_SCAN)
    return scan < 0 or data.find(_JPEG_END, scan) < 0


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as an (H, W, 3) uint8 BGR array.

    Raises:
        SampleError: the file is missing, empty (0 bytes), cut off, or not an image OpenCV decodes.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleError(f"image file is missing: {path.name}")
    data = path.read_bytes()
    if not data:
        raise SampleError(f"image file is empty (0 bytes): {path.name}")
    if _is_truncated_jpeg(data):
        raise SampleError(f"truncated JPEG (no end-of-image marker): {path.name}")
    with decoding(path):
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
