"""How much the neighbouring frames of the video benchmark's clips can tell, with the motion known.

The video benchmark (``video_bench.py``) asks MSFFN for a temporal gain of 0.3 dB over its single-frame version. This
script measures what the clips themselves hold, without a network: multi-frame back-projection (Irani & Peleg 1991)
of the centre frame from ``N_f`` LR frames, with the motion measured between the **target** HR frames (DIS optical
flow, so the motion is near perfect: an oracle a network never has). Per centre frame it solves

    x* = argmin_x  sum_k || m_k * (D(W_k x) - y_k) ||^2,

with ``D`` BasicSR's MATLAB bicubic ×4 (``imresize``, its weights as one matrix per axis), ``W_k`` the warp from
the centre to frame ``k`` (bilinear, from the flow of the targets), ``y_k`` the LR frames and ``m_k`` the LR pixels
where the warped centre target explains frame ``k`` (occlusions and flow errors out), by L-BFGS from the bicubic
upsampling of the centre frame, the same number of steps for every ``N_f``. ``N_f = 1`` is the single-frame
back-projection: the difference from it is the gain the neighbours offer a linear method that knows the motion.
PSNR / SSIM on Y without a border crop, as the benchmark scores. On the training septuplets, by source, the same
measure says how much of the training signal rewards a network for using the neighbours at all.

``--motion lr`` measures the motion as a network must, between the **LR** frames (DIS flow at LR, smoothed,
resized ×4 in size and value), and leaves out the LR pixels where the centre LR frame, warped by that flow, misses
frame ``k`` by more than ``--lr-tolerance``: no target is read, so its gain over ``N_f = 1`` is one a method can take
from the inputs alone, with a classical motion estimate.

    python bench/video_oracle.py                  # datasets/video_opencv: held-out clips, training septuplets
    python bench/video_oracle.py --step 1         # every centre frame of the held-out clips (default: every 4th)
    python bench/video_oracle.py --motion lr --out bench/video_lr_motion.md   # the motion of the LR frames
"""
import argparse
import glob
import os
import sys
import time
from os import path as osp
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.matlab_functions import calculate_weights_indices

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_util import device_name  # noqa: E402

#: LR pixels whose prediction from the warped centre target misses the LR frame by more than this (8-bit values,
#: any channel; twice the rounding of the LR frames) are left out of that frame's term: occlusions, flow errors,
#: the objects' spin.
MASK_TOLERANCE = 1.0
#: With ``--motion lr``: LR pixels where the centre LR frame, warped by the LR flow, misses the LR frame by more than
#: this (8-bit values, any channel) are left out (a bilinear warp at LR does not reproduce the frame's aliasing, so
#: the tolerance is wider than the targets').
LR_TOLERANCE = 4.0
#: With ``--motion lr``: the LR flow is smoothed by a Gaussian of this σ (LR pixels) before use: DIS's per-pixel
#: estimates at LR scatter by about a quarter of an HR pixel, which back-projection pays for (a sub-pixel pan of the
#: astronaut, ``tests/test_video_oracle.py``: σ 0, 1, 2, 4 gain +0.33, +0.48, +0.54, +0.66 dB at tolerance 4; the
#: targets' flow +1.60); 2 keeps the objects' edges.
LR_FLOW_SIGMA = 2.0


