"""The simplest learned multi-frame super-resolution: one linear filter per output phase, fitted by least squares.

How much of what the video clips hold (``video_oracle.py``) a model can take from the neighbouring frames without
measuring the motion: for every LR pixel, the (2r+1)² Y windows around it in the ``N_f`` frames centred on it are
mapped linearly to the s×s HR Y pixels it covers, one filter per set, fitted by ridge least squares on the training
septuplets (their centre target im4 from im1 … im7) and applied to the held-out clips. A filter sees the frames at
fixed positions, so it can use them only where the motion is the same in every clip (``make_video_demo``'s ``pan``
option): where every clip moves its own way (the video benchmark's set) its multi-frame gain says what a model that
does not align gets. PSNR on Y (BasicSR's ``bgr2ycbcr``, no border crop, no rounding of the output) of every held-out
frame with a full window, bicubic (BasicSR's ``imresize``) on the same frames.

    python bench/video_linear.py --data datasets/video_fixed_pan --out bench/video_linear_fixed_pan.md
    python bench/video_linear.py --sources generated --out bench/video_linear.md   # the benchmark's set
"""
import argparse
import glob
import os
import sys
import time
from os import path as osp

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.metrics import calculate_psnr
from basicsr.utils import bgr2ycbcr
from basicsr.utils.matlab_functions import imresize

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_util import device_name  # noqa: E402

#: Ridge weight, relative to the mean diagonal of the normal equations.
RIDGE = 1e-4


def luma(img: np.ndarray) -> torch.Tensor:
    """Y in [0, 1] of an 8-bit BGR image (BasicSR's ``bgr2ycbcr``, ``y_only``), (H, W)."""
    return torch.from_numpy(bgr2ycbcr(img.astype(np.float32) / 255, y_only=True))


def features(lqs: list, radius: int) -> torch.Tensor:
    """(h·w, N_f·(2r+1)² + 1): each LR pixel's windows in the frames ``lqs`` (Y, (h, w) each), reflected at the
    borders, and a constant."""
    stack = torch.stack(lqs)[:, None]  # (N_f, 1, h, w)
    cols = F.unfold(F.pad(stack, [radius] * 4, mode='reflect'), 2 * radius + 1)  # (N_f, (2r+1)², h·w)
    cols = cols.permute(2, 0, 1).reshape(cols.shape[-1], -1)
    return torch.cat([cols, torch.ones(len(cols), 1)], 1).double()


def targets(gt: torch.Tensor, scale: int) -> torch.Tensor:
    """(h·w, s²): the HR pixels each LR pixel covers."""
    return F.pixel_unshuffle(gt[None, None], scale)[0].reshape(scale * scale, -1).T.double()


def septuplets(data: str, scale: int, sources: list):
    with open(osp.join(data, 'meta_info_train_GT.txt'), encoding='utf-8') as f:
        keys = [line.split()[0] for line in f if line.strip()]
    for key in keys:
        if sources and key.split('/')[0] not in sources:
            continue
        lqs = [luma(cv2.imread(osp.join(data, f'vimeo_septuplet_matlabLRx{scale}', 'sequences', key, f'im{i}.png')))
               for i in range(1, 8)]
        yield lqs, luma(cv2.imread(osp.join(data, 'vimeo_septuplet', 'sequences', key, 'im4.png')))


