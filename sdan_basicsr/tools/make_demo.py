"""Write a small SR-RAW-layout tree of synthetic optical-zoom sequences made from real photographs.

Usage: ``sdan-make-demo OUT [--num-scenes 4] [--size 512] [--seed 0] [--photos DIR_OR_FILE ...] [--camera random]``
(or ``python -m sdan_basicsr.tools.make_demo``). Each scene is one photograph seen through a zoom lens at SR-RAW's 7
focal lengths, under its own illuminant; training scenes show scikit-image's photographs under random colour variations
(or crops of the ``--photos``), test scenes photographs never trained on. ``--camera random`` draws a camera per scene
(colour matrix, white balance, noise, bit depth, CFA phase, tone curve, lens blur: :mod:`sdan_basicsr.data.camera`).
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin
from skimage import data as skdata

from sdan_basicsr.data import camera as cam
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
#: File types that ``--photos`` folders are searched for.
PHOTO_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp')
#: Training photographs that Debian packages install (``scripts/get_photos.sh``): the photographs among Plasma's
#: wallpapers (``plasma-workspace-wallpapers``, the largest size of each; the illustrations are left out) and the sample
#: photographs of OpenCV's documentation (``opencv-doc``; one of each stereo / before-after pair, no drawings, text or
#: charts).
DEBIAN_PHOTOS = {
    'plasma-workspace-wallpapers': ('/usr/share/wallpapers', (
        'BytheWater', 'ColdRipple', 'ColorfulCups', 'DarkestHour', 'EveningGlow', 'FallenLeaf', 'Grey',
        'OneStandsOut', 'Path', 'summer_1am')),
    'opencv-doc': ('/usr/share/doc/opencv-doc/examples/data', (
        'aero1.jpg', 'aloeL.jpg', 'apple.jpg', 'baboon.jpg', 'board.jpg', 'building.jpg', 'butterfly.jpg',
        'chicky_512.png', 'ela_original.jpg', 'fruits.jpg', 'graf1.png', 'home.jpg', 'leuvenA.jpg', 'messi5.jpg',
        'orange.jpg', 'rubberwhale1.png', 'smarties.png', 'squirrel_cls.jpg', 'stuff.jpg')),
}
#: Shots of a scene made from a ``--photos`` file see this many photograph pixels per pixel of ``00001``, uniform:
#: at least 1, so that the target is as sharp as the photograph (a smaller photograph gives a smaller shot, down to
#: :data:`MIN_PHOTO_SHOT`).
PHOTO_PER_PIXEL = (1.0, 1.6)
MIN_PHOTO_SHOT = 448
#: At most this many scenes (crops) of one photograph per pass over the photographs: one per two shot areas it holds.
MAX_CROPS = 6
#: The long-focal shots, the targets of the ×4 training pairs (:data:`~sdan_basicsr.data.raw_utils.TRAIN_PAIRS`).
TARGET_SHOTS = tuple(sorted(hr for _, hr in raw_utils.TRAIN_PAIRS))


def photo_path(name: str) -> str:
    """The file of a photograph of :data:`PHOTO_FILES`, inside its installed package."""
    package, path = PHOTO_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'photograph {name!r} ships with the package {package!r}, which is not installed '
                          '(pip install -e . installs it)')
    return osp.join(spec.submodule_search_locations[0], path)


def debian_photos() -> List[str]:
    """The files of :data:`DEBIAN_PHOTOS`; an error names the package to install when one is missing."""
    files = []
    for package, (folder, names) in DEBIAN_PHOTOS.items():
        for name in names:
            if package == 'plasma-workspace-wallpapers':
                images = osp.join(folder, name, 'contents', 'images')
                found = sorted(os.listdir(images)) if osp.isdir(images) else []
                path = max((osp.join(images, f) for f in found), key=osp.getsize, default=images)
            else:
                path = osp.join(folder, name)
            if not osp.isfile(path):
                raise FileNotFoundError(f'{path}: photograph of the Debian package {package}, which is not installed '
                                        '(bash scripts/get_photos.sh installs it)')
            files.append(path)
    return files


def find_photos(sources: Sequence[str]) -> List[str]:
    """Photographs of ``sources``: files as given, folders searched recursively for :data:`PHOTO_EXTENSIONS`,
    ``debian`` for :func:`debian_photos`, ``skimage`` for :data:`TRAIN_PHOTOS`; sorted within each folder, so that a
    tree is deterministic."""
    files = []
    for source in sources:
        if source == 'debian':
            files += debian_photos()
        elif source == 'skimage':
            files += TRAIN_PHOTOS
        elif osp.isdir(source):
            files += sorted(osp.join(d, f) for d, _, names in os.walk(source) for f in names
                            if f.lower().endswith(PHOTO_EXTENSIONS))
        elif osp.isfile(source):
            files.append(source)
        else:
            raise FileNotFoundError(f'--photos: {source} is neither a file nor a folder')
    if sources and not files:
        raise FileNotFoundError(f'--photos: no {"/".join(PHOTO_EXTENSIONS)} file in {", ".join(sources)}')
    return files


def photo_srgb(name: str) -> np.ndarray:
    """A photograph (``skimage.data.<name>``, one of :data:`PHOTO_FILES` or a file) as sRGB float32 in [0, 1]."""
    if osp.isfile(name):
        try:
            img = np.asarray(Image.open(name).convert('RGB'))
        except OSError as err:
            raise OSError(f'cannot read photograph {name}: {err}') from err
    elif name in PHOTO_FILES:
        img = np.asarray(Image.open(photo_path(name)).convert('RGB'))
    else:
        img = getattr(skdata, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3].astype(np.float32) / 255.


def photo_shape(name: str) -> Tuple[int, int]:
    """(height, width) of a photograph: read from a file's header, without decoding it."""
    if osp.isfile(name):
        with Image.open(name) as img:
            return img.size[::-1]
    return photo_linear(name).shape[:2]


