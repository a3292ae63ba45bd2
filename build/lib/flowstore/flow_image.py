"""Optical flow as a colour picture: the Middlebury colour wheel (Baker et al., IJCV 2011).

Hue is the direction of (dx, dy), saturation its magnitude: zero motion is white and motion of
the normalizing magnitude is the full colour. This is the coding the field reads (the
Middlebury benchmark's `flowToColor`, torchvision's `flow_to_image`), so a flowstore picture
means what a reader expects: +x (rightwards) is red, +y (downwards, image rows) yellow, -x cyan,
-y blue-violet. Pure numpy, like the reader: no torchvision, no OpenCV.
"""

from __future__ import annotations

import numpy as np

#: Hue steps between the wheel's primaries, red-yellow, yellow-green, green-cyan, cyan-blue,
#: blue-magenta, magenta-red: chosen by Baker et al. to be perceptually even.
RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6


def colour_wheel() -> np.ndarray:
    """The wheel's 55 colours, (55, 3) float in 0..255, red first, in hue order."""
    ramps = []
    for count, start, end in ((RY, (255, 0, 0), (255, 255, 0)), (YG, (255, 255, 0), (0, 255, 0)),
                              (GC, (0, 255, 0), (0, 255, 255)), (CB, (0, 255, 255), (0, 0, 255)),
                              (BM, (0, 0, 255), (255, 0, 255)), (MR, (255, 0, 255), (255, 0, 0))):
        step = np.floor(255 * np.arange(count) / count)  # the reference's integer ramp
        ramp = np.empty((count, 3))
        for channel in range(3):
            a, b = start[channel], end[channel]
            ramp[:, channel] = a if a == b else (step if b > a else 255 - step)
        ramps.append(ramp)
    return np.concatenate(ramps)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(..., H, W, 2) flow (dx, dy) in pixels to (..., H, W, 3) uint8 RGB.

    `max_magnitude` (pixels) is the magnitude drawn at full saturation; longer vectors are
    clipped to it. None: the largest magnitude in `flow` (as torchvision normalizes).
    """
    flow = np.asarray(flow, dtype=np.float64)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) if magnitude.size else 0.0
    scale = max(max_magnitude, np.finfo(np.float32).eps)
    radius = np.minimum(magnitude / scale, 1.0)
    wheel = colour_wheel()
    n = wheel.shape[0]
    angle = np.arctan2(-flow[..., 1], -flow[..., 0]) / np.pi  # -1..1; +x gives -1 (red)
    position = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(position).astype(np.int64)
    k1 = np.where(k0 + 1 == n, 0, k0 + 1)
    fraction = (position - k0)[..., None]
    colour = ((1 - fraction) * wheel[k0] + fraction * wheel[k1]) / 255.0
    colour = 1 - radius[..., None] * (1 - colour)  # towards white as the magnitude falls
    return np.floor(255 * colour).astype(np.uint8)


def wheel_legend(size: int) -> np.ndarray:
    """A (size, size, 3) uint8 picture of the wheel: the colour at each point is that of a
    flow pointing from the centre to it, full saturation at the rim; white outside."""
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([xs - centre, ys - centre], axis=-1) / max(centre, 1.0)
    picture = flow_to_rgb(flow, max_magnitude=1.0)
    picture[np.hypot(flow[..., 0], flow[..., 1]) > 1.0] = 255
    return picture
