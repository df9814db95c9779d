"""Global colour matching: one 3×3 matrix + offset that brings a zoomed image to the colours of a reference rendition.

The reference is the camera JPEG (or another RGB rendition) of the same shot on the input grid; ``sdan-zoom
--match-color`` and ``val.match_color`` of :class:`~sdan_basicsr.models.sdan_model.SDANModel` use it.
"""
from typing import Optional, Tuple

import cv2
import numpy as np

#: A pixel takes part in the fit only where every channel of both images lies strictly inside this range: the
#: noise floor and clipped highlights do not follow a linear colour transform.
VALID_RANGE = (0.02, 0.98)
#: Long side, in pixels, of the grid the two images are aligned on, and of the coarser grid the colours are fitted on.
ALIGN_SIZE = 256
FIT_SIZE = 96
#: Robust weights, in multiples of the median residual norm: Huber's for the first iterations, then Tukey's biweight.
HUBER_CUTOFF = 1.5
TUKEY_CUTOFF = 3.0
HUBER_ITERATIONS = 3
#: Fewer valid fitting pixels than this: the identity is returned.
MIN_PIXELS = 32
#: Ridge towards the identity matrix, a variance: colour directions along which the image varies by less than
#: about its square root (3e-4) keep the identity instead of an arbitrary mapping.
RIDGE = 1e-7


def identity_transform() -> np.ndarray:
    """The (3, 4) colour transform that changes nothing."""
    return np.hstack([np.eye(3), np.zeros((3, 1))])


