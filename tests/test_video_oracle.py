"""``bench/video_oracle.py``: BasicSR's ``imresize`` as a differentiable operator, and multi-frame back-projection
that recovers detail the neighbours of a sub-pixel pan carry."""
import sys
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from skimage import data

from sdan_basicsr.launch import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'bench'))
import video_oracle  # noqa: E402


@pytest.mark.parametrize('size', [(64, 64), (60, 80), (32, 48)])
def test_downsample_is_basicsr_imresize(size):
    img = np.random.default_rng(0).random((*size, 3), dtype=np.float32)
    ours = video_oracle.downsample(torch.from_numpy(img).permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, imresize(img, 1 / 4), atol=1e-6)


def _pan():
    """Five frames of a pan by (0.7, 1.3) HR px per frame (8-bit BGR targets) and their LR frames by ``imresize``."""
    photo = data.astronaut()[100:260, 150:310, ::-1].astype(np.float32) / 255
    frames = []
    for i in range(-2, 3):
        shift = np.float32([[1, 0, 0.7 * i], [0, 1, 1.3 * i]])
        frames.append(cv2.warpAffine(photo, shift, (160, 160), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    gts = [np.round(f * 255).astype(np.uint8) for f in frames]
    lqs = [np.round(imresize(f / 255, 1 / 4) * 255).clip(0, 255).astype(np.uint8) for f in gts]
    return gts, lqs


def test_back_projection_gains_from_a_sub_pixel_pan():
    """Five frames of a pan by (0.7, 1.3) HR px per frame, LR by ``imresize``: with the motion of the targets, the
    five-frame solution beats the one-frame one by more than 1 dB."""
    gts, lqs = _pan()
    lqs, grids, masks = video_oracle.window(gts, lqs, 2, 2, 4)
    psnr = {nf: calculate_psnr(tensor2img(video_oracle.back_project(lqs[:nf], grids[:nf], masks[:nf], 4, 40), False),
                               gts[2], 8, test_y_channel=True) for nf in (1, 5)}
    assert psnr[5] > psnr[1] + 1, psnr


def test_back_projection_with_the_motion_of_the_lr_frames():
    """The same pan with the motion measured between the LR frames (no target read): the neighbours still help, less
    than with the targets' motion."""
    gts, lqs = _pan()
    psnr = {}
    for motion in ('target', 'lr'):
        ys, grids, masks = video_oracle.window(gts, lqs, 2, 2, 4, motion=motion)
        for nf in (1, 5):
            out = tensor2img(video_oracle.back_project(ys[:nf], grids[:nf], masks[:nf], 4, 40), False)
            psnr[motion, nf] = calculate_psnr(out, gts[2], 8, test_y_channel=True)
    assert psnr['lr', 5] > psnr['lr', 1] + 0.3, psnr
    assert psnr['lr', 5] < psnr['target', 5], psnr
