"""How far above bicubic any zoom can score on the demo's held-out scenes: the misalignment ceiling.

SR-RAW scores a result against another, longer-focal shot, aligned only by an ECC affine; what the
affine leaves (lens distortion, the scene's non-affine motion) stays in the target. The demo knows its
true geometry, so it can render the *exact* zoom of each input (``make_demo.exact_target``) and score it
like any method: that score is the best any network can reach under the SR-RAW protocol on this data.

    python bench/zoom_ceiling.py                         # the README demo's tree (made if missing)
    python bench/zoom_ceiling.py --root /tmp/other_tree --num-scenes 8 --size 768

Prints, per held-out scene and on average, PSNR/SSIM/LPIPS (RGB, 32-px border crop, no white balance,
as ``test_sdan_demo.yml``) of bicubic and of the exact zoom against the target shot, and of bicubic
against the exact zoom.
"""
import argparse
import sys
from os import path as osp

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from sdan_basicsr.data.srraw_dataset import SRRAWPairedDataset  # noqa: E402
from sdan_basicsr.tools.demo import DEMO_DATA, DEMO_TREE  # noqa: E402
from sdan_basicsr.tools.make_demo import exact_target, make_demo, read_meta  # noqa: E402

METRICS = {
    'psnr': dict(type='calculate_psnr', crop_border=32, test_y_channel=False),
    'ssim': dict(type='calculate_ssim', crop_border=32, test_y_channel=False),
    'lpips': dict(type='calculate_lpips', crop_border=32),
}
PAIRS = (('bicubic', 'target'), ('exact', 'target'), ('bicubic', 'exact'))


def main() -> None:
    from basicsr.metrics import calculate_metric  # after sdan_basicsr, which makes basicsr importable
    from basicsr.utils import tensor2img

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=osp.join(ROOT, DEMO_DATA), help='demo tree (made here if missing)')
    parser.add_argument('--num-scenes', type=int, default=DEMO_TREE['num_scenes'])
    parser.add_argument('--num-test', type=int, default=DEMO_TREE['num_test'])
    parser.add_argument('--size', type=int, default=DEMO_TREE['size'])
    parser.add_argument('--seed', type=int, default=DEMO_TREE['seed'])
    parser.add_argument('--residual', type=float, default=DEMO_TREE['residual'],
                        help='non-affine misalignment of a tree made here')
    args = parser.parse_args()
    if not osp.isdir(osp.join(args.root, 'test')):
        make_demo(args.root, **dict(DEMO_TREE, num_scenes=args.num_scenes, num_test=args.num_test, size=args.size,
                                    seed=args.seed, residual=args.residual))
    meta = read_meta(args.root)
    dataset = SRRAWPairedDataset({'name': 'ceiling', 'dataroot': osp.join(args.root, 'test'), 'phase': 'test'})

    columns = [f'{a} vs {b} {m}' for a, b in PAIRS for m in METRICS]
    print('| scene (photo) | ' + ' | '.join(columns) + ' |')
    print('|---' * (len(columns) + 1) + '|')
    total = np.zeros(len(columns))
    for i, sample in enumerate(dataset.samples):
        item = dataset[i]
        target = item['gt']
        bicubic = F.interpolate(item['lq_rgb'][None], size=target.shape[-2:], mode='bicubic', align_corners=False)
        exact = torch.from_numpy(exact_target(meta, sample, dataset.scale).transpose(2, 0, 1))
        images = {name: tensor2img(img) for name, img in (('target', target), ('bicubic', bicubic), ('exact', exact))}
        row = np.array([calculate_metric({'img': images[a], 'img2': images[b]}, opt)
                        for a, b in PAIRS for opt in METRICS.values()])
        total += row / len(dataset)
        scene = osp.basename(osp.dirname(sample['lq_path']))
        photo = meta['scenes'][f'test/{scene}']['photo']
        print(f'| {scene} ({photo}) | ' + ' | '.join(f'{v:.4f}' for v in row) + ' |')
    print('| **mean** | ' + ' | '.join(f'{v:.4f}' for v in total) + ' |')


if __name__ == '__main__':
    with torch.no_grad():
        main()