def apply_color_transform(img: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``img`` (..., 3) float mapped by ``transform`` (3, 4): ``img @ M.T + b``, ``[M | b] = transform``.

    Not clipped; computed in the dtype of ``img``.
    """
    m = np.asarray(transform, dtype=img.dtype)
    return img @ m[:, :3].T + m[:, 3]


def _area_resize(img: np.ndarray, long_side: int) -> np.ndarray:
    """``img`` area-averaged to a grid whose long side is at most ``long_side`` (unchanged if already smaller)."""
    h, w = img.shape[:2]
    factor = max(h, w) / long_side
    if factor <= 1:
        return img
    return cv2.resize(img, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)


def _robust_fit(img: np.ndarray, ref: np.ndarray, valid: np.ndarray, iterations: int) -> Tuple[np.ndarray, float]:
    """Iteratively reweighted least squares of ``[img, 1] → ref`` over the ``valid`` pixels: the (3, 4) transform
    (the identity with too few pixels) and the median residual norm it leaves."""
    if valid.sum() < MIN_PIXELS:
        return identity_transform(), float('inf')
    gy, gx = np.gradient(ref.mean(-1).astype(np.float64))
    grad = np.hypot(gx, gy)[valid]
    prior = 1 / (1 + (grad / (np.median(grad) + 1e-3))**2)
    x = np.hstack([img[valid].astype(np.float64), np.ones((int(valid.sum()), 1))])
    y = ref[valid].astype(np.float64)
    weights = prior
    for it in range(iterations + 1):
        ridge = np.sqrt(RIDGE * weights.sum()) * np.eye(3, 4)  # pulls M (not the offset) towards the identity
        sw = np.sqrt(weights)[:, None]
        coef = np.linalg.lstsq(np.vstack([x * sw, ridge]), np.vstack([y * sw, ridge[:, :3]]), rcond=None)[0]
        if it == iterations:
            break
        r = np.linalg.norm(y - x @ coef, axis=1)
        scale = max(float(np.median(r[weights > 0])), 1e-6)
        if it < HUBER_ITERATIONS:
            robust = np.minimum(1, HUBER_CUTOFF * scale / np.maximum(r, 1e-12))
        else:
            robust = np.clip(1 - (r / (TUKEY_CUTOFF * scale))**2, 0, None)**2
        weights = prior * robust
    return coef.T, float(np.median(np.linalg.norm(y - x @ coef, axis=1)))


def _luminance(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.mean(-1), dtype=np.float32)


def _align(img: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> Optional[np.ndarray]:
    """The affine (2, 3) that warps ``img`` onto ``ref`` (ECC on luminance, as ``sdan-prepare-srraw``), or None."""
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    try:
        _, warp = cv2.findTransformECC(_luminance(ref), _luminance(img), warp, cv2.MOTION_AFFINE, criteria,
                                       valid.astype(np.uint8), 5)
    except cv2.error:
        return None
    return warp


def fit_color_transform(img: np.ndarray,
                        ref: np.ndarray,
                        valid_range: Tuple[float, float] = VALID_RANGE,
                        align: bool = True,
                        iterations: int = 10) -> np.ndarray:
    """The colour transform that maps ``img`` onto ``ref``, fitted so that misalignment and clipping do not bias it.

    1. ``img`` is area-averaged to ``ref``'s grid. A pixel is valid if all channels of both images lie inside
       ``valid_range``: clipped highlights and the noise floor are excluded.
    2. Both are area-averaged to a grid of long side :data:`ALIGN_SIZE`, then :data:`FIT_SIZE`. An affine colour
       transform commutes with averaging, so this loses nothing, and a misalignment shrinks by the factor. A
       coarse pixel stays valid only if every pixel under it is.
    3. Weighted least squares of ``[img, 1] → ref`` on the fitting grid. The starting weights are
       ``1 / (1 + (|∇ref| / median)²)``, because edges are where misalignment shows. The weights are then
       iteratively reweighted: Huber's for :data:`HUBER_ITERATIONS` iterations, then Tukey's biweight, with the
       median residual norm as the scale. Outliers such as moved objects or specular highlights drop out. A ridge
       of :data:`RIDGE` towards the identity keeps an image of few colours well posed.
    4. With ``align``, ``img`` mapped by that first fit is aligned to ``ref`` by an affine ECC on the alignment
       grid, and step 3 is repeated on the aligned image; that fit is kept if it leaves a median residual no
       larger than the first. A misalignment that is left makes least squares underestimate the transform.

    Args:
        img (ndarray): (H, W, 3) image whose sides are multiples of ``ref``'s, e.g. the zoomed output.
        ref (ndarray): (h, w, 3) reference in the colours ``img`` should have.
        valid_range (tuple[float, float]): Open range of usable values. Default: :data:`VALID_RANGE`.
        align (bool): Align before the final fit. Default: True.
        iterations (int): Reweighting iterations. Default: 10.

    Returns:
        ndarray: (3, 4) float64 ``[M | b]`` with ``ref ≈ img @ M.T + b`` (see :func:`apply_color_transform`). It is
        the identity when fewer than :data:`MIN_PIXELS` pixels are valid.
    """
    if img.ndim != 3 or ref.ndim != 3 or img.shape[-1] != 3 or ref.shape[-1] != 3:
        raise ValueError(f'colour matching needs two (H, W, 3) images, got {img.shape} and {ref.shape}')
    h, w = ref.shape[:2]
    ref = np.asarray(ref, dtype=np.float32)  # no copy of a float32 image: a 24-MP reference is 288 MB
    img = np.asarray(img, dtype=np.float32)
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    lo, hi = valid_range
    valid = np.all((img > lo) & (img < hi) & (ref > lo) & (ref < hi), axis=-1).astype(np.float32)
    img, ref, valid = (_area_resize(a, ALIGN_SIZE) for a in (img, ref, valid))

    def fit(img_a: np.ndarray, valid_a: np.ndarray) -> Tuple[np.ndarray, float]:
        coarse = [_area_resize(a, FIT_SIZE) for a in (img_a, ref, valid_a)]
        return _robust_fit(coarse[0], coarse[1], coarse[2] > 0.999, iterations)

    transform, residual = fit(img, valid)
    warp = _align(apply_color_transform(img, transform), ref, valid > 0.999) if align else None
    if warp is not None:
        size = (ref.shape[1], ref.shape[0])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        img = cv2.warpAffine(img, warp, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpAffine(valid, warp, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0) * valid
        aligned, aligned_residual = fit(img, valid)
        if aligned_residual <= residual:  # an alignment that ECC got wrong is dropped
            transform = aligned
    return transform


def match_color(img: np.ndarray, ref: np.ndarray, **kwargs) -> np.ndarray:
    """``img`` (H, W, 3) mapped by :func:`fit_color_transform` of (``img``, ``ref``); keyword arguments go to it."""
    return apply_color_transform(img.astype(np.float32), fit_color_transform(img, ref, **kwargs))
