"""A small video SR data set cut from a real photo: 7-frame clips with sub-pixel motion, LR by bicubic.

Writes the Vimeo-90K septuplet layout (training, ``Vimeo90KDataset``) and the Vid4 layout
(validation, ``VideoTestDataset``): ``python -m sdan_basicsr.tools.make_video_demo --out DIR --scale 4``.
"""
import argparse
import os
from os import path as osp
from typing import Dict

import cv2
import numpy as np
from basicsr.utils.matlab_functions import imresize
from skimage import data as skdata


def _moving_crops(photo: np.ndarray, num: int, size: int, rng: np.random.Generator) -> list:
    """``num`` size×size crops of ``photo`` whose window moves by a random sub-pixel velocity per frame."""
    h, w = photo.shape[:2]
    velocity = rng.uniform(-1.5, 1.5, size=2)  # (dy, dx) in HR pixels per frame
    span = np.abs(velocity) * num + 2
    y0 = rng.uniform(span[0], h - size - span[0])
    x0 = rng.uniform(span[1], w - size - span[1])
    crops = []
    for i in range(num):
        ty, tx = y0 + velocity[0] * i, x0 + velocity[1] * i
        shift = np.float32([[1, 0, -tx], [0, 1, -ty]])
        crops.append(cv2.warpAffine(photo, shift, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return crops


def _write(img: np.ndarray, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))


def make_video_demo(out: str,
                    scale: int = 4,
                    gt_size: int = 64,
                    num_train_clips: int = 4,
                    num_val_clips: int = 1,
                    num_val_frames: int = 8,
                    seed: int = 0) -> Dict[str, str]:
    """Write a tiny train/val video set under ``out`` and return its paths.

    Layout (``LR`` frames are MATLAB-bicubic ×1/``scale`` of ``GT``, as in Vimeo-90K and Vid4)::

        out/vimeo/GT/00001/0001/im1.png … im7.png    Vimeo90KDataset: dataroot_gt
        out/vimeo/LR/00001/0001/im1.png … im7.png    Vimeo90KDataset: dataroot_lq
        out/vimeo/meta_info.txt                      "00001/0001 7 (gt_size,gt_size,3)" per clip
        out/val/GT/clip000/00000000.png …            VideoTestDataset (name Vid4): dataroot_gt
        out/val/LR/clip000/00000000.png …            VideoTestDataset: dataroot_lq

    Args:
        out (str): Output folder (created).
        scale (int): Downscaling factor of the LR frames. Default: 4.
        gt_size (int): Side of the square GT frames; a multiple of ``scale``. Default: 64.
        num_train_clips (int): Septuplets in the training set. Default: 4.
        num_val_clips (int): Sequences in the validation set. Default: 1.
        num_val_frames (int): Frames per validation sequence. Default: 8.
        seed (int): Seed of the crop positions and motions. Default: 0.

    Returns:
        dict[str, str]: ``train_gt``, ``train_lq``, ``meta_info_file``, ``val_gt``, ``val_lq``.
    """
    if gt_size % scale:
        raise ValueError(f'gt_size ({gt_size}) must be a multiple of scale ({scale})')
    rng = np.random.default_rng(seed)
    photo = skdata.astronaut().astype(np.float32) / 255.
    paths = {
        'train_gt': osp.join(out, 'vimeo', 'GT'),
        'train_lq': osp.join(out, 'vimeo', 'LR'),
        'meta_info_file': osp.join(out, 'vimeo', 'meta_info.txt'),
        'val_gt': osp.join(out, 'val', 'GT'),
        'val_lq': osp.join(out, 'val', 'LR')
    }
    keys = []
    for i in range(num_train_clips):
        key = f'{i // 10 + 1:05d}/{i % 10 + 1:04d}'
        for j, frame in enumerate(_moving_crops(photo, 7, gt_size, rng), start=1):
            _write(frame, osp.join(paths['train_gt'], key, f'im{j}.png'))
            _write(imresize(frame, 1 / scale), osp.join(paths['train_lq'], key, f'im{j}.png'))
        keys.append(f'{key} 7 ({gt_size},{gt_size},3)\n')
    with open(paths['meta_info_file'], 'w') as f:
        f.writelines(keys)
    for i in range(num_val_clips):
        for j, frame in enumerate(_moving_crops(photo, num_val_frames, gt_size, rng)):
            _write(frame, osp.join(paths['val_gt'], f'clip{i:03d}', f'{j:08d}.png'))
            _write(imresize(frame, 1 / scale), osp.join(paths['val_lq'], f'clip{i:03d}', f'{j:08d}.png'))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder, e.g. datasets/video_demo_x4')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--gt_size', type=int, default=64)
    args = parser.parse_args()
    for name, path in make_video_demo(args.out, args.scale, args.gt_size).items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()