def resize_matrix(length: int, scale: int) -> torch.Tensor:
    """The (length / scale, length) matrix of BasicSR's MATLAB bicubic ``imresize(x, 1 / scale)`` along one axis:
    its weights and indices (``calculate_weights_indices``), the symmetric padding folded back in."""
    weights, indices, sym_start, _ = calculate_weights_indices(length, length // scale, 1 / scale, 'cubic', 4, True)
    source = indices.long() - sym_start  # into the unpadded axis; mirrored at both ends (the edge sample repeated)
    source = torch.where(source < 0, -source - 1, torch.where(source >= length, 2 * length - 1 - source, source))
    matrix = torch.zeros(length // scale, length)
    return matrix.scatter_add_(1, source, weights.float())


def downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``D``: BasicSR's MATLAB bicubic downsampling of ``x`` (N, C, H, W) by ``scale``, differentiable."""
    rows, cols = resize_matrix(x.shape[-2], scale).to(x), resize_matrix(x.shape[-1], scale).to(x)
    return torch.einsum('ih,nchw,jw->ncij', rows, x, cols)


def dis_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """DIS optical flow (H, W, 2) from ``dst`` to ``src`` (8-bit BGR frames): ``dst(p) ~ src(p + flow(p))``."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(dst, cv2.COLOR_BGR2GRAY), cv2.cvtColor(src, cv2.COLOR_BGR2GRAY), None)


def flow_grid(src: np.ndarray, dst: np.ndarray) -> torch.Tensor:
    """The sampling grid (1, H, W, 2) that warps ``src`` onto ``dst`` (8-bit BGR frames), by :func:`dis_flow`."""
    return grid(dis_flow(src, dst))


def grid(flow: np.ndarray) -> torch.Tensor:
    """The sampling grid (1, H, W, 2) of ``grid_sample`` (``align_corners=True``) that reads ``p + flow(p)``."""
    h, w = flow.shape[:2]
    x = (np.arange(w)[None, :] + flow[..., 0]) / (w - 1) * 2 - 1
    y = (np.arange(h)[:, None] + flow[..., 1]) / (h - 1) * 2 - 1
    return torch.from_numpy(np.stack([x, y], -1)[None]).float()


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=True)


def _tensor(img: np.ndarray) -> torch.Tensor:
    """An 8-bit BGR frame as a (1, 3, H, W) tensor in [0, 1], BGR kept (BasicSR's metrics read BGR)."""
    return img2tensor(img.astype(np.float32) / 255, bgr2rgb=False)[None]


def window(gts: list, lqs: list, c: int, half: int, scale: int, tolerance: float = MASK_TOLERANCE,
           motion: str = 'target', lr_tolerance: float = LR_TOLERANCE) -> tuple:
    """The terms of frame ``c``'s back-projection from frames ``c - half`` … ``c + half`` (8-bit BGR targets
    ``gts`` and LR frames ``lqs``), the centre first, then outwards: LR frames, grids from the centre (``None`` for
    itself) and masks. ``motion='target'``: the flow of the targets, masks 1 where the warped centre target,
    downsampled, is within ``tolerance`` 8-bit values of the LR frame; ``'lr'``: the flow of the LR frames (×``scale``),
    masks 1 where the warped centre LR frame is within ``lr_tolerance`` of the LR frame (the targets unread)."""
    centre = _tensor(gts[c])
    ys, grids, masks = [_tensor(lqs[c])], [None], [torch.ones_like(centre[:, :1, ::scale, ::scale])]
    for k in sorted(range(c - half, c + half + 1), key=lambda k: abs(k - c))[1:]:
        ys.append(_tensor(lqs[k]))
        if motion == 'target':
            grids.append(flow_grid(gts[c], gts[k]))
            predicted, tol = downsample(warp(centre, grids[-1]), scale), tolerance
        else:
            flow = cv2.GaussianBlur(dis_flow(lqs[c], lqs[k]), (0, 0), LR_FLOW_SIGMA)
            h, w = centre.shape[-2:]
            grids.append(grid(cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * scale))
            predicted, tol = warp(ys[0], grid(flow)), lr_tolerance
        masks.append(((predicted - ys[-1]).abs().amax(1, keepdim=True) * 255 <= tol).float())
    return ys, grids, masks


def back_project(lqs: list, grids: list, masks: list, scale: int, steps: int) -> torch.Tensor:
    """``x*`` of the module docstring: L-BFGS from the bicubic upsampling of the centre frame (``lqs[0]``)."""
    x = F.interpolate(lqs[0], scale_factor=scale, mode='bicubic', align_corners=False).requires_grad_()
    optimizer = torch.optim.LBFGS([x], lr=1, max_iter=steps, history_size=20, line_search_fn='strong_wolfe')

    def closure():
        optimizer.zero_grad()
        loss = sum(((downsample(warp(x, g) if g is not None else x, scale) - y) * m).square().sum()
                   for y, g, m in zip(lqs, grids, masks))
        loss.backward()
        return loss

    optimizer.step(closure)
    return x.detach().clamp(0, 1)


def windows(data: str, split: str, scale: int, half: int, step: int, names: Optional[list], per_source: int):
    """``(group, targets, LR frames, centre)`` of every window scored: held-out clips (``test``, the group a clip,
    every ``step``-th centre frame with a full window) or training septuplets (``train``, the group their source,
    ``per_source`` of each spread over its list, the centre frame im4)."""
    def read(paths):
        return [cv2.imread(p) for p in paths]

    if split == 'test':
        for clip in names or sorted(os.listdir(osp.join(data, 'test', 'GT'))):
            gts = read(sorted(glob.glob(osp.join(data, 'test', 'GT', clip, '*.png'))))
            lqs = read(sorted(glob.glob(osp.join(data, 'test', f'BIx{scale}', clip, '*.png'))))
            for c in range(half, len(gts) - half, step):
                yield clip, gts, lqs, c
        return
    with open(osp.join(data, 'meta_info_train_GT.txt'), encoding='utf-8') as f:
        keys = [line.split()[0] for line in f if line.strip()]
    for source in names or sorted({k.split('/')[0] for k in keys}):
        mine = [k for k in keys if k.split('/')[0] == source]
        for k in mine[::max(len(mine) // per_source, 1)][:per_source]:
            frames = [f'im{i}.png' for i in range(1, 8)]
            yield (source, read(osp.join(data, 'vimeo_septuplet', 'sequences', k, f) for f in frames),
                   read(osp.join(data, f'vimeo_septuplet_matlabLRx{scale}', 'sequences', k, f) for f in frames), 3)


def main() -> None:
    from basicsr.metrics import calculate_psnr, calculate_ssim

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default=osp.join(ROOT, 'datasets', 'video_opencv'),
                        help='the video set (scripts/make_video_data.sh)')
    parser.add_argument('--splits', nargs='+', choices=['test', 'train'], default=['test', 'train'],
                        help='held-out clips (by clip), training septuplets (by source)')
    parser.add_argument('--num-frames', type=int, nargs='+', default=[1, 3, 5, 7])
    parser.add_argument('--step', type=int, default=4, help='held-out clips: every step-th centre frame with a full '
                        'window')
    parser.add_argument('--per-source', type=int, default=8, help='training septuplets scored per source')
    parser.add_argument('--steps', type=int, default=60, help='L-BFGS iterations per solve')
    parser.add_argument('--clips', nargs='+', help='held-out clips to score (default: all)')
    parser.add_argument('--tolerance', type=float, default=MASK_TOLERANCE,
                        help='LR pixels off by more than this (8-bit) from the warped centre target are left out')
    parser.add_argument('--motion', choices=['target', 'lr'], default='target',
                        help='measure the motion between the target frames (the oracle) or between the LR frames')
    parser.add_argument('--lr-tolerance', type=float, default=LR_TOLERANCE,
                        help='--motion lr: LR pixels off by more than this (8-bit) from the warped centre LR frame '
                        'are left out')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'video_oracle.md'))
    args = parser.parse_args()
    scale = 4
    half = max(args.num_frames) // 2
    worst_d = 0.
    start = time.time()
    tables = {}
    for split in args.splits:
        rows = tables[split] = {'bicubic': {}} | {nf: {} for nf in args.num_frames}
        for group, gts, lqs, c in windows(args.data, split, scale, half, args.step,
                                          args.clips if split == 'test' else None, args.per_source):
            # D matches the set's LR frames to their 8-bit rounding, where they were not clipped to 0 or 255
            lq = _tensor(lqs[c])
            inside = ((lq > 0) & (lq < 1)).all(1, keepdim=True)
            worst_d = max(worst_d, float(((downsample(_tensor(gts[c]), scale) - lq).abs() * inside).max() * 255))
            ys, grids, masks = window(gts, lqs, c, half, scale, args.tolerance, args.motion, args.lr_tolerance)
            bicubic = tensor2img(F.interpolate(ys[0], scale_factor=scale, mode='bicubic', align_corners=False), False)
            rows['bicubic'].setdefault(group, []).append((calculate_psnr(bicubic, gts[c], 0, test_y_channel=True),
                                                          calculate_ssim(bicubic, gts[c], 0, test_y_channel=True), 1.))
            for nf in args.num_frames:
                out = tensor2img(back_project(ys[:nf], grids[:nf], masks[:nf], scale, args.steps), False)
                kept = float(torch.cat(masks[1:nf]).mean()) if nf > 1 else 1.
                rows[nf].setdefault(group, []).append((calculate_psnr(out, gts[c], 0, test_y_channel=True),
                                                       calculate_ssim(out, gts[c], 0, test_y_channel=True), kept))
            print(split, group, c, {k: round(v[group][-1][0], 2) for k, v in rows.items()}, flush=True)

    def mean(values, i):
        return float(np.mean([np.mean([v[i] for v in per]) for per in values]))

    lines = [
        '# What the video clips hold: multi-frame back-projection with the motion of the '
        + ('targets' if args.motion == 'target' else 'LR frames'), '',
        f'Command: `python bench/video_oracle.py --splits {" ".join(args.splits)} --num-frames '
        f'{" ".join(map(str, args.num_frames))} --step {args.step} --per-source {args.per_source} --steps {args.steps}'
        + (f' --tolerance {args.tolerance}' if args.motion == 'target' else
           f' --motion lr --lr-tolerance {args.lr_tolerance}')
        + (f' --clips {" ".join(args.clips)}' if args.clips else '')
        + f'`; {time.strftime("%Y-%m-%d")}; {device_name(torch.device("cpu"))}; {time.time() - start:.0f} s.', '',
        f'Data: `{osp.relpath(args.data, ROOT)}`, ×{scale}. `D` against the set\'s LR frames where they are not '
        f'clipped to 0 or 255: at most {worst_d:.2f} (8-bit values; their rounding is 0.5). Motion: DIS optical flow '
        + (f'between the target frames; LR pixels off by more than {args.tolerance} (8-bit) from the warped centre '
           'target left out.' if args.motion == 'target' else
           f'between the LR frames, smoothed (σ {LR_FLOW_SIGMA} LR px) and resized ×{scale}; LR pixels off by more '
           f'than {args.lr_tolerance} (8-bit) from the warped centre LR frame left out; no target read.')
        + ' PSNR / SSIM on Y, no border crop, per group then over the groups.']
    titles = {'test': f'Held-out clips (centre frames {half}, {half + args.step}, … of each)',
              'train': f'Training septuplets ({args.per_source} per source, centre frame im4)'}
    for split, rows in tables.items():
        groups = list(rows['bicubic'])
        lines += ['', f'## {titles[split]}', '',
                  '| row | PSNR-Y | SSIM-Y | Δ bicubic (dB) | Δ N_f = 1 (dB) | ' + ' | '.join(groups)
                  + ' | neighbour pixels kept |', '|---|---|---|---|---|' + '---|' * len(groups) + '---|']
        base = mean(rows['bicubic'].values(), 0)
        single = mean(rows[1].values(), 0) if 1 in rows else None
        for key, per in rows.items():
            psnr = mean(per.values(), 0)
            label = 'Bicubic' if key == 'bicubic' else f'Back-projection, N_f = {key}'
            gain = '' if key == 'bicubic' or single is None else f'{psnr - single:+.2f}'
            lines.append(f'| {label} | {psnr:.2f} | {mean(per.values(), 1):.4f} | '
                         + ('' if key == 'bicubic' else f'{psnr - base:+.2f}') + f' | {gain} | '
                         + ' | '.join(f'{np.mean([v[0] for v in per[g]]):.2f}' for g in groups)
                         + f' | {mean(per.values(), 2):.0%} |')
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