@lru_cache(maxsize=4)
def photo_linear(name: str) -> np.ndarray:
    """:func:`photo_srgb` as linear RGB float32 (sRGB ≈ gamma 2.2)."""
    return photo_srgb(name)**2.2


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
    """The scene's radiance map: its photograph (linear RGB; its ``photo_crop`` if any) under its colour matrix,
    clipped to the physical range of a reflectance, [0, 1]."""
    photo = photo_linear(scene['photo'])
    if scene.get('photo_crop'):
        x0, y0, x1, y1 = scene['photo_crop']
        photo = photo[y0:y1, x0:x1]
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


def lens_blur(scene: dict, k: int, radiance: np.ndarray) -> np.ndarray:
    """Shot ``k``'s image through its lens: its point-spread function (``shots[k - 1]['psf']``, in its own pixels),
    none for the demo camera."""
    psf = scene['shots'][k - 1].get('psf')
    if not psf:
        return radiance
    return cv2.filter2D(radiance, -1, cam.psf_kernel(psf), borderType=cv2.BORDER_REFLECT_101)


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
    radiance = render_linear(scene, int(shot), x, y, pitch=1 / scale)
    if 'camera' in scene:  # the camera's rendering of the noiseless, unblurred sensor image, white balance removed
        jpeg = clean_rendering(scene, radiance)
        return raw_utils.remove_white_balance(jpeg, np.asarray(scene['wb'])).astype(np.float32)
    r, _, _, b = scene['wb']
    sensor = radiance * meta['exposure'] / np.array([r, 1, b])
    return (np.clip(sensor, 0, 1)**(1 / raw_utils.JPEG_GAMMA)).astype(np.float32)


def clean_rendering(scene: dict, radiance: np.ndarray) -> np.ndarray:
    """The scene camera's JPEG values in [0, 1] of ``radiance`` seen without noise, mosaic or lens blur."""
    camera = scene_camera(scene)
    return cam.process(cam.unprocess(radiance.astype(np.float32), camera, scene['wb']), camera, scene['wb'])


def _save_jpg(path: str, rgb: np.ndarray, focal_length: float) -> None:
    exif = Image.Exif()
    exif[raw_utils.ORIENTATION_TAG] = 1
    exif.get_ifd(raw_utils.EXIF_IFD_TAG)[raw_utils.FOCAL_LENGTH_TAG] = TiffImagePlugin.IFDRational(
        int(round(focal_length * 100)), 100)
    Image.fromarray(rgb).save(path, quality=95, exif=exif)


