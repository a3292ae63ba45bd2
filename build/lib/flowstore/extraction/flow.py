"""Dense optical flow between two resized RGB frames, by the algorithm its parameters name.

Every algorithm sees the frames as flowstore stores them, converted to grayscale
(`COLOR_RGB2GRAY`), and returns (H, W, 2) float32 (dx, dy) in pixels: the displacement that
takes a pixel of the first frame to its position in the second (OpenCV's convention for all
three). Farneback is a plain function. TV-L1 and DIS are OpenCV objects that hold their
settings and scratch buffers: one object is made per thread and per parameter set and reused
for every pair that thread computes (as MMAction2's flow_extraction makes one per video),
because one object is not safe to share between threads that compute at once, and making one
per pair would re-allocate its pyramids every time. Reuse does not change a result: neither
object keeps state from one pair to the next (no initial flow is passed in; the tests check
this against fresh objects).
"""

from __future__ import annotations

import threading

import numpy as np

from flowstore.extraction._cv import cv2
from flowstore.params import DISParams, FarnebackParams, FlowParams, TVL1Params

_per_thread = threading.local()


def optical_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray, params: FlowParams) -> np.ndarray:
    """Dense flow from one RGB frame to the next, in pixels: (H, W, 2) float32, (dx, dy)."""
    prev_gray = cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY)
    next_gray = cv2.cvtColor(next_rgb, cv2.COLOR_RGB2GRAY)
    if isinstance(params, FarnebackParams):
        return cv2.calcOpticalFlowFarneback(
            prev_gray, next_gray, None, params.pyr_scale, params.levels, params.winsize,
            params.iterations, params.poly_n, params.poly_sigma, params.flags)
    # None as the output: DIS would take a flow array of the right shape as its initial guess.
    return flow_object(params).calc(prev_gray, next_gray, None)


def flow_object(params: TVL1Params | DISParams) -> "cv2.DenseOpticalFlow":
    """This thread's OpenCV object for `params`, made on first use (see the module docstring)."""
    made = getattr(_per_thread, "objects", None)
    if made is None:
        made = _per_thread.objects = {}
    found = made.get(params)
    if found is None:
        made.clear()  # a thread works for one store at a time: keep only the latest settings
        found = made[params] = make_flow_object(params)
    return found


def make_flow_object(params: TVL1Params | DISParams) -> "cv2.DenseOpticalFlow":
    """A new OpenCV flow object with every recorded parameter set."""
    if isinstance(params, TVL1Params):
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=params.tau, lambda_=params.lambda_, theta=params.theta, nscales=params.nscales,
            warps=params.warps, epsilon=params.epsilon, innnerIterations=params.inner_iterations,
            outerIterations=params.outer_iterations, scaleStep=params.scale_step,
            gamma=params.gamma, medianFiltering=params.median_filtering, useInitialFlow=False)
    if isinstance(params, DISParams):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(params.finest_scale)
        dis.setPatchSize(params.patch_size)
        dis.setPatchStride(params.patch_stride)
        dis.setGradientDescentIterations(params.gradient_descent_iterations)
        dis.setVariationalRefinementIterations(params.variational_refinement_iterations)
        dis.setVariationalRefinementAlpha(params.variational_refinement_alpha)
        dis.setVariationalRefinementDelta(params.variational_refinement_delta)
        dis.setVariationalRefinementGamma(params.variational_refinement_gamma)
        dis.setUseMeanNormalization(params.use_mean_normalization)
        dis.setUseSpatialPropagation(params.use_spatial_propagation)
        return dis
    raise TypeError(f"no OpenCV flow object for {params!r}")
