"""Video SR clips for DKSAN and MSFFN: real footage cut into clips, generated pans of photographs with moving objects.

HR frames, LR by MATLAB bicubic (``imresize``) per scale, in the Vimeo-90K septuplet layout (training,
``Vimeo90KDataset``) and the Vid4 layout (held-out clips, ``VideoTestDataset``). The tiny CPU demo:
``python -m sdan_basicsr.tools.make_video_demo --out DIR --scale 4``; the video benchmark's set adds the sample
videos of Debian's ``opencv-doc`` (``bash scripts/make_video_data.sh``).
"""
import argparse
import json
import math
import os
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from basicsr.utils.matlab_functions import imresize

from sdan_basicsr.tools.make_demo import TEST_PHOTOS, TRAIN_PHOTOS, photo_srgb

#: Where Debian's ``opencv-doc`` installs its sample videos (``scripts/make_video_data.sh`` installs it).
OPENCV_VIDEOS = '/usr/share/doc/opencv-doc/examples/data'
#: The videos cut into clips → (split, factor by which every frame is first reduced, MATLAB bicubic). A video belongs
#: wholly to one split, so no footage is both trained on and tested on. ``Megamind_bugy.avi`` (the same footage as
#: ``Megamind.avi`` with damaged frames) is never read.
VIDEOS = {
    'vtest.avi': ('train', 0.5),  # pedestrians, fixed camera: 795 frames of 768×576 at 10 fps (MPEG-4)
    'Megamind.avi': ('train', 0.5),  # computer animation, camera and character motion, 4 shots: 270 of 720×528
    'tree.avi': ('test', 1.0),  # hand-held camera on a tree, a hand enters at the end: 68 readable of 320×240 (Cinepak)
}
#: Mean absolute difference (of [0, 1] frames) between consecutive frames above which a new shot starts.
SHOT_CUT = 0.1
#: Frames of a training clip (a Vimeo-90K septuplet).
SEPTUPLET = 7
#: Motion of a generated clip, uniform in ±: the background pan (HR px per frame, each axis), the objects' own
#: velocity (HR px per frame, each axis) and spin (degrees per frame).
BACKGROUND_SPEED = 1.5
OBJECT_SPEED = 4.0
OBJECT_SPIN = 1.5
#: Side of an object (an ellipse cut from another photograph) as a fraction of the frame's shorter side, uniform;
#: its window is the most textured (largest standard deviation) of this many random ones.
OBJECT_SIZE = (1 / 6, 1 / 3)
OBJECT_TRIES = 4
META_FILE = 'clips.json'
#: The video benchmark's set (``--bench``, ``scripts/make_video_data.sh``, ``bench/video_bench.py``): 198 training
#: septuplets (113 of vtest.avi, 37 of Megamind.avi, 48 generated), 4 held-out clips of 34 frames (tree.avi's 2,
#: 2 generated), LR ×4 and ×16.
BENCH_SET = dict(scale=(4, 16), gt_size=256, num_train_clips=48, num_test_clips=2, num_test_frames=34, num_objects=3,
                 videos=OPENCV_VIDEOS, seed=0)


def _quantize(img: np.ndarray) -> np.ndarray:
    """What an 8-bit PNG holds of ``img``: GT frames are quantised before their LR frames are made from them."""
    return np.round(np.clip(img, 0, 1) * 255) / 255


def _write(img: np.ndarray, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))


def read_shots(path: str, reduce: float = 1.0, multiple: int = 1) -> List[List[np.ndarray]]:
    """The frames of the video ``path`` (RGB float32 in [0, 1]) split into shots at :data:`SHOT_CUT`.

    Each frame is reduced by ``reduce`` (MATLAB bicubic), quantised to 8 bits and centre-cropped to a multiple of
    ``multiple`` pixels. Reading stops at the first frame OpenCV cannot decode.
    """
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise FileNotFoundError(f'cannot read the video {path} (bash scripts/make_video_data.sh installs opencv-doc)')
    shots, last = [], None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
        if last is None or np.abs(frame - last).mean() > SHOT_CUT:
            shots.append([])
        last = frame
        if reduce != 1:
            frame = _quantize(imresize(frame, reduce))
        h, w = frame.shape[:2]
        top, left = (h % multiple) // 2, (w % multiple) // 2
        shots[-1].append(frame[top:top + h - h % multiple, left:left + w - w % multiple])
    cap.release()
    return shots


def _window_start(extent: int, size: int, travel: float, rng: np.random.Generator) -> float:
    """Start of a window of ``size`` moving by ``travel`` px inside ``extent`` px (centred when it cannot fit)."""
    low, high = max(0., -travel), extent - size - max(0., travel)
    return float(rng.uniform(low, high)) if high > low else (extent - size - travel) / 2