def write_shot(scene: dict, k: int, folder: str, rng: np.random.Generator, clean_jpg: bool = False) -> None:
    """Write ``0000k.ARW`` (DNG mosaic with noise, carrying its camera) and ``0000k.JPG`` (the camera's rendering with
    EXIF), through the scene's camera (:mod:`sdan_basicsr.data.camera`).

    ``clean_jpg``: the JPEG is the camera's rendering of the noiseless sensor image without lens blur (as
    :func:`exact_target` renders it) instead of the rendering of the noisy mosaic; the DNG, and the random draws, stay
    as they are."""
    h, w = scene['size']
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    camera = scene_camera(scene)
    radiance = render_linear(scene, k, x, y)
    sensor = cam.unprocess(lens_blur(scene, k, radiance), camera, scene['wb'])
    dy, dx = raw_utils.CFA_OFFSETS[camera['pattern']]
    # a mosaic of pattern P starts (dy, dx) before an RGGB one (raw_utils.CFA_OFFSETS)
    mosaic = raw_utils.mosaic_rgb(np.pad(sensor, ((dy, 0), (dx, 0), (0, 0))))[dy:, dx:]
    counts = cam.noisy_counts(mosaic.astype(np.float32), camera, rng)
    black, white = camera['black'], camera['white']
    r, _, _, b = scene['wb']
    name = raw_utils.shot_name(k)
    focal = scene['focal_lengths'][k - 1]
    raw_utils.write_dng(osp.join(folder, f'{name}.ARW'), counts, camera['pattern'], black, white, (1 / r, 1., 1 / b),
                        focal, camera['xyz_to_cam'], noise_profile=(camera['shot'], camera['read']))

    if clean_jpg:
        rgb = clean_rendering(scene, radiance)
    else:  # camera ISP: demosaic, white balance, colour matrix, tone
        norm = np.clip((counts.astype(np.float32) - black) / (white - black), 0, 1)
        bayer = cv2.COLOR_BayerBG2RGB
        demosaicked = cv2.cvtColor(np.pad((norm * 65535).astype(np.uint16), ((dy, 0), (dx, 0)), mode='reflect'),
                                   bayer)
        rgb = cam.process(demosaicked[dy:, dx:].astype(np.float32) / 65535, camera, scene['wb'])
    _save_jpg(osp.join(folder, f'{name}.JPG'), (rgb * 255 + 0.5).astype(np.uint8), focal)


def scene_camera(scene: dict) -> dict:
    """The scene's camera: its ``camera`` entry, or the demo camera for trees written before cameras were recorded."""
    return scene.get('camera') or cam.demo_camera(EXPOSURE, SHOT_NOISE, READ_NOISE)


