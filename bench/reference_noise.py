"""What the test-time reference's noise does to SDAN: the same network fed the input's RGB as it is, and smoothed.

SDAN's reference steers only the offsets Θ of the squared deformable convolution (Sec. 3.2); the image itself comes
from the mosaic. In training the reference is Y' (the target downsampled, blurred by ``train.ref_blur``), nearly
noiseless; at test time it is the input's own RGB rendering, with the sensor's noise. If the offsets follow that
noise, smoothing the test-time reference alone changes the result: it helps where the noise is high and costs
where the reference's detail is what steers the offsets. Rows per tree (PSNR, RGB, 32-px border crop, as
``pretrained_eval.py``'s ``test.py`` runs; the network run whole, padded by itself): the reference as is, under a
Gaussian blur of σ 1 and 2 input pixels, and bicubic.

    python bench/reference_noise.py [--weights sdan_basicsr/weights/sdan_x4_bayer.pth] [--trees demo noise_high ...] \
        > bench/reference_noise.md
"""
import argparse
import datetime
import os
import platform
import sys
from os import path as osp

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.archs import build_network

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'bench'))

from pretrained_eval import ROBUST_TREES, tree_folder  # noqa: E402

from sdan_basicsr.archs.sdan_arch import SDAN  # noqa: E402
from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset  # noqa: E402
from sdan_basicsr.models.sdan_model import blur_reference  # noqa: E402
from sdan_basicsr.tools.zoom import infer_sdan_options, load_weights  # noqa: E402
from sdan_basicsr.weights import SHIPPED_WEIGHTS, network_options  # noqa: E402


def load(weights: str) -> SDAN:
    """The network of ``weights``: their stored options, else the shipped network's with what the shapes say (a
    training's own checkpoint; ``image_skip`` leaves no weight to read it off)."""
    state, stored = load_weights(weights)
    options = stored or {**network_options(SHIPPED_WEIGHTS), **infer_sdan_options(state, weights)}
    net = build_network(options)
    net.load_state_dict(state)
    return net.eval()


#: Blurs of the test-time reference, σ in input pixels (0: as it is).
REF_BLURS = (0., 1., 2.)


def main() -> None:
    from basicsr.metrics import calculate_metric
    from basicsr.utils import tensor2img

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--weights', default=SHIPPED_WEIGHTS)
    parser.add_argument('--trees', nargs='+', default=['demo', *ROBUST_TREES], choices=['demo', *ROBUST_TREES])
    args = parser.parse_args()
    net = load(args.weights)
    psnr = dict(type='calculate_psnr', crop_border=32, test_y_channel=False)
    threads = int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count())
    print(f'`python bench/reference_noise.py --weights {osp.relpath(osp.abspath(args.weights), ROOT)}`, '
          f'{platform.processor() or platform.machine()}, {threads} thread{"s" if threads > 1 else ""}, '
          f'{datetime.date.today()}; PSNR (RGB, 32-px border crop) on the held-out trees.\n')
    print('| tree | bicubic | ' + ' | '.join(f'SDAN, reference blurred σ {s:g}' if s else 'SDAN, reference as is'
                                           for s in REF_BLURS) + ' |')
    print('|---|---|' + '---|' * len(REF_BLURS))
    for tree in args.trees:
        dataset = SRRAWPairedDataset({'name': tree, 'dataroot': tree_folder(tree), 'phase': 'test',
                                      'noise_profile': net.noise_input})
        scores = {}
        for i in range(len(dataset)):
            item = dataset[i]
            lq, ref, gt = item['lq'][None], item['lq_rgb'][None], tensor2img(item['gt'])
            noise = item['noise'][None] if net.noise_input else None
            bicubic = F.interpolate(ref, scale_factor=net.upscale, mode='bicubic', align_corners=False)
            scores.setdefault('bicubic', []).append(calculate_metric(dict(img=tensor2img(bicubic), img2=gt), psnr))
            with torch.no_grad():
                for sigma in REF_BLURS:
                    sr = net(lq, blur_reference(ref, sigma), noise).sr
                    scores.setdefault(sigma, []).append(calculate_metric(dict(img=tensor2img(sr), img2=gt), psnr))
        print(f'| {tree} | ' + ' | '.join(f'{np.mean(v):.2f}' for v in scores.values()) + ' |', flush=True)


if __name__ == '__main__':
    main()
