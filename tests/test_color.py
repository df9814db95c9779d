"""Colour matching (``sdan_basicsr.data.color``): a known 3×3 + offset transform is recovered from a misaligned pair."""
import cv2
import numpy as np
import pytest
from skimage import data

from sdan_basicsr.data.color import apply_color_transform, fit_color_transform, identity_transform, match_color

#: A colour transform far from the identity: channel mixing, gains and offsets.
TRANSFORM = np.array([[0.85, 0.10, 0.02, 0.03], [0.05, 0.90, -0.04, 0.02], [-0.03, 0.12, 1.10, -0.05]])


def _pair(shift=(8., -6.), angle=0.8, outliers=True, noise=0.01):
    """An (H, W, 3) image and its reference (H/4, W/4, 3): the image seen through TRANSFORM, moved by ``shift``
    output pixels and rotated by ``angle`` degrees, noisy, with a patch of garbage (``outliers``), clipped to
    [0, 1]; the image itself has a clipped highlight."""
    rng = np.random.default_rng(0)
    img = cv2.resize(data.astronaut().astype(np.float32) / 255, (512, 512), interpolation=cv2.INTER_AREA)
    warp = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
    warp[:, 2] += shift
    moved = cv2.warpAffine(img, warp, (512, 512), borderMode=cv2.BORDER_REFLECT)
    ref = cv2.resize(apply_color_transform(moved, TRANSFORM), (128, 128), interpolation=cv2.INTER_AREA)
    ref += rng.normal(0, noise, ref.shape).astype(np.float32)
    if outliers:
        ref[16:40, 20:50] = rng.random((24, 30, 3))
    img[300:360, 260:380] = 1.0
    return img, np.clip(ref, 0, 1)


def _naive(img, ref):
    """Plain least squares on the reference grid: what misalignment and outliers bias."""
    low = cv2.resize(img, ref.shape[1::-1], interpolation=cv2.INTER_AREA).reshape(-1, 3)
    x = np.hstack([low, np.ones((len(low), 1))])
    return np.linalg.lstsq(x, ref.reshape(-1, 3), rcond=None)[0].T


def test_exact_pair_gives_the_transform_exactly():
    img, ref = _pair(shift=(0., 0.), angle=0., outliers=False, noise=0.)
    np.testing.assert_allclose(fit_color_transform(img, ref), TRANSFORM, atol=1e-3)


def test_recovers_the_transform_despite_misalignment_outliers_and_clipping():
    img, ref = _pair()
    fit = fit_color_transform(img, ref)
    assert np.abs(fit - TRANSFORM).max() < 0.03, np.round(fit, 3)
    assert np.abs(_naive(img, ref) - TRANSFORM).max() > 0.1  # the pair is hard: plain least squares is far off
    matched = match_color(img, ref)
    assert matched.shape == img.shape and matched.dtype == np.float32
    np.testing.assert_allclose(matched, apply_color_transform(img, fit), atol=1e-5)


def test_alignment_is_what_removes_the_misalignment_bias():
    img, ref = _pair(outliers=False)
    unaligned = np.abs(fit_color_transform(img, ref, align=False) - TRANSFORM).max()
    aligned = np.abs(fit_color_transform(img, ref) - TRANSFORM).max()
    assert aligned < unaligned / 2, (aligned, unaligned)


def test_flat_or_clipped_images_give_the_identity():
    flat = np.full((64, 64, 3), 0.5, np.float32)
    np.testing.assert_array_equal(fit_color_transform(np.ones((64, 64, 3), np.float32), flat), identity_transform())
    np.testing.assert_allclose(fit_color_transform(flat, flat), identity_transform(), atol=1e-6)
    grey = np.repeat(np.linspace(0.1, 0.9, 64 * 64, dtype=np.float32).reshape(64, 64, 1), 3, axis=2)
    np.testing.assert_allclose(fit_color_transform(grey, grey), identity_transform(), atol=1e-3)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        fit_color_transform(np.zeros((8, 8)), np.zeros((8, 8, 3)))