def dihedral(img: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 flips and 90° rotations (BasicSR's ``augment`` draws among them), 0: unchanged."""
    return torch.rot90(img.flip(-1) if k >= 4 else img, k % 4, (-2, -1))


def normal_equations(data: str, scale: int, radius: int, sources: list, flip_rot: bool = False) -> tuple:
    """X^T X and X^T Y of the 7-frame features of every training septuplet (with ``flip_rot`` in its 8 flips and
    rotations, as the networks are trained); those of fewer frames are their sub-blocks (:func:`fit`)."""
    gram, cross, count = 0, 0, 0
    for lqs, gt in septuplets(data, scale, sources):
        for k in range(8 if flip_rot else 1):
            x, y = features([dihedral(lq, k) for lq in lqs], radius), targets(dihedral(gt, k), scale)
            gram, cross, count = gram + x.T @ x, cross + x.T @ y, count + 1
    if not count:
        raise ValueError(f'no training septuplets of {sources or "any source"} in {data}')
    return gram, cross


def fit(gram: torch.Tensor, cross: torch.Tensor, num_frame: int, radius: int) -> torch.Tensor:
    """The filter (N_f·(2r+1)² + 1, s²) of ``num_frame`` frames centred on im4, by ridge least squares on the
    7-frame :func:`normal_equations`' rows and columns of those frames and the constant."""
    window = (2 * radius + 1)**2
    first = 3 - num_frame // 2
    keep = torch.cat([torch.arange(first * window, (first + num_frame) * window), torch.tensor([len(gram) - 1])])
    gram, cross = gram[keep][:, keep], cross[keep]
    ridge = RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram + ridge, cross)


def psnr(out: torch.Tensor, gt: torch.Tensor) -> float:
    """BasicSR's ``calculate_psnr`` of two Y planes in [0, 1], unrounded, no border crop."""
    return calculate_psnr(out.double().numpy() * 255, gt.double().numpy() * 255, 0)


def test(data: str, scale: int, filters: dict, radius: int, half: int) -> dict:
    """{clip: {row: mean PSNR-Y}} over the frames of every held-out clip with a full window of 2·``half`` + 1."""
    scores = {}
    for clip in sorted(os.listdir(osp.join(data, 'test', 'GT'))):
        gts = [luma(cv2.imread(p)) for p in sorted(glob.glob(osp.join(data, 'test', 'GT', clip, '*.png')))]
        frames = [cv2.imread(p) for p in sorted(glob.glob(osp.join(data, 'test', f'BIx{scale}', clip, '*.png')))]
        lqs = [luma(f) for f in frames]
        rows = {'bicubic': []}
        rows.update({n: [] for n in filters})
        for c in range(half, len(gts) - half):
            gt = gts[c]
            bicubic = imresize(frames[c].astype(np.float32) / 255, scale)
            rows['bicubic'].append(psnr(torch.from_numpy(bgr2ycbcr(np.clip(bicubic, 0, 1), y_only=True)), gt))
            for n, weights in filters.items():
                out = features(lqs[c - n // 2:c + n // 2 + 1], radius) @ weights  # (h·w, s²)
                h, w = lqs[c].shape
                out = F.pixel_shuffle(out.T.reshape(1, scale * scale, h, w), scale)[0, 0]
                rows[n].append(psnr(out.clamp(0, 1), gt))
        scores[clip] = {row: float(np.mean(v)) for row, v in rows.items()}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default=osp.join(ROOT, 'datasets', 'video_opencv'))
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--num-frames', type=int, nargs='+', default=[1, 3, 5, 7])
    parser.add_argument('--radius', type=int, default=3, help='window half-side r in LR pixels')
    parser.add_argument('--flip-rot', action='store_true', help='fit on every septuplet in its 8 flips and 90° '
                        'rotations (as the networks are trained): one filter for 8 motions')
    parser.add_argument('--sources', nargs='+', default=[], help='training septuplets of these sources only')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'video_linear.md'))
    args = parser.parse_args()
    start = time.time()
    gram, cross = normal_equations(args.data, args.scale, args.radius, args.sources, args.flip_rot)
    filters = {n: fit(gram, cross, n, args.radius) for n in args.num_frames}
    scores = test(args.data, args.scale, filters, args.radius, max(args.num_frames) // 2)
    clips = list(scores)
    rows = ['bicubic'] + args.num_frames
    mean = {row: float(np.mean([scores[c][row] for c in clips])) for row in rows}
    one = mean.get(1)
    command = ' '.join(['python bench/video_linear.py', f'--data {osp.relpath(args.data, ROOT)}',
                        f'--scale {args.scale}', f'--num-frames {" ".join(map(str, args.num_frames))}',
                        f'--radius {args.radius}'] + (['--flip-rot'] if args.flip_rot else [])
                       + ([f'--sources {" ".join(args.sources)}'] if args.sources else []))
    lines = ['# Linear multi-frame filters fitted by least squares', '',
             f'Command: `{command}`; {time.strftime("%Y-%m-%d")}; {device_name(torch.device("cpu"))}; '
             f'{time.time() - start:.0f} s.', '',
             f'Training: the septuplets of `{osp.relpath(args.data, ROOT)}`'
             + (f' from {", ".join(args.sources)}' if args.sources else '')
             + (', each in its 8 flips and 90° rotations' if args.flip_rot else '')
             + f'; windows {2 * args.radius + 1}² LR px per frame, ridge {RIDGE} of the mean diagonal. Held-out: every '
             f'frame with a full window of {max(args.num_frames)}; PSNR on Y, no border crop.', '',
             '| row | PSNR-Y | Δ bicubic (dB) | Δ N_f = 1 (dB) | ' + ' | '.join(clips) + ' |',
             '|---' * (4 + len(clips)) + '|']
    for row in rows:
        label = 'Bicubic' if row == 'bicubic' else f'Linear filter, N_f = {row}'
        delta = '' if row == 'bicubic' else f'{mean[row] - mean["bicubic"]:+.2f}'
        gain = '' if row == 'bicubic' or one is None else f'{mean[row] - one:+.2f}'
        lines.append(f'| {label} | {mean[row]:.2f} | {delta} | {gain} | '
                     + ' | '.join(f'{scores[c][row]:.2f}' for c in clips) + ' |')
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
