"""SR-RAW optical-zoom pairs (Zoom to Learn, Learn to Zoom, CVPR 2019): a RAW mosaic and its aligned HR RGB.

Scene folders hold ``00001.ARW/JPG ... 00007.ARW/JPG`` plus ``tform.txt`` and ``wb.txt`` written
by ``sdan-prepare-srraw``; see :mod:`sdan_basicsr.data.raw_utils` for the formats.
"""
import math
import os.path as osp
import random
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY
from PIL import Image
from torch.utils import data

from sdan_basicsr.data import raw_utils

IN_FORMATS = ('bayer', 'packed', 'rgb')
#: Keys of the ``color_augment`` option and their defaults.
COLOR_AUGMENT_DEFAULTS = {'gains': 1.5, 'exposure': [0.6, 1.2]}


def _inner_box(matrix: np.ndarray, width: float, height: float) -> Tuple[float, float, float, float]:
    """Largest axis-aligned box inside the image of the rectangle [0, width]×[0, height] under ``matrix``."""
    pts = to_xy(matrix, np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64))
    return max(pts[0, 0], pts[2, 0]), max(pts[0, 1], pts[1, 1]), min(pts[1, 0], pts[3, 0]), min(pts[2, 1], pts[3, 1])


def to_xy(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3×3 affine to (N, 2) points."""
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


def _warp(img: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sample ``img`` (bicubic) at ``matrix`` × output pixel, output (height, width, C)."""
    return cv2.warpAffine(img, matrix[:2], (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f'cannot read image {path}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.


def _centre_biased(span: int, parity: int) -> int:
    """A start in [0, span] with the given parity, drawn from N(0.5, 0.2) truncated to [0, 1] × span."""
    u = random.gauss(0.5, 0.2)
    while not 0 <= u <= 1:
        u = random.gauss(0.5, 0.2)
    steps = (span - parity) // 2
    return 2 * int(round(u * steps)) + parity


@DATASET_REGISTRY.register()
class SRRAWPairedDataset(data.Dataset):
    """Paired SR-RAW dataset: LR shot ``0000k`` (RAW) → HR shot ``0000i`` (RGB), as in the public pipeline.

    Per pair: both shots are brought to the field of view of ``00001`` (EXIF focal ratio), the HR is
    warped into the LR mosaic frame with the ECC affines of ``tform.txt`` and resampled (bicubic) to
    exactly ``scale`` × the mosaic grid, cropped to the valid corners; the HR is divided by its white
    balance ``wb ** (1 / 2.2)`` (the network learns a no-white-balance output). Training draws
    centre-biased random crops; validation and test return whole aligned images. Everything that does
    not change between epochs is computed once per scene when the dataset is built; scenes with an
    unreadable file are skipped with a warning.

    Items:
        lq (Tensor): ``bayer``: (1, h, w) RGGB mosaic; ``packed``: (4, h/2, w/2) R, Gr, B, Gb;
            ``rgb``: (3, h, w) the LR shot's JPEG (= ``lq_rgb``). Black/white-level normalised to [0, 1].
        gt (Tensor): (3, scale·h, scale·w) HR RGB without white balance, in [0, 1].
        lq_rgb (Tensor): The LR shot's own JPEG without white balance on the input grid: (3, h, w)
            for ``bayer``/``rgb``, (3, h/2, w/2) for ``packed`` — the inference-time reference.
        wb (Tensor): (4,) white-balance gains [R, G, G, B] of the LR shot (to re-apply for display).
        noise (Tensor): With ``noise_profile``: (2, 2, 2) [S, O] of ``lq`` over its 2×2 RGGB cell (SDAN's
            ``noise`` input, :func:`~sdan_basicsr.data.raw_utils.site_noise_profile`), colour augmentation included.
        lq_path (str), gt_path (str): LR RAW and HR JPEG files.

    Args:
        opt (dict): Config for the dataset. It contains:
            dataroot (str): Folder of scene folders (``train/`` or ``test/`` of SR-RAW).
            scenes (list[str] | str | None): Scene folder names, or a text file with one per line.
                Default: None (every scene folder in dataroot).
            pairs (list[list[int]] | None): (LR, HR) shot indices. Default: None
                ((5, 1), (6, 2), (7, 3)) for phase ``train``, ((6, 2),) otherwise).
            in_format (str): ``bayer`` | ``packed`` | ``rgb``. Default: ``bayer``.
            scale (int): Upscale factor relative to the mosaic. Default: 4.
            gt_size (int): HR training patch size, a multiple of ``scale`` (÷ 2·scale for ``packed``).
                Default: 512.
            tolerance (int): Extra mosaic pixels added to the training patch (HR: ``scale`` × as many).
                Default: 0.
            use_hflip (bool): Random horizontal flips, mosaic kept in RGGB phase. Default: False.
            use_vflip (bool): Random vertical flips, mosaic kept in RGGB phase. Default: False.
            black_level (float | None): Fixed RAW black level. Default: None (from the file; 512 for
                SR-RAW's ARW files).
            white_level (float | None): Fixed RAW white level. Default: None (from the file; 16383).
            color_augment (dict | bool | None): RAW-domain colour augmentation of training items. The sensor's
                R, G, B responses are multiplied by ``exposure · [g_R, 1, g_B]``: the mosaic, and with the
                matching change ``gt``, ``lq_rgb`` and ``wb``, as the camera would have recorded the scene under
                another illuminant and exposure (:func:`~sdan_basicsr.data.raw_utils.apply_sensor_gains`: exact
                for the demo's ISP; for a real camera the exposure part approximates its tone curve by gamma 2.2).
                Keys: ``gains`` (float, g_R and g_B log-uniform in [1/gains, gains], default 1.5) and
                ``exposure`` ([low, high], log-uniform, default [0.6, 1.2]); ``true`` takes both defaults. The
                colours must then be read off the mosaic itself. Default: None (off).
            noise_profile (bool): ``bayer`` only: give each item the noise profile of its RAW file, the DNG's
                NoiseProfile, or where the file records none (SR-RAW's ARW files) the estimate from its mosaic
                (:func:`~sdan_basicsr.data.raw_utils.estimate_noise_profile`), for SDAN's ``noise_input``.
                Default: False.
            cache_decoded (bool): Keep every decoded RAW mosaic and JPEG in memory (read-only arrays, one copy
                per data-loader worker), so that each file is decoded once instead of once per item; for trees
                that fit in memory (the demo's: ~0.5 GB), not for SR-RAW's 42-MP shots. Default: False.
            phase (str): ``train`` (random crops) or ``val``/``test`` (whole images). Default: ``train``.
    """

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        self.dataroot = opt['dataroot']
        self.phase = opt.get('phase', 'train')
        self.in_format = opt.get('in_format', 'bayer')
        if self.in_format not in IN_FORMATS:
            raise ValueError(f'in_format must be one of {IN_FORMATS}, got {self.in_format!r}')
        self.scale = int(opt.get('scale', 4))
        self.black_level = opt.get('black_level')
        self.white_level = opt.get('white_level')
        self.use_hflip = opt.get('use_hflip', False)
        self.use_vflip = opt.get('use_vflip', False)
        self.color_augment = self._color_augment_options(opt.get('color_augment'))
        self._decoded = {} if opt.get('cache_decoded', False) else None
        self.noise_profile = bool(opt.get('noise_profile', False))
        if self.noise_profile and self.in_format != 'bayer':
            raise ValueError(f"noise_profile is for in_format='bayer', got in_format={self.in_format!r}")
        gt_size = int(opt.get('gt_size', 512))
        multiple = self.scale * (2 if self.in_format == 'packed' else 1)
        if gt_size % multiple:
            raise ValueError(f'gt_size {gt_size} must be a multiple of {multiple} for in_format {self.in_format}')
        self.lq_patch = gt_size // self.scale + int(opt.get('tolerance', 0))
        self.lq_patch += self.lq_patch % 2
        default_pairs = raw_utils.TRAIN_PAIRS if self.phase == 'train' else raw_utils.TEST_PAIRS
        self.pairs = [tuple(p) for p in (opt.get('pairs') or default_pairs)]

        self.logger = get_root_logger()
        scene_dirs = self._scene_dirs(opt.get('scenes'))
        unprepared = [s for s in scene_dirs
                      if not (osp.isfile(osp.join(s, 'tform.txt')) and osp.isfile(osp.join(s, 'wb.txt')))]
        hint = f'run `sdan-prepare-srraw {self.dataroot}` first to write tform.txt and wb.txt'
        if scene_dirs and len(unprepared) == len(scene_dirs):
            raise FileNotFoundError(f'no scene of dataroot {self.dataroot} has tform.txt and wb.txt: {hint}')
        self.samples = []
        for scene in scene_dirs:
            if scene in unprepared:
                self.logger.warning(f'SR-RAW: skipping scene {scene}: tform.txt or wb.txt missing; {hint}')
                continue
            try:
                self.samples.extend(self._prepare_scene(scene))
            except (OSError, ValueError) as err:
                self.logger.warning(f'SR-RAW: skipping scene {scene}: {err}')
        if not self.samples:
            raise ValueError(f'SR-RAW dataset is empty: no usable pair {self.pairs} in dataroot {self.dataroot}')
        self.logger.info(f'SR-RAW: {len(self.samples)} pairs from {len(scene_dirs)} scenes of {self.dataroot}.')

    @staticmethod
    def _color_augment_options(aug) -> Optional[dict]:
        """The ``color_augment`` option with its defaults filled in, None when off; bad values raise."""
        if not aug:
            return None
        aug = {} if aug is True else dict(aug)
        unknown = sorted(set(aug) - set(COLOR_AUGMENT_DEFAULTS))
        if unknown:
            raise ValueError(f'color_augment: unknown keys {unknown}, expected {sorted(COLOR_AUGMENT_DEFAULTS)}')
        aug = {**COLOR_AUGMENT_DEFAULTS, **aug}
        low, high = (float(v) for v in aug['exposure'])
        if float(aug['gains']) < 1 or not 0 < low <= high:
            raise ValueError(f'color_augment: gains must be at least 1 and exposure [low, high] with 0 < low <= high, '
                             f'got {aug}')
        return {'gains': float(aug['gains']), 'exposure': (low, high)}

    def _sensor_gains(self) -> np.ndarray:
        """Random [R, G, B] sensor gains of one training item (the ``color_augment`` option)."""
        log_gain = math.log(self.color_augment['gains'])
        red, blue = (math.exp(random.uniform(-log_gain, log_gain)) for _ in range(2))
        exposure = math.exp(random.uniform(*(math.log(v) for v in self.color_augment['exposure'])))
        return exposure * np.array([red, 1., blue], dtype=np.float32)

    def _scene_dirs(self, scenes) -> List[str]:
        if not osp.isdir(self.dataroot):
            raise FileNotFoundError(f'dataroot {self.dataroot} is not a folder')
        if scenes is None:
            return raw_utils.find_scenes(self.dataroot)
        if isinstance(scenes, str):
            with open(scenes) as f:
                scenes = [line.strip() for line in f if line.strip()]
        return [osp.join(self.dataroot, str(s)) for s in scenes]

    def _prepare_scene(self, scene: str) -> List[dict]:
        """Everything about the pairs of one scene that does not change between epochs."""
        tforms, corner = raw_utils.read_tform(osp.join(scene, 'tform.txt'))
        gains = raw_utils.read_wb(osp.join(scene, 'wb.txt'))
        ref_jpg = osp.join(scene, '00001.JPG')
        f_ref = raw_utils.read_focal_length(ref_jpg)
        rotate = raw_utils.read_orientation(ref_jpg) == 3
        with Image.open(ref_jpg) as img:
            ref_size = img.size[::-1]
        if corner is None:
            corner = (0, ref_size[0], 0, ref_size[1])
        min_h, max_h, min_w, max_w = corner

        samples = []
        for lr, hr in self.pairs:
            lr_name, hr_name = raw_utils.shot_name(lr), raw_utils.shot_name(hr)
            names = (f'{lr_name}.ARW', f'{lr_name}.JPG', f'{hr_name}.JPG')
            lr_raw, lr_jpg, hr_jpg = (osp.join(scene, n) for n in names)
            missing = [p for p in (lr_raw, lr_jpg, hr_jpg) if not osp.isfile(p)]
            missing += [f'{osp.join(scene, "tform.txt")} [{n}]' for n in (lr_name, hr_name) if n not in tforms]
            missing += [f'{osp.join(scene, "wb.txt")} [{n}]' for n in (lr_name, hr_name) if n not in gains]
            if missing:
                self.logger.warning(f'SR-RAW: skipping pair {lr_name}->{hr_name} of scene {scene}: '
                                    f'missing {", ".join(missing)}')
                continue
            # read the whole RAW once: an unreadable file fails here, never during training
            mosaic = raw_utils.read_raw(lr_raw, self.black_level, self.white_level)
            mosaic_size = mosaic.shape
            noise = raw_utils.noise_profile(lr_raw, mosaic)[0] if self.noise_profile else None
            del mosaic
            sizes = {}
            for path in (lr_jpg, hr_jpg):
                img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
                if img is None:
                    raise OSError(f'cannot read image {path}')
                sizes[path] = img.shape[:2]

            # frame of 00001 -> LR JPEG -> LR mosaic, and frame of 00001 -> HR JPEG
            lr_fov = raw_utils.to3x3(
                raw_utils.fov_matrix(ref_size, sizes[lr_jpg], raw_utils.read_focal_length(lr_jpg) / f_ref))
            hr_fov = raw_utils.to3x3(
                raw_utils.fov_matrix(ref_size, sizes[hr_jpg], raw_utils.read_focal_length(hr_jpg) / f_ref))
            jpg_to_raw = raw_utils.to3x3(raw_utils.fov_matrix(sizes[lr_jpg], mosaic_size, 1.0))
            ref_to_raw = jpg_to_raw @ lr_fov @ raw_utils.to3x3(tforms[lr_name])
            raw_to_hr = hr_fov @ raw_utils.to3x3(tforms[hr_name]) @ np.linalg.inv(ref_to_raw)

            # valid mosaic box: inside the corners, the mosaic and the HR image; even, so it stays RGGB
            valid = ref_to_raw @ np.array([[1, 0, min_w], [0, 1, min_h], [0, 0, 1]])
            boxes = [_inner_box(valid, max_w - min_w, max_h - min_h),
                     _inner_box(np.linalg.inv(raw_to_hr), sizes[hr_jpg][1] - 1, sizes[hr_jpg][0] - 1),
                     (0, 0, mosaic_size[1], mosaic_size[0])]
            x0, y0 = (int(np.ceil(max(b[i] for b in boxes) / 2)) * 2 for i in (0, 1))
            x1, y1 = (int(np.floor(min(b[i] for b in boxes) / 2)) * 2 for i in (2, 3))
            least = self.lq_patch + 2 if self.phase == 'train' else 8
            if min(x1 - x0, y1 - y0) < least:
                self.logger.warning(f'SR-RAW: skipping pair {lr_name}->{hr_name} of scene {scene}: aligned '
                                    f'mosaic {x1 - x0}x{y1 - y0} smaller than {least}')
                continue
            samples.append(
                dict(
                    lq_path=lr_raw,
                    gt_path=hr_jpg,
                    lq_jpg=lr_jpg,
                    box=(x0, y0, x1, y1),
                    raw_to_hr=raw_to_hr,
                    raw_to_jpg=np.linalg.inv(jpg_to_raw),
                    wb_lq=gains[lr_name],
                    wb_gt=gains[hr_name],
                    noise=noise,
                    rotate=rotate))
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def _crop(self, width: int, height: int, flip_x: bool, flip_y: bool) -> Tuple[int, int, int, int]:
        """Patch (x, y, w, h) inside the box; an odd start where the patch gets flipped keeps it RGGB."""
        if self.phase == 'train':
            size = self.lq_patch
            return (_centre_biased(width - size, int(flip_x)), _centre_biased(height - size, int(flip_y)), size, size)
        return int(flip_x), int(flip_y), width - 2 * int(flip_x), height - 2 * int(flip_y)

    def _read(self, path: str, raw: bool = False) -> np.ndarray:
        """The normalised mosaic of a RAW file (``raw``) or the RGB of a JPEG, from the cache when it is on."""
        if self._decoded is not None and path in self._decoded:
            return self._decoded[path]
        img = raw_utils.read_raw(path, self.black_level, self.white_level) if raw else _read_rgb(path)
        if self._decoded is not None:
            img.setflags(write=False)  # shared by every later item: a write would be a bug
            self._decoded[path] = img
        return img

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        bx0, by0, bx1, by1 = s['box']
        hflip = self.phase == 'train' and self.use_hflip and random.random() < 0.5
        vflip = self.phase == 'train' and self.use_vflip and random.random() < 0.5
        flip_x, flip_y = hflip != s['rotate'], vflip != s['rotate']
        x, y, w, h = self._crop(bx1 - bx0, by1 - by0, flip_x, flip_y)
        x, y = x + bx0, y + by0

        mosaic = self._read(s['lq_path'], raw=True)[y:y + h, x:x + w]
        scale = self.scale
        gt = _warp(self._read(s['gt_path']), s['raw_to_hr'] @ raw_utils.grid_matrix(x, y, 1 / scale), w * scale,
                   h * scale)
        gt = raw_utils.remove_white_balance(gt, s['wb_gt'])
        step = 2 if self.in_format == 'packed' else 1
        lq_jpg = self._read(s['lq_jpg'])
        lq_rgb = _warp(lq_jpg, s['raw_to_jpg'] @ raw_utils.grid_matrix(x, y, step), w // step, h // step)
        lq_rgb = raw_utils.remove_white_balance(lq_rgb, s['wb_lq'])

        axes = [a for a, f in ((0, flip_y), (1, flip_x)) if f]
        if axes:
            mosaic, gt, lq_rgb = (np.flip(a, axis=axes) for a in (mosaic, gt, lq_rgb))
        wb, sensor_gains = s['wb_lq'], None
        if self.phase == 'train' and self.color_augment:  # on the flipped mosaic: in RGGB phase
            sensor_gains = self._sensor_gains()
            mosaic, (gt, lq_rgb), wb = raw_utils.apply_sensor_gains(mosaic, (gt, lq_rgb), wb, sensor_gains)
        lq = raw_utils.network_input(mosaic, lq_rgb, self.in_format)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        item = {
            'lq': tensor(lq),
            'gt': tensor(gt.transpose(2, 0, 1)),
            'lq_rgb': tensor(lq_rgb.transpose(2, 0, 1)),
            'wb': tensor(wb),
            'lq_path': s['lq_path'],
            'gt_path': s['gt_path'],
        }
        if self.noise_profile:
            item['noise'] = tensor(raw_utils.site_noise_profile(s['noise'], sensor_gains))
        return item

