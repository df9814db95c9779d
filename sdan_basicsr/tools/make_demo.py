"""Write a small SR-RAW-layout tree of synthetic optical-zoom sequences made from real photographs.

Usage: ``sdan-make-demo OUT [--num-scenes 4] [--size 512] [--seed 0]`` (or ``python -m sdan_basicsr.tools.make_demo``).
Each scene is one photograph seen through a zoom lens at SR-RAW's 7 focal lengths, under its own illuminant; training
scenes show scikit-image's photographs under random colour variations, test scenes photographs never trained on.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
from functools import lru_cache
from typing import List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin
from skimage import data as skdata

from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools.prepare_srraw import prepare_srraw

#: Focal lengths (mm) of shots 00001 … 00007: 4X pairs 5→1 (4.4), 6→2 (4.3), 7→3 (4.2), as in SR-RAW.
FOCAL_LENGTHS = (240., 150., 100., 70., 55., 35., 24.)
#: Colour photographs of scikit-image that training scenes show, in order, each under its own colour variation.
TRAIN_PHOTOS = ('coffee', 'rocket', 'astronaut', 'hubble_deep_field', 'immunohistochemistry', 'retina')
#: Photographs that only test scenes show, in order, in their own colours: mostly blue (Grace Hopper in navy
#: uniform before a flag), mostly green (a dahlia before foliage), blue sky and green trees (a temple), red (a
#: motorcycle) and ginger (a cat). Never a training photograph or a variation of one.
TEST_PHOTOS = ('grace_hopper', 'flower', 'china', 'stereo_motorcycle', 'chelsea')
#: Photographs that are files of an installed package (the others are functions of ``skimage.data``): name →
#: (package, path inside it).
PHOTO_FILES = {'grace_hopper': ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
               'flower': ('sklearn', 'datasets/images/flower.jpg'),
               'china': ('sklearn', 'datasets/images/china.jpg')}
#: Colour variation of a training scene's radiance: a hue rotation about the grey axis, uniform over this many
#: degrees either way, and a saturation factor, log-uniform in this range (see :func:`color_matrix`).
HUE_RANGE = 180.
SATURATION_RANGE = (0.6, 1.4)
#: Illuminant of every scene: a colour temperature (K), uniform in mired between these, and a tint (a factor on the
#: red and blue white-balance gains, log-uniform within ±TINT); the camera's white balance follows it.
TEMPERATURE_RANGE = (2700., 7500.)
TINT = 0.05
#: The demo camera's white-balance gains [R, B] at 5500 K and their change with the illuminant, in log gain per
#: mired (1e6 / K): gains of cameras are close to log-linear in mired (warm light, fewer mired → lower R, higher B).
WB_AT_5500K = (2.1, 1.6)
WB_PER_MIRED = (-0.00255, 0.00298)
#: Fraction of the photograph that ``00001`` sees; wider shots see its mirror-extended surroundings.
PHOTO_FOV = 0.9
#: Scene radiance → sensor exposure, below 1 so that no white-balanced channel clips.
EXPOSURE = 0.85
#: Noise of the RAW mosaic (normalised units): variance = SHOT_NOISE · x + READ_NOISE².
SHOT_NOISE = 1e-4
READ_NOISE = 2e-3
META_FILE = 'demo_meta.json'


def photo_path(name: str) -> str:
    """The file of a photograph of :data:`PHOTO_FILES`, inside its installed package."""
    package, path = PHOTO_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'photograph {name!r} ships with the package {package!r}, which is not installed '
                          '(pip install -e . installs it)')
    return osp.join(spec.submodule_search_locations[0], path)


@lru_cache(maxsize=4)
def photo_linear(name: str) -> np.ndarray:
    """A photograph (``skimage.data.<name>`` or one of :data:`PHOTO_FILES`) as linear RGB float32 (sRGB ≈ gamma 2.2)."""
    if name in PHOTO_FILES:
        img = np.asarray(Image.open(photo_path(name)).convert('RGB'))
    else:
        img = getattr(skdata, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return (img[..., :3].astype(np.float32) / 255.)**2.2


def color_matrix(hue: float, saturation: float) -> np.ndarray:
    """3×3 matrix of a colour variation of linear RGB: rotate the hue by ``hue`` degrees about the grey axis and
    scale the saturation (the distance from it) by ``saturation``; greys stay as they are."""
    grey = np.full((3, 3), 1 / 3)
    u = np.ones(3) / np.sqrt(3)
    cross = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    t = np.deg2rad(hue)
    rotation = np.cos(t) * np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * np.outer(u, u)
    return grey + saturation * rotation @ (np.eye(3) - grey)


def scene_photo(scene: dict) -> np.ndarray:
    """The scene's radiance map: its photograph (linear RGB) under its colour matrix, clipped to the physical
    range of a reflectance, [0, 1]."""
    photo = photo_linear(scene['photo'])
    matrix = np.asarray(scene['color']['matrix'], dtype=np.float32)
    if np.array_equal(matrix, np.eye(3)):
        return photo
    return np.clip(photo @ matrix.T, 0, 1)


def camera_white_balance(temperature: float, tint: Tuple[float, float] = (1., 1.)) -> List[float]:
    """White-balance gains [R, G, G, B] of the demo camera under an illuminant of ``temperature`` K.

    ``log gain = log WB_AT_5500K + WB_PER_MIRED · (1e6 / temperature − 1e6 / 5500)``, times ``tint`` (R, B).
    """
    mired = 1e6 / temperature - 1e6 / 5500
    r, b = (g * np.exp(k * mired) * t for g, k, t in zip(WB_AT_5500K, WB_PER_MIRED, tint))
    return [float(r), 1., 1., float(b)]


def color_params(rng: np.random.Generator, vary: bool) -> dict:
    """Random but JSON-serialisable colour of one scene: illuminant, white balance and, if ``vary``, a colour
    variation of its radiance (the identity otherwise).

    Returns:
        dict: ``color`` (``hue`` degrees, ``saturation``, ``matrix`` 3×3 of :func:`color_matrix`, ``temperature``
        K, ``tint`` [R, B]) and ``wb`` [R, G, G, B] = :func:`camera_white_balance` of that illuminant.
    """
    hue, saturation = 0., 1.
    if vary:
        hue = float(rng.uniform(-HUE_RANGE, HUE_RANGE))
        saturation = float(np.exp(rng.uniform(*np.log(SATURATION_RANGE))))
    lo, hi = (1e6 / t for t in TEMPERATURE_RANGE)
    temperature = float(1e6 / rng.uniform(hi, lo))
    tint = np.exp(rng.uniform(-TINT, TINT, 2)).tolist()
    matrix = np.eye(3) if not vary else color_matrix(hue, saturation)
    color = dict(hue=hue, saturation=saturation, matrix=matrix.tolist(), temperature=temperature, tint=tint)
    return dict(color=color, wb=camera_white_balance(temperature, tint))


def shot_to_photo(scene: dict, k: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Photograph coordinates seen by pixel (x, y) of shot ``k`` (1-based): the ground-truth camera geometry.

    Pixel → nominal coordinates in ``00001``'s frame (focal ratio) → known affine misalignment plus
    the smooth non-affine residual (radial distortion and a low-frequency displacement field) →
    photograph coordinates.

    Args:
        scene (dict): One scene of the demo's metadata.
        k (int): Shot index.
        x (ndarray): Column coordinates in the shot.
        y (ndarray): Row coordinates, same shape.

    Returns:
        ndarray: (..., 2) photograph coordinates (column, row).
    """
    h, w = scene['size']
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    shot = scene['shots'][k - 1]
    p = c + (np.stack([x, y], axis=-1) - c) * (scene['focal_lengths'][0] / scene['focal_lengths'][k - 1])
    a = np.asarray(shot['affine'])
    q = p @ a[:, :2].T + a[:, 2]
    d = (p - c) / (0.5 * np.hypot(h, w))
    r2 = (d**2).sum(-1, keepdims=True)
    res = shot['residual']
    q = q + res['radial'] * d * r2
    phase = 2 * np.pi * (d[..., :1] * res['freq'][0] + d[..., 1:] * res['freq'][1]) + np.asarray(res['phase'])
    q = q + np.asarray(res['field']) * np.sin(phase)
    ph, pw = scene['photo_size']
    return np.array([(pw - 1) / 2, (ph - 1) / 2]) + (q - c) * scene['photo_per_pixel']


