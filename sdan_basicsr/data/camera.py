"""Synthetic RAW cameras: sampling one per scene, and the two halves of its pipeline (unprocess, process).

Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR 2019): a photograph's linear sRGB radiance goes
to the camera's raw RGB by a colour matrix and inverse white-balance gains, and comes back through demosaic, gains,
the inverse matrix and a tone curve. Every range a camera is drawn from is stated once, here, with its source.
"""
from typing import Optional, Sequence

import numpy as np

from sdan_basicsr.data import raw_utils

#: linear sRGB (D65) → CIE XYZ (IEC 61966-2-1).
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
#: XYZ → camera matrices of real cameras that training cameras mix (Brooks et al. 2019, ``random_ccm``).
TRAIN_XYZ_TO_CAM = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.613, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.838, -0.263, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.097, 0.1581, 0.5181)),
)
#: XYZ → camera matrices that no training camera mixes, for tests of robustness to the camera (dcraw's / LibRaw's
#: ``adobe_coeff`` table, ×1e-4).
HELD_OUT_XYZ_TO_CAM = {
    'Canon EOS 5D Mark III': ((0.6722, -0.0635, -0.0963), (-0.4287, 1.2460, 0.2028), (-0.0908, 0.2162, 0.5668)),
    'Canon EOS 5D Mark II': ((0.4716, 0.0603, -0.0830), (-0.7798, 1.5474, 0.2480), (-0.1496, 0.1937, 0.6651)),
}
#: White-balance gains of a training camera: red ~ U[1.9, 2.4], blue ~ U[1.5, 1.9] (Brooks et al. 2019).
RED_GAIN = (1.9, 2.4)
BLUE_GAIN = (1.5, 1.9)
#: Exposure (scene radiance → sensor, before the gains), uniform: Brooks et al.'s brightening 1 / N(0.8, 0.1), kept
#: below 1 so that a white-balanced channel does not clip.
EXPOSURE = (0.55, 0.95)
#: Heteroscedastic sensor noise, variance = shot · x + read (normalised units): ln shot ~ U[ln 1e-4, ln 0.012],
#: ln read = 2.18 ln shot + 1.20 + N(0, 0.26) (Brooks et al. 2019, fit to the Darmstadt Noise Dataset's cameras).
LOG_SHOT = (np.log(1e-4), np.log(0.012))
READ_SLOPE, READ_OFFSET, READ_SPREAD = 2.18, 1.20, 0.26
#: ISO-like noise levels of the range, as quantiles of ln shot: low, mid, high.
NOISE_LEVELS = {'low': 0.1, 'mid': 0.5, 'high': 0.9}
#: Bit depth → (black levels, white level) of common sensors.
LEVELS = {12: ((0, 128, 256), 4095), 14: ((512, 1024, 2048), 16383)}
#: Tone curve of the camera's JPEG: the sRGB encoding, then a blend with the S-curve 3y² − 2y³ of this strength
#: (Brooks et al.'s smoothstep), uniform.
TONE_STRENGTH = (0., 0.6)
#: Share of training cameras that are *plain*: raw RGB = linear sRGB (no colour matrix to undo) and a plain gamma-2.2
#: JPEG without tone curve — the demo camera's colour, and what a raw converter gives without a camera profile.
PLAIN_FRACTION = 0.2
#: Lens blur of a shot (point-spread function, in pixels of that shot): Gaussian σ, defocus disc radius, motion
#: length (BSRAW / NTIRE RAW-SR: random blur kernels on the mosaic planes). The long-focal shot, the target, gets the
#: lower part of each range.
PSF_KINDS = ('gaussian', 'defocus', 'motion')
PSF_RANGE = {'gaussian': (0.3, 1.2), 'defocus': (0.5, 1.8), 'motion': (1.0, 3.0)}
PSF_TARGET_FRACTION = 0.5


def rgb_to_cam(xyz_to_cam: Sequence[Sequence[float]]) -> np.ndarray:
    """linear sRGB → camera RGB of a camera with ``xyz_to_cam``, rows normalised to 1 (white → (1, 1, 1) before the
    gains), as LibRaw's ``cam_xyz_coeff`` computes it from a DNG's ColorMatrix1."""
    m = np.asarray(xyz_to_cam, dtype=np.float64) @ SRGB_TO_XYZ
    return m / m.sum(axis=1, keepdims=True)


