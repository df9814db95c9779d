"""The blur that makes SDAN's training reference Y' look like its test-time reference (``train.ref_blur``).

In training SDAN's reference is Y', the target shot bicubic-downsampled to the input grid: a longer focal length,
so it holds detail the input does not. At test time the reference is the input's own RGB (its camera JPEG). This
script finds the Gaussian σ (in input pixels) for which Y' blurred by σ is closest to that RGB, on the training
scenes of a tree: per σ, the PSNR of blurred Y' against the input's RGB after one least-squares gain per channel
(the two renditions need not share an exposure), 16-px border crop.

    python bench/ref_blur_fit.py                                   # the README demo's training scenes
    python bench/ref_blur_fit.py --root datasets/SR_RAW/train --every 10 --sigmas 0 0.5 1 1.5 2

The residual misalignment that the ECC affine leaves between the two shots counts as blur here too, which is
what the network sees at training time.
"""
import argparse
import math
import sys
from os import path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset  # noqa: E402
from sdan_basicsr.models.sdan_model import blur_reference, downsample_to  # noqa: E402
from sdan_basicsr.tools.demo import DEMO_DATA  # noqa: E402

BORDER = 16


def fit_psnr(ref: torch.Tensor, rgb: torch.Tensor) -> float:
    """PSNR of ``ref`` against ``rgb`` (N, 3, h, w) after one least-squares gain per channel, inside the border."""
    a, b = ref[..., BORDER:-BORDER, BORDER:-BORDER], rgb[..., BORDER:-BORDER, BORDER:-BORDER]
    gain = (a * b).sum((0, 2, 3)) / (a * a).sum((0, 2, 3)).clamp(min=1e-12)
    return -10 * math.log10(float(((a * gain.view(1, 3, 1, 1) - b) ** 2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=osp.join(ROOT, DEMO_DATA, 'train'), help='folder of training scenes')
    parser.add_argument('--in-format', default='bayer', choices=('bayer', 'packed'))
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--every', type=int, default=3, help='use every n-th pair of the tree (default 3)')
    parser.add_argument('--sigmas', type=float, nargs='+', default=[0, 0.5, 0.75, 0.8, 0.9, 1, 1.25, 1.5, 2])
    args = parser.parse_args()

    ds = SRRAWPairedDataset(dict(dataroot=args.root, in_format=args.in_format, scale=args.scale, phase='val'))
    items = [ds[i] for i in range(0, len(ds), args.every)]
    print(f'{len(items)} pairs of {args.root}; PSNR (dB) of Y\' blurred by sigma against the input\'s RGB:')
    print('sigma     psnr')
    best = None
    for sigma in args.sigmas:
        psnr = sum(fit_psnr(blur_reference(downsample_to(d['gt'][None], d['lq_rgb'].shape[-2:]), sigma),
                            d['lq_rgb'][None]) for d in items) / len(items)
        best = max(best or (psnr, sigma), (psnr, sigma))
        print(f'{sigma:5.2f}  {psnr:7.3f}', flush=True)
    print(f'best sigma: {best[1]:g} ({best[0]:.3f} dB)')


if __name__ == '__main__':
    main()