def photo_window(rng: np.random.Generator, photo_size: Sequence[int], size: int) -> dict:
    """Shot size, crop and scale of a scene made from a photograph file of ``photo_size`` (h, w), deterministic by
    ``rng``: ``00001`` sees :data:`PHOTO_PER_PIXEL` photograph pixels per pixel (a photograph too small for ``size``
    gives a smaller shot, at least :data:`MIN_PHOTO_SHOT` wide); the crop is centred on a random point and reaches as
    far as the widest shot sees, so the wide shots see the photograph's own surroundings where it has them."""
    ph, pw = photo_size
    step = float(rng.uniform(*PHOTO_PER_PIXEL))
    w = int(min(size, pw / step, ph / step * 4 / 3)) // 2 * 2
    if w < MIN_PHOTO_SHOT:
        w = MIN_PHOTO_SHOT
        step = min(pw / w, ph / (w * 3 // 4 // 2 * 2))
    h = w * 3 // 4 // 2 * 2
    fx, fy = step * w / 2, step * h / 2
    cx, cy = rng.uniform(fx, max(fx, pw - fx)), rng.uniform(fy, max(fy, ph - fy))
    reach = FOCAL_LENGTHS[0] / FOCAL_LENGTHS[-1]
    ex, ey = min(cx, pw - cx, reach * fx), min(cy, ph - cy, reach * fy)
    crop = [int(round(cx - ex)), int(round(cy - ey)), int(round(cx + ex)), int(round(cy + ey))]
    return dict(size=[h, w], photo_crop=crop, photo_size=[crop[3] - crop[1], crop[2] - crop[0]], photo_per_pixel=step)


def scene_params(rng: np.random.Generator, photo: str, num_shots: int, size: int, shift: float,
                 residual: float, vary_color: bool, camera_rng: Optional[np.random.Generator] = None,
                 camera_opt: Optional[dict] = None) -> dict:
    """Random but JSON-serialisable parameters of one scene (geometry, then :func:`color_params`).

    With ``camera_rng`` the scene gets a random camera (:func:`~sdan_basicsr.data.camera.sample_camera` with
    ``camera_opt``: ``xyz_to_cam``, ``noise``), white balance and per-shot lens blur, and a photograph file gets a
    random window (:func:`photo_window`), all drawn from ``camera_rng``, so that ``rng``'s draws, and with them the demo
    tree, stay as they are.
    """
    h, w = (size * 3 // 4) // 2 * 2, size // 2 * 2
    ph, pw = photo_linear(photo).shape[:2]
    window = {}
    if camera_rng is not None and osp.isfile(photo):
        window = photo_window(camera_rng, (ph, pw), size)
        (h, w), (ph, pw) = window['size'], window['photo_size']
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
    scene = dict(
        photo=photo,
        photo_size=[ph, pw],
        photo_per_pixel=PHOTO_FOV * min(pw / w, ph / h),
        size=[h, w],
        focal_lengths=list(FOCAL_LENGTHS[:num_shots]),
        shots=shots,
        **color_params(rng, vary_color))
    if camera_rng is not None:
        scene.update(window)
        scene['camera'] = cam.sample_camera(camera_rng, **(camera_opt or {}))
        scene['wb'] = cam.sample_gains(camera_rng)
        for k, shot in enumerate(shots, 1):
            shot['psf'] = cam.sample_psf(camera_rng, target=k in TARGET_SHOTS)
    return scene


def scene_plan(num_scenes: int, num_test: int, color_variation: bool = True,
               photos: Sequence[str] = ()) -> List[Tuple[str, str, bool]]:
    """(key, photograph, colour variation or not) of every scene of a tree, as :func:`make_demo` makes it.

    Training scenes show :data:`TRAIN_PHOTOS` in turn, or the files ``photos``, each as many times per pass as it
    holds crops (one per two 512 × 384 shot areas, at most :data:`MAX_CROPS`)."""
    num_train = num_scenes - num_test
    train = list(TRAIN_PHOTOS)
    if photos:
        train = []
        for photo in photos:
            ph, pw = photo_shape(photo)
            train += [photo] * int(np.clip(pw * ph // (2 * 512 * 384), 1, MAX_CROPS))
    plan = []
    for i in range(num_scenes):
        if i < num_train:
            split, photo, vary = 'train', train[i % len(train)], color_variation
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
              jobs: int = 1,
              photos: Sequence[str] = (),
              camera: str = 'demo',
              camera_matrix: Optional[str] = None,
              noise: Optional[str] = None,
              clean_targets: bool = False) -> dict:
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
        photos (Sequence[str]): Photograph files, folders or ``debian`` (:func:`find_photos`) that training scenes
            show instead of :data:`TRAIN_PHOTOS`, each in random windows (:func:`photo_window`); needs ``camera:
            random``. Default: () (scikit-image's).
        camera (str): ``demo``: the demo's fixed camera and illuminant law; ``random``: a camera per scene
            (:func:`~sdan_basicsr.data.camera.sample_camera`), recorded in the metadata. Default: 'demo'.
        camera_matrix (str | None): With ``camera: random``, every camera gets this colour matrix of
            :data:`~sdan_basicsr.data.camera.HELD_OUT_XYZ_TO_CAM` instead of a mixture. Default: None.
        noise (str | None): With ``camera: random``, every camera's noise at this level of
            :data:`~sdan_basicsr.data.camera.NOISE_LEVELS`. Default: None (random).
        clean_targets (bool): With ``camera: random``, the JPEGs of the training scenes' target shots
            (:data:`TARGET_SHOTS`) are their camera's rendering of the noiseless sensor image without lens blur, so
            that a network learns to zoom, denoise and deblur rather than to reproduce the target's noise and blur (the
            practice of synthetic RAW training data: Brooks et al. 2019, BSRAW); their DNGs and every held-out scene
            stay real shots. Default: False.

    Returns:
        dict: The metadata written to ``demo_meta.json``: ``{'tree': {the arguments above}, 'scenes':
        {'train/00001': {...}, ...}}``.
    """
    if size < 64:
        raise ValueError(f'size must be at least 64, got {size}')
    if num_test is None:
        num_test = max(1, num_scenes // 4) if num_scenes >= 2 else 0
    if camera not in ('demo', 'random'):
        raise ValueError(f"camera must be 'demo' or 'random', got {camera!r}")
    if camera == 'demo' and (photos or camera_matrix or noise or clean_targets):
        raise ValueError('photos, camera_matrix, noise and clean_targets need camera: random')
    if camera_matrix is not None and camera_matrix not in cam.HELD_OUT_XYZ_TO_CAM:
        raise ValueError(f'camera_matrix: {camera_matrix!r} is not one of {sorted(cam.HELD_OUT_XYZ_TO_CAM)}')
    if noise is not None and noise not in cam.NOISE_LEVELS:
        raise ValueError(f'noise: {noise!r} is not one of {sorted(cam.NOISE_LEVELS)}')
    files = find_photos(photos)
    rng = np.random.default_rng(seed)
    tree = dict(num_scenes=num_scenes, num_test=num_test, size=size, seed=seed, shift=shift, residual=residual,
                color_variation=color_variation)
    if camera != 'demo':
        tree.update(photos=list(photos), camera=camera, camera_matrix=camera_matrix, noise=noise,
                    clean_targets=clean_targets)
    camera_opt = dict(noise=noise, xyz_to_cam=cam.HELD_OUT_XYZ_TO_CAM.get(camera_matrix))
    meta = dict(seed=seed, exposure=EXPOSURE, tree=tree, scenes={})
    for i, (key, photo, vary) in enumerate(scene_plan(num_scenes, num_test, color_variation, files)):
        split = key.split('/')[0]
        num_shots = 6 if i % 2 else 7
        camera_rng = np.random.default_rng([seed, i]) if camera == 'random' else None
        scene = scene_params(rng, photo, num_shots, size, shift, residual, vary, camera_rng, camera_opt)
        folder = osp.join(out, key)
        os.makedirs(folder, exist_ok=True)
        for k in range(1, num_shots + 1):
            write_shot(scene, k, folder, rng, clean_jpg=clean_targets and split == 'train' and k in TARGET_SHOTS)
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
    parser.add_argument('--photos', nargs='+', default=(), metavar='PATH',
                        help='photograph files or folders (JPEG/PNG/WebP, any size; "debian": the photographs of '
                        'scripts/get_photos.sh; "skimage": scikit-image\'s) that training scenes show, in random '
                        'windows; needs --camera random')
    parser.add_argument('--camera', choices=('demo', 'random'), default='demo',
                        help='demo: one fixed camera; random: a camera per scene (colour matrix, white balance, '
                        'noise, bit depth, CFA phase, tone curve, lens blur), recorded in demo_meta.json')
    parser.add_argument('--camera-matrix', choices=sorted(cam.HELD_OUT_XYZ_TO_CAM), default=None,
                        help='with --camera random: every scene with this real camera\'s colour matrix')
    parser.add_argument('--noise', choices=sorted(cam.NOISE_LEVELS), default=None,
                        help='with --camera random: every scene\'s sensor noise at this level')
    parser.add_argument('--clean-targets', action='store_true',
                        help='with --camera random: the training scenes\' target JPEGs rendered without noise and lens '
                        'blur (their DNGs and the held-out scenes unchanged)')
    args = parser.parse_args(argv)
    make_demo(args.out, num_scenes=args.num_scenes, size=args.size, seed=args.seed, shift=args.shift,
              residual=args.residual, num_test=args.num_test, color_variation=args.color_variation, jobs=args.jobs,
              photos=args.photos, camera=args.camera, camera_matrix=args.camera_matrix, noise=args.noise,
              clean_targets=args.clean_targets)
    print(f'SR-RAW demo tree written to {args.out}')


if __name__ == '__main__':
    main()