def srgb_encode(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1) of linear values in [0, 1]."""
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_encode`."""
    y = np.clip(y, 0, 1)
    return np.where(y <= 0.04045, y / 12.92, np.power((y + 0.055) / 1.055, 2.4))


def tone(y: np.ndarray, strength: float) -> np.ndarray:
    """The camera's tone curve on sRGB-encoded values: ``(1 − s) y + s (3y² − 2y³)``, monotonic for s ≤ 1."""
    return y if strength == 0 else (1 - strength) * y + strength * y * y * (3 - 2 * y)


def inverse_tone(z: np.ndarray, strength: float, steps: int = 30) -> np.ndarray:
    """Inverse of :func:`tone` (bisection; exact to float32 in 30 steps). For s = 1 it is Brooks et al.'s inverse
    smoothstep ``0.5 − sin(asin(1 − 2z) / 3)``."""
    if strength == 0:
        return z
    lo, hi = np.zeros_like(z), np.ones_like(z)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        below = tone(mid, strength) < z
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def noise_read(log_shot: float, rng: Optional[np.random.Generator]) -> float:
    """ln read for ``log_shot``: Brooks et al.'s line, plus its N(0, 0.26) scatter when ``rng`` is given."""
    return READ_SLOPE * log_shot + READ_OFFSET + (rng.normal(0, READ_SPREAD) if rng is not None else 0.)


def noise_at(level: str) -> dict:
    """``{'shot', 'read'}`` (variances) at a named level of :data:`NOISE_LEVELS`, read on the line, no scatter."""
    log_shot = LOG_SHOT[0] + NOISE_LEVELS[level] * (LOG_SHOT[1] - LOG_SHOT[0])
    return dict(shot=float(np.exp(log_shot)), read=float(np.exp(noise_read(log_shot, None))))


def sample_psf(rng: np.random.Generator, target: bool) -> dict:
    """A random point-spread function of one shot (:data:`PSF_RANGE`); the target's from the lower part."""
    kind = PSF_KINDS[int(rng.integers(len(PSF_KINDS)))]
    lo, hi = PSF_RANGE[kind]
    if target:
        hi = lo + PSF_TARGET_FRACTION * (hi - lo)
    return dict(kind=kind, size=float(rng.uniform(lo, hi)), angle=float(rng.uniform(0, 180)))


def psf_kernel(psf: dict) -> np.ndarray:
    """The normalised 2-D kernel of a :func:`sample_psf` description."""
    size, kind = psf['size'], psf['kind']
    radius = int(np.ceil(3 * size if kind == 'gaussian' else size + 1))
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float64)
    if kind == 'gaussian':
        k = np.exp(-(x**2 + y**2) / (2 * size**2))
    elif kind == 'defocus':  # a disc, anti-aliased over one pixel
        k = np.clip(size + 0.5 - np.hypot(x, y), 0, 1)
    else:  # a line of ``size`` pixels at ``angle``, anti-aliased
        t = np.deg2rad(psf['angle'])
        along, across = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        k = np.clip(1 - np.abs(across), 0, 1) * np.clip(size / 2 + 0.5 - np.abs(along), 0, 1)
    return (k / k.sum()).astype(np.float32)


def plain_colour() -> dict:
    """The colour of a plain camera, the demo camera's: sensor RGB = linear sRGB, gamma-2.2 JPEGs, no tone curve."""
    return dict(xyz_to_cam=np.linalg.inv(SRGB_TO_XYZ).tolist(), tone='gamma', tone_strength=0.)


def demo_camera(exposure: float, shot: float, read_std: float) -> dict:
    """The demo tree's fixed camera: :func:`plain_colour`, RGGB, Sony's levels, no lens blur."""
    return dict(pattern='RGGB', black=raw_utils.SONY_BLACK_LEVEL, white=raw_utils.SONY_WHITE_LEVEL,
                exposure=exposure, shot=shot, read=read_std**2, **plain_colour())