def render_linear(scene: dict, k: int, x: np.ndarray, y: np.ndarray, pitch: float = 1.0) -> np.ndarray:
    """Scene radiance (linear RGB) seen by shot ``k`` at pixel coordinates (x, y).

    Args:
        scene (dict): One scene of the demo's metadata.
        k (int): Shot index (1-based).
        x (ndarray): (H, W) column coordinates in the shot.
        y (ndarray): (H, W) row coordinates.
        pitch (float): Spacing of the samples in shot pixels (sets the anti-alias blur). Default: 1.

    Returns:
        ndarray: (H, W, 3) float32.
    """
    photo = scene_photo(scene)
    step = pitch * scene['photo_per_pixel'] * scene['focal_lengths'][0] / scene['focal_lengths'][k - 1]
    if step > 1:
        photo = cv2.GaussianBlur(photo, (0, 0), 0.45 * step)
    uv = shot_to_photo(scene, k, x, y).astype(np.float32)
    return cv2.remap(photo, uv[..., 0], uv[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def read_meta(folder: str) -> Optional[dict]:
    """The ``demo_meta.json`` that :func:`make_demo` wrote into ``folder``; None if there is none."""
    path = osp.join(folder, META_FILE)
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def exact_target(meta: dict, sample: dict, scale: int) -> np.ndarray:
    """The ideal zoom of a test pair: the scene seen from the LR shot's own position, ``scale`` × finer.

    SR-RAW's targets are other shots, misaligned beyond what the ECC affine removes, so PSNR against
    them is capped by the misalignment; the demo knows the true geometry and renders the target that
    a perfect zoom of the LR shot would produce, on the dataset's output grid and in its no-white-balance
    convention (sensor values gamma-encoded), with no misalignment at all.

    Args:
        meta (dict): The contents of ``demo_meta.json``.
        sample (dict): One entry of ``SRRAWPairedDataset.samples`` of a ``test`` (whole image) dataset.
        scale (int): The dataset's ``scale``.

    Returns:
        ndarray: (H, W, 3) float32 in [0, 1], RGB, the size of that sample's ``gt``.
    """
    scene_dir, shot = osp.split(osp.splitext(sample['lq_path'])[0])
    key = '/'.join(osp.normpath(scene_dir).split(os.sep)[-2:])
    scene = meta['scenes'][key]
    x0, y0, x1, y1 = sample['box']
    v, u = np.mgrid[0:(y1 - y0) * scale, 0:(x1 - x0) * scale].astype(np.float64)
    m = sample['raw_to_jpg'] @ raw_utils.grid_matrix(x0, y0, 1 / scale)
    x, y = m[0, 0] * u + m[0, 1] * v + m[0, 2], m[1, 0] * u + m[1, 1] * v + m[1, 2]
    r, _, _, b = scene['wb']
    sensor = render_linear(scene, int(shot), x, y, pitch=1 / scale) * meta['exposure'] / np.array([r, 1, b])
    return (np.clip(sensor, 0, 1)**(1 / raw_utils.JPEG_GAMMA)).astype(np.float32)


def _save_jpg(path: str, rgb: np.ndarray, focal_length: float) -> None:
    exif = Image.Exif()
    exif[raw_utils.ORIENTATION_TAG] = 1
    exif.get_ifd(raw_utils.EXIF_IFD_TAG)[raw_utils.FOCAL_LENGTH_TAG] = TiffImagePlugin.IFDRational(
        int(round(focal_length * 100)), 100)
    Image.fromarray(rgb).save(path, quality=95, exif=exif)


def write_shot(scene: dict, k: int, folder: str, rng: np.random.Generator) -> None:
    """Write ``0000k.ARW`` (DNG mosaic with noise) and ``0000k.JPG`` (its ISP rendering with EXIF)."""
    h, w = scene['size']
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    radiance = render_linear(scene, k, x, y) * EXPOSURE
    r, _, _, b = scene['wb']
    sensor = radiance / np.array([r, 1, b], dtype=np.float32)
    mosaic = raw_utils.mosaic_rgb(sensor.astype(np.float32))
    mosaic += rng.normal(size=mosaic.shape).astype(np.float32) * np.sqrt(SHOT_NOISE * mosaic + READ_NOISE**2)
    black, white = raw_utils.SONY_BLACK_LEVEL, raw_utils.SONY_WHITE_LEVEL
    counts = np.clip(np.round(black + mosaic * (white - black)), 0, white).astype(np.uint16)
    name = raw_utils.shot_name(k)
    focal = scene['focal_lengths'][k - 1]
    raw_utils.write_dng(osp.join(folder, f'{name}.ARW'), counts, 'RGGB', black, white, (1 / r, 1., 1 / b), focal)

    # camera ISP: demosaic, white balance, gamma
    norm = np.clip((counts.astype(np.float32) - black) / (white - black), 0, 1)
    rgb = cv2.cvtColor((norm * 65535).astype(np.uint16), cv2.COLOR_BayerBG2RGB).astype(np.float32) / 65535
    rgb = np.clip(rgb * np.array([r, 1, b], dtype=np.float32), 0, 1)**(1 / raw_utils.JPEG_GAMMA)
    _save_jpg(osp.join(folder, f'{name}.JPG'), (rgb * 255 + 0.5).astype(np.uint8), focal)


def scene_params(rng: np.random.Generator, photo: str, num_shots: int, size: int, shift: float,
                 residual: float, vary_color: bool) -> dict:
    """Random but JSON-serialisable parameters of one scene (geometry, then :func:`color_params`)."""
    h, w = (size * 3 // 4) // 2 * 2, size // 2 * 2
    ph, pw = photo_linear(photo).shape[:2]
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    shots = []
    for k in range(1, num_shots + 1):
        if k == 1:
            a, res = np.eye(2, 3), dict(radial=0., freq=[0., 0.], phase=[0., 0.], field=[0., 0.])
        else:
            angle, zoom = np.deg2rad(rng.uniform(-1, 1)), 1 + rng.uniform(-0.02, 0.02)
            rot = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            t = rng.uniform(0, shift) * np.array([np.cos(theta := rng.uniform(0, 2 * np.pi)), np.sin(theta)])
            a = np.hstack([rot, (c - rot @ c + t)[:, None]])
            res = dict(
                radial=rng.uniform(-0.5, 0.5) * residual,
                freq=rng.uniform(0.5, 1.5, 2).tolist(),
                phase=rng.uniform(0, 2 * np.pi, 2).tolist(),
                field=(rng.uniform(-0.5, 0.5, 2) * residual).tolist())
        shots.append(dict(affine=a.tolist(), residual=res))
    return dict(
        photo=photo,
        photo_size=[ph, pw],
        photo_per_pixel=PHOTO_FOV * min(pw / w, ph / h),
        size=[h, w],
        focal_lengths=list(FOCAL_LENGTHS[:num_shots]),
        shots=shots,
        **color_params(rng, vary_color))


def scene_plan(num_scenes: int, num_test: int, color_variation: bool = True) -> List[Tuple[str, str, bool]]:
    """(key, photograph, colour variation or not) of every scene of a tree, as :func:`make_demo` makes it."""
    num_train = num_scenes - num_test
    plan = []
    for i in range(num_scenes):
        if i < num_train:
            split, photo, vary = 'train', TRAIN_PHOTOS[i % len(TRAIN_PHOTOS)], color_variation
        else:
            j = i - num_train
            split, photo, vary = 'test', TEST_PHOTOS[j % len(TEST_PHOTOS)], j >= len(TEST_PHOTOS)
        plan.append((f'{split}/{raw_utils.shot_name(i + 1)}', photo, vary))
    return plan


def make_demo(out: str,
              num_scenes: int = 4,
              size: int = 512,
              seed: int = 0,
              shift: float = 20.,
              residual: float = 8.,
              num_test: Optional[int] = None,
              color_variation: bool = True,
              jobs: int = 1) -> dict:
    """Write a demo SR-RAW tree ``out/{train,test}/<scene>/0000k.{ARW,JPG}`` and run the preprocessing on it.

    Every shot is ``size`` × ``3/4 size`` pixels (even); scenes with an odd index have 6 shots (no
    ``00007``), the others 7. Pixels of each shot ``k ≥ 2`` are misaligned from the ideal zoom by a
    random affine (translation up to ``shift`` px in ``00001``'s pixels, rotation ≤ 1°, scale ≤ 2 %)
    plus a smooth non-affine residual of up to about ``residual`` px.

    Colour: every scene has its own illuminant, so the camera's white balance (``wb.txt``) differs from scene
    to scene. Training scenes show :data:`TRAIN_PHOTOS` in turn, each under a random hue rotation and
    saturation of its radiance (:func:`color_params`), so that a short training sees many palettes. Test
    scenes show :data:`TEST_PHOTOS` in turn, in their own colours the first time and under a colour variation
    when a photograph comes round again. The ground truth of all this goes to ``out/demo_meta.json``.
    Deterministic by ``seed``.

    Args:
        out (str): Output folder.
        num_scenes (int): Number of scenes. Default: 4.
        size (int): Width of every shot in pixels (≥ 64). Default: 512.
        seed (int): Random seed. Default: 0.
        shift (float): Largest affine translation, in pixels of ``00001``. Default: 20.
        residual (float): Scale of the non-affine residual, in pixels of ``00001``. Default: 8.
        num_test (int | None): Scenes in ``test/``. Default: None (a quarter, at least 1 if there are 2 scenes).
        color_variation (bool): Training scenes under random colour variations (else in the photographs' own
            colours). Default: True.
        jobs (int): Parallel scenes for the preprocessing. Default: 1.

    Returns:
        dict: The metadata written to ``demo_meta.json``: ``{'tree': {the arguments above}, 'scenes':
        {'train/00001': {...}, ...}}``.
    """
    if size < 64:
        raise ValueError(f'size must be at least 64, got {size}')
    if num_test is None:
        num_test = max(1, num_scenes // 4) if num_scenes >= 2 else 0
    rng = np.random.default_rng(seed)
    tree = dict(num_scenes=num_scenes, num_test=num_test, size=size, seed=seed, shift=shift, residual=residual,
                color_variation=color_variation)
    meta = dict(seed=seed, exposure=EXPOSURE, tree=tree, scenes={})
    for i, (key, photo, vary) in enumerate(scene_plan(num_scenes, num_test, color_variation)):
        num_shots = 6 if i % 2 else 7
        scene = scene_params(rng, photo, num_shots, size, shift, residual, vary)
        folder = osp.join(out, key)
        os.makedirs(folder, exist_ok=True)
        for k in range(1, num_shots + 1):
            write_shot(scene, k, folder, rng)
        meta['scenes'][key] = scene
    with open(osp.join(out, META_FILE), 'w') as f:
        json.dump(meta, f, indent=1)
    prepare_srraw(out, jobs=jobs, force=True)
    return meta


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output folder')
    parser.add_argument('--num-scenes', type=int, default=4)
    parser.add_argument('--size', type=int, default=512, help='width of every shot in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-test', type=int, default=None, help='held-out scenes (default: a quarter)')
    parser.add_argument('--shift', type=float, default=20., help='largest affine translation (px of 00001)')
    parser.add_argument('--residual', type=float, default=8., help='scale of the non-affine misalignment (px)')
    parser.add_argument('--no-color-variation', dest='color_variation', action='store_false',
                        help='training scenes in the photographs\' own colours')
    parser.add_argument('--jobs', type=int, default=1, help='parallel scenes for the preprocessing')
    args = parser.parse_args(argv)
    make_demo(args.out, num_scenes=args.num_scenes, size=args.size, seed=args.seed, shift=args.shift,
              residual=args.residual, num_test=args.num_test, color_variation=args.color_variation, jobs=args.jobs)
    print(f'SR-RAW demo tree written to {args.out}')


if __name__ == '__main__':
    main()