def moving_crops(photo: np.ndarray, num: int, size: int, rng: np.random.Generator,
                 velocity: Optional[Sequence[float]] = None) -> Tuple[List[np.ndarray], dict]:
    """``num`` size×size crops of ``photo`` whose window moves by a sub-pixel ``velocity`` (dy, dx) per frame (a pan),
    random (±:data:`BACKGROUND_SPEED` each axis) when None.

    Returns the frames and their motion: ``origin`` (y, x) and ``velocity`` (dy, dx), HR px per frame.
    """
    h, w = photo.shape[:2]
    velocity = (rng.uniform(-BACKGROUND_SPEED, BACKGROUND_SPEED, size=2) if velocity is None
                else np.asarray(velocity, dtype=np.float64))
    origin = [_window_start(extent, size, v * (num - 1), rng) for extent, v in zip((h, w), velocity)]
    crops = []
    for i in range(num):
        ty, tx = origin[0] + velocity[0] * i, origin[1] + velocity[1] * i
        shift = np.float32([[1, 0, -tx], [0, 1, -ty]])
        crops.append(cv2.warpAffine(photo, shift, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return crops, {'origin': origin, 'velocity': velocity.tolist()}


def ellipse_alpha(height: int, width: int) -> np.ndarray:
    """Coverage (0…1) of the ellipse inscribed in a height×width patch, anti-aliased over about one pixel."""
    y = (np.arange(height) + 0.5 - height / 2) / (height / 2)
    x = (np.arange(width) + 0.5 - width / 2) / (width / 2)
    radius = np.sqrt(y[:, None]**2 + x[None, :]**2)
    return np.clip((1 - radius) * min(height, width) / 2 + 0.5, 0, 1).astype(np.float32)


def add_moving_objects(frames: List[np.ndarray], photos: Sequence[np.ndarray], names: Sequence[str], num: int,
                       rng: np.random.Generator) -> List[dict]:
    """Paste ``num`` objects into ``frames`` (in place), each moving on its own: independent object motion.

    An object is an ellipse cut from one of ``photos`` (a textured window, side :data:`OBJECT_SIZE` of the frame's
    shorter side), translated by its own sub-pixel velocity (±:data:`OBJECT_SPEED` px per frame) and spun
    (±:data:`OBJECT_SPIN` degrees per frame) on a path that stays inside the frame; bicubic warps of the
    premultiplied patch and of its coverage. Returns each object's parameters.
    """
    h, w = frames[0].shape[:2]
    n = len(frames)
    objects = []
    for _ in range(num):
        k = int(rng.integers(len(photos)))
        photo = photos[k]
        ph, pw = (int(round(s * min(h, w))) for s in rng.uniform(*OBJECT_SIZE, size=2))
        ph, pw = min(ph, photo.shape[0]), min(pw, photo.shape[1])
        windows = [(int(rng.integers(photo.shape[0] - ph + 1)), int(rng.integers(photo.shape[1] - pw + 1)))
                   for _ in range(OBJECT_TRIES)]
        py, px = max(windows, key=lambda yx: photo[yx[0]:yx[0] + ph, yx[1]:yx[1] + pw].std())
        alpha = ellipse_alpha(ph, pw)
        patch = photo[py:py + ph, px:px + pw] * alpha[..., None]
        reach = max(ph, pw) / 2  # the spinning ellipse stays within this distance of its centre
        centre, velocity = [], []
        for extent in (h, w):
            room = extent - 2 * reach
            v = float(rng.uniform(-1, 1) * min(OBJECT_SPEED, room / max(n - 1, 1)))
            centre.append(reach + _window_start(room, 0, v * (n - 1), rng))
            velocity.append(v)
        angle, spin = float(rng.uniform(0, 360)), float(rng.uniform(-OBJECT_SPIN, OBJECT_SPIN))
        for i, frame in enumerate(frames):
            warp = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle + spin * i, 1.0)
            warp[:, 2] += (centre[1] + velocity[1] * i - pw / 2, centre[0] + velocity[0] * i - ph / 2)
            cover = cv2.warpAffine(alpha, warp, (w, h), flags=cv2.INTER_CUBIC)
            colour = cv2.warpAffine(patch, warp, (w, h), flags=cv2.INTER_CUBIC)
            frame *= 1 - np.clip(cover, 0, 1)[..., None]
            frame += colour
        objects.append({'photo': names[k], 'window': [py, px, ph, pw], 'centre': centre, 'velocity': velocity,
                        'angle': angle, 'spin': spin})
    return objects


def generated_clip(background: str, photos: Dict[str, np.ndarray], num_frames: int, size: int, num_objects: int,
                   rng: np.random.Generator, pan: Optional[Sequence[float]] = None) -> Tuple[List[np.ndarray], dict]:
    """A pan (velocity ``pan``, random when None) over the photograph ``photos[background]`` with ``num_objects``
    objects cut from the other ``photos`` moving on their own; quantised frames and the clip's parameters."""
    frames, pan = moving_crops(photos[background], num_frames, size, rng, pan)
    names = [p for p in photos if p != background] or [background]
    objects = add_moving_objects(frames, [photos[p] for p in names], names, num_objects, rng)
    return [_quantize(f) for f in frames], {'source': background, 'pan': pan, 'objects': objects}


def make_video_demo(out: str,
                    scale: Union[int, Sequence[int]] = 4,
                    gt_size: int = 64,
                    num_train_clips: int = 4,
                    num_test_clips: int = 1,
                    num_test_frames: int = 8,
                    num_objects: int = 3,
                    videos: Optional[str] = None,
                    seed: int = 0,
                    pan: Optional[Sequence[float]] = None) -> Dict[str, str]:
    """Write a train/test video set under ``out`` and return its paths.

    Generated clips pan over a photograph (:data:`TRAIN_PHOTOS` for training, :data:`TEST_PHOTOS` for the held-out
    clips, in turn) with ``num_objects`` objects cut from the other photographs of the same list moving on their own.
    With ``videos`` (the folder of :data:`VIDEOS`, e.g. :data:`OPENCV_VIDEOS`), every shot of a training video is also
    cut into consecutive septuplets and every shot of a test video into held-out clips of ``num_test_frames`` frames
    (a shorter rest is left out). Layout (``BIx{s}`` and ``…matlabLRx{s}``: MATLAB bicubic ×1/s of ``GT``, as
    BasicSR's Vimeo-90K and Vid4 sets; one folder per scale)::

        out/vimeo_septuplet/sequences/<source>/0001/im1.png … im7.png     Vimeo90KDataset: dataroot_gt
        out/vimeo_septuplet_matlabLRx{s}/sequences/…                      Vimeo90KDataset: dataroot_lq
        out/meta_info_train_GT.txt                                        "<source>/0001 7 (h,w,3)" per clip
        out/test/GT/<clip>/00000000.png …                                 VideoTestDataset (name Vid4): dataroot_gt
        out/test/BIx{s}/<clip>/00000000.png …                             VideoTestDataset: dataroot_lq
        out/clips.json                                                    the arguments and where every clip comes from

    Deterministic for a given ``seed`` (and the same videos). A set already in ``out`` with the same arguments is
    kept as it is; any other content of ``out`` is an error.

    Args:
        out (str): Output folder (created).
        scale (int | Sequence[int]): Downscaling factor(s) of the LR frames. Default: 4.
        gt_size (int): Side of the square generated frames; a multiple of every scale. Real frames are centre-cropped to
            a multiple of every scale. Default: 64.
        num_train_clips (int): Generated septuplets in the training set. Default: 4.
        num_test_clips (int): Generated held-out sequences. Default: 1.
        num_test_frames (int): Frames per held-out sequence, generated or cut from a test video. Default: 8.
        num_objects (int): Moving objects per generated clip. Default: 3.
        videos (str | None): Folder holding the files of :data:`VIDEOS`; None: generated clips only. Default: None.
        seed (int): Seed of the crop positions and motions. Default: 0.
        pan (Sequence[float] | None): One velocity (dy, dx), HR px per frame, for the pan of every generated clip, so
            that a network need not measure the motion to use the neighbouring frames (a diagnostic set, with
            ``num_objects=0``); None: a random velocity per clip. Default: None.

    Returns:
        dict[str, str]: ``train_gt``, ``train_lq_x{s}``, ``meta_info_file``, ``test_gt``, ``test_lq_x{s}``, ``meta``.
    """
    scales = [scale] if isinstance(scale, int) else list(scale)
    multiple = math.lcm(*scales)
    if gt_size % multiple:
        raise ValueError(f'gt_size ({gt_size}) must be a multiple of every scale ({scales})')
    paths = {'train_gt': osp.join(out, 'vimeo_septuplet', 'sequences'),
             **{f'train_lq_x{s}': osp.join(out, f'vimeo_septuplet_matlabLRx{s}', 'sequences') for s in scales},
             'meta_info_file': osp.join(out, 'meta_info_train_GT.txt'),
             'test_gt': osp.join(out, 'test', 'GT'),
             **{f'test_lq_x{s}': osp.join(out, 'test', f'BIx{s}') for s in scales},
             'meta': osp.join(out, META_FILE)}
    meta = {'args': {'scale': scales, 'gt_size': gt_size, 'num_train_clips': num_train_clips,
                     'num_test_clips': num_test_clips, 'num_test_frames': num_test_frames, 'num_objects': num_objects,
                     'videos': sorted(VIDEOS) if videos else [], 'seed': seed,
                     **({'pan': [float(v) for v in pan]} if pan is not None else {})},
            'train': {}, 'test': {}}
    if osp.isfile(paths['meta']):
        with open(paths['meta']) as f:
            if json.load(f)['args'] == meta['args']:
                return paths
    if osp.isdir(out) and os.listdir(out):
        raise FileExistsError(f'{out} holds something other than this set: remove it or choose another --out')
    rng = np.random.default_rng(seed)

    shapes = {}

    def write_train(source: str, frames: List[np.ndarray], info: dict) -> None:
        key = f'{source}/{sum(k.startswith(source + "/") for k in meta["train"]) + 1:04d}'
        shapes[key] = frames[0].shape
        for j, frame in enumerate(frames, start=1):
            _write(frame, osp.join(paths['train_gt'], key, f'im{j}.png'))
            for s in scales:
                _write(imresize(frame, 1 / s), osp.join(paths[f'train_lq_x{s}'], key, f'im{j}.png'))
        meta['train'][key] = info

    def write_test(source: str, frames: List[np.ndarray], info: dict) -> None:
        name = f'{source}_{sum(k.startswith(source + "_") for k in meta["test"]):02d}'
        for j, frame in enumerate(frames):
            _write(frame, osp.join(paths['test_gt'], name, f'{j:08d}.png'))
            for s in scales:
                _write(imresize(frame, 1 / s), osp.join(paths[f'test_lq_x{s}'], name, f'{j:08d}.png'))
        meta['test'][name] = info

    photos = {name: photo_srgb(name) for name in TRAIN_PHOTOS} if num_train_clips else {}
    for i in range(num_train_clips):
        write_train('generated', *generated_clip(TRAIN_PHOTOS[i % len(TRAIN_PHOTOS)], photos, SEPTUPLET, gt_size,
                                                 num_objects, rng, pan))
    photos = {name: photo_srgb(name) for name in TEST_PHOTOS} if num_test_clips else {}
    for i in range(num_test_clips):
        frames, info = generated_clip(TEST_PHOTOS[i % len(TEST_PHOTOS)], photos, num_test_frames, gt_size, num_objects,
                                      rng, pan)
        write_test(info['source'], frames, info)
    for name, (split, reduce) in (VIDEOS.items() if videos else ()):
        source, start = osp.splitext(name)[0], 0
        length = SEPTUPLET if split == 'train' else num_test_frames
        for shot in read_shots(osp.join(videos, name), reduce, multiple):
            for first in range(0, len(shot) - length + 1, length):
                info = {'source': name, 'frames': [start + first, start + first + length], 'reduce': reduce}
                (write_train if split == 'train' else write_test)(source, shot[first:first + length], info)
            start += len(shot)
    with open(paths['meta_info_file'], 'w') as f:
        f.writelines(f'{key} {SEPTUPLET} ({",".join(map(str, shape))})\n' for key, shape in shapes.items())
    with open(paths['meta'], 'w') as f:
        json.dump(meta, f, indent=1)
    return paths


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder, e.g. datasets/video_demo_x4')
    parser.add_argument('--scale', type=int, nargs='+', default=[4], help='LR scale(s), one LR folder each')
    parser.add_argument('--gt_size', type=int, default=64, help='side of the generated frames')
    parser.add_argument('--train_clips', type=int, default=4, help='generated training septuplets')
    parser.add_argument('--test_clips', type=int, default=1, help='generated held-out sequences')
    parser.add_argument('--test_frames', type=int, default=8, help='frames per held-out sequence')
    parser.add_argument('--objects', type=int, default=3, help='moving objects per generated clip')
    parser.add_argument('--videos', default=None, metavar='DIR',
                        help=f'also cut the videos of DIR into clips ({", ".join(VIDEOS)}; opencv-doc installs them '
                        f'in {OPENCV_VIDEOS})')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--pan', type=float, nargs=2, metavar=('DY', 'DX'),
                        help='one pan velocity (HR px per frame) for every generated clip; default: random per clip')
    parser.add_argument('--bench', action='store_true',
                        help="the video benchmark's set (BENCH_SET; the other options are ignored)")
    args = parser.parse_args(argv)
    if args.bench:
        paths = make_video_demo(args.out, **BENCH_SET)
    else:
        paths = make_video_demo(args.out, args.scale, args.gt_size, args.train_clips, args.test_clips,
                                args.test_frames, args.objects, args.videos, args.seed, args.pan)
    for name, path in paths.items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()