def sample_camera(rng: np.random.Generator, xyz_to_cam: Optional[Sequence] = None,
                  noise: Optional[str] = None) -> dict:
    """A random camera (JSON-serialisable), deterministic by ``rng``.

    Colour matrix: a random convex combination of :data:`TRAIN_XYZ_TO_CAM` (weights uniform, normalised), unless
    ``xyz_to_cam`` is given. CFA phase uniform over RGGB/BGGR/GRBG/GBRG, bit depth 12 or 14 with a black level of
    :data:`LEVELS`, exposure :data:`EXPOSURE`, noise of :data:`LOG_SHOT` (or at ``noise``, a name of
    :data:`NOISE_LEVELS`), tone strength :data:`TONE_STRENGTH`; a share :data:`PLAIN_FRACTION` of the cameras drawn
    without ``xyz_to_cam`` is plain (:func:`plain_colour`). White balance and lens
    blur are per scene and per shot (:func:`sample_gains`, :func:`sample_psf`).
    """
    weights = rng.uniform(1e-8, 1, len(TRAIN_XYZ_TO_CAM))
    mixed = np.tensordot(weights / weights.sum(), np.asarray(TRAIN_XYZ_TO_CAM), axes=1)
    pattern = sorted(raw_utils.CFA_OFFSETS)[int(rng.integers(4))]
    bits = (12, 14)[int(rng.integers(2))]
    blacks, white = LEVELS[bits]
    log_shot = float(rng.uniform(*LOG_SHOT))
    read = float(np.exp(noise_read(log_shot, rng)))
    camera = dict(xyz_to_cam=(mixed if xyz_to_cam is None else np.asarray(xyz_to_cam)).tolist(), pattern=pattern,
                  black=int(blacks[int(rng.integers(len(blacks)))]), white=white,
                  exposure=float(rng.uniform(*EXPOSURE)), shot=float(np.exp(log_shot)), read=read,
                  tone='srgb', tone_strength=float(rng.uniform(*TONE_STRENGTH)))
    if xyz_to_cam is None and rng.uniform() < PLAIN_FRACTION:
        camera.update(plain_colour())
    if noise is not None:
        camera.update(noise_at(noise))
    return camera


def sample_gains(rng: np.random.Generator) -> list:
    """White-balance gains [R, G, G, B] of a training camera's scene (:data:`RED_GAIN`, :data:`BLUE_GAIN`)."""
    r, b = rng.uniform(*RED_GAIN), rng.uniform(*BLUE_GAIN)
    return [float(r), 1., 1., float(b)]


def unprocess(radiance: np.ndarray, camera: dict, wb: Sequence[float]) -> np.ndarray:
    """Scene radiance (linear sRGB, H×W×3 float32) → the sensor's normalised camera RGB: exposure, colour matrix,
    inverse white-balance gains. Not clipped: the sensor saturates in :func:`noisy_counts`."""
    gains = np.array([wb[0], wb[1], wb[3]], dtype=np.float32)
    m = rgb_to_cam(camera['xyz_to_cam'])
    if np.allclose(m, np.eye(3)):
        return radiance * camera['exposure'] / gains
    return radiance @ (m * camera['exposure'] / gains[:, None]).T.astype(np.float32)


def process(sensor: np.ndarray, camera: dict, wb: Sequence[float]) -> np.ndarray:
    """The camera's rendering of demosaicked sensor RGB (H×W×3, normalised): white-balance gains, camera → sRGB
    matrix (the inverse of :func:`rgb_to_cam`), tone curve; returns the JPEG's values in [0, 1].

    ``tone: 'gamma'`` is the demo camera's plain ``x ** (1 / 2.2)``; ``'srgb'`` the sRGB curve, then :func:`tone`.
    """
    gains = np.array([wb[0], wb[1], wb[3]], dtype=np.float32)
    rgb = sensor * gains
    m = rgb_to_cam(camera['xyz_to_cam'])
    if not np.allclose(m, np.eye(3)):
        rgb = rgb @ np.linalg.inv(m).T.astype(np.float32)
    rgb = np.clip(rgb, 0, 1)
    if camera['tone'] == 'gamma':
        return rgb**(1 / raw_utils.JPEG_GAMMA)
    return tone(srgb_encode(rgb), camera['tone_strength']).astype(np.float32)


def noisy_counts(mosaic: np.ndarray, camera: dict, rng: np.random.Generator) -> np.ndarray:
    """A normalised mosaic with heteroscedastic noise (variance shot · x + read), quantised to the camera's raw
    counts (black level, white level) as uint16."""
    variance = np.maximum(camera['shot'] * mosaic + camera['read'], 0)
    noisy = mosaic + rng.normal(size=mosaic.shape).astype(np.float32) * np.sqrt(variance).astype(np.float32)
    black, white = camera['black'], camera['white']
    return np.clip(np.round(black + noisy * (white - black)), 0, white).astype(np.uint16)
