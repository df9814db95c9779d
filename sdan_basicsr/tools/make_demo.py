"""Write a small SR-RAW-layout tree of synthetic optical-zoom sequences made from real photographs.

Usage: ``sdan-make-demo OUT [--num-scenes 4] [--size 512] [--seed 0]`` (or ``python -m sdan_basicsr.tools.make_demo``).
Each scene is one photograph of scikit-image seen through a zoom lens at SR-RAW's 7 focal lengths.
"""
import argparse
import json
import os
import os.path as osp
from functools import lru_cache
from typing import List, Optional

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin
from skimage import data as skdata

from sdan_basicsr.data import raw_utils
from sdan_basicsr.tools.prepare_srraw import prepare_srraw

#: Focal lengths (mm) of shots 00001 … 00007: 4X pairs 5→1 (4.4), 6→2 (4.3), 7→3 (4.2), as in SR-RAW.
FOCAL_LENGTHS = (240., 150., 100., 70., 55., 35., 24.)
#: Colour photographs of scikit-image used as scenes, in order; the demo's 8 scenes (6 train, 2 test) use each once.
PHOTOS = ('coffee', 'rocket', 'astronaut', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'stereo_motorcycle',
          'chelsea')
#: Fraction of the photograph that ``00001`` sees; wider shots see its mirror-extended surroundings.
PHOTO_FOV = 0.9
#: Scene radiance → sensor exposure, below 1 so that no white-balanced channel clips.
EXPOSURE = 0.85
#: Noise of the RAW mosaic (normalised units): variance = SHOT_NOISE · x + READ_NOISE².
SHOT_NOISE = 1e-4
READ_NOISE = 2e-3
META_FILE = 'demo_meta.json'


@lru_cache(maxsize=4)
def photo_linear(name: str) -> np.ndarray:
    """A scikit-image photograph as linear RGB float32 (sRGB approximated by gamma 2.2)."""
    img = getattr(skdata, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return (img[..., :3].astype(np.float32) / 255.)**2.2


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
    photo = photo_linear(scene['photo'])
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
                 residual: float) -> dict:
    """Random but JSON-serialisable parameters of one scene (geometry, white balance)."""
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
        wb=[rng.uniform(1.6, 2.2), 1., 1., rng.uniform(1.3, 1.9)],
        shots=shots)


def make_demo(out: str,
              num_scenes: int = 4,
              size: int = 512,
              seed: int = 0,
              shift: float = 20.,
              residual: float = 8.,
              num_test: Optional[int] = None,
              jobs: int = 1) -> dict:
    """Write a demo SR-RAW tree ``out/{train,test}/<scene>/0000k.{ARW,JPG}`` and run the preprocessing on it.

    Every shot is ``size`` × ``3/4 size`` pixels (even); scenes with an odd index have 6 shots (no
    ``00007``), the others 7. Pixels of each shot ``k ≥ 2`` are misaligned from the ideal zoom by a
    random affine (translation up to ``shift`` px in ``00001``'s pixels, rotation ≤ 1°, scale ≤ 2 %)
    plus a smooth non-affine residual of up to about ``residual`` px. The ground truth of all this
    goes to ``out/demo_meta.json``. Deterministic by ``seed``.

    Args:
        out (str): Output folder.
        num_scenes (int): Number of scenes. Default: 4.
        size (int): Width of every shot in pixels (≥ 64). Default: 512.
        seed (int): Random seed. Default: 0.
        shift (float): Largest affine translation, in pixels of ``00001``. Default: 20.
        residual (float): Scale of the non-affine residual, in pixels of ``00001``. Default: 8.
        num_test (int | None): Scenes in ``test/``. Default: None (a quarter, at least 1 if there are 2 scenes).
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
    tree = dict(num_scenes=num_scenes, num_test=num_test, size=size, seed=seed, shift=shift, residual=residual)
    meta = dict(seed=seed, exposure=EXPOSURE, tree=tree, scenes={})
    for i in range(num_scenes):
        split = 'test' if i >= num_scenes - num_test else 'train'
        key = f'{split}/{raw_utils.shot_name(i + 1)}'
        num_shots = 6 if i % 2 else 7
        scene = scene_params(rng, PHOTOS[i % len(PHOTOS)], num_shots, size, shift, residual)
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
    parser.add_argument('--jobs', type=int, default=1, help='parallel scenes for the preprocessing')
    args = parser.parse_args(argv)
    make_demo(args.out, num_scenes=args.num_scenes, size=args.size, seed=args.seed, shift=args.shift,
              residual=args.residual, num_test=args.num_test, jobs=args.jobs)
    print(f'SR-RAW demo tree written to {args.out}')


if __name__ == '__main__':
    main()
