"""What a network size costs: SDAN's parameters, a training step of the shipped recipe and zoom time per megapixel.

The cost half of choosing the shipped network's size (the quality half is a validation curve per size):

    python bench/network_size.py                                   # 16x4 16x8 32x8 64x16, fp32, 2 threads
    python bench/network_size.py --sizes 16x8 32x8 --precision bf16

Every size has the recipe's options (``options/train_sdan_pretrained.yml``: ``cfa_head``, ``image_skip``,
``in_gamma``). A training step: batch 8 of 48² Bayer mosaics (192² targets), forward, L1, backward and an Adam step,
median of ``--steps`` after one warm-up. Zoom: ``tiled_forward`` of a ``--side``² mosaic in one tile, the network
channels-last (as ``sdan-zoom`` runs a tile on a CPU), fastest of two, seconds per megapixel of mosaic (a 24-MP RAW is
24 of them). Both keep freed memory for reuse, as training and ``sdan-zoom`` do on a CPU
(``sdan_basicsr.utils.cpu_memory``); without it every large map costs its page faults anew (the 32×8's zoom: 24.7
against 15.8 s per MP here). A whole 24-MP zoom adds CPA's two statistics passes and the tiles' halos:
``bench/zoom_memory.py --size 4000 6000 --weights …`` measures one.
"""
import argparse
import statistics
import sys
import time
from os import path as osp

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from bench_util import device_name  # noqa: E402

from sdan_basicsr.archs.sdan_arch import SDAN  # noqa: E402
from sdan_basicsr.utils.cpu_memory import retain_freed_memory  # noqa: E402
from sdan_basicsr.utils.precision import autocast  # noqa: E402
from sdan_basicsr.utils.tiled_sdan import tiled_forward  # noqa: E402

#: The shipped recipe's network options other than the size.
RECIPE = dict(in_format='bayer', cfa_head=True, image_skip=True, in_gamma=2.2)


def parse_size(text: str) -> tuple:
    feat, block = text.lower().split('x')
    return int(feat), int(block)


def train_step_seconds(net: SDAN, precision: str, steps: int) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lq, ref, gt = torch.rand(8, 1, 48, 48), torch.rand(8, 3, 48, 48), torch.rand(8, 3, 192, 192)
    times = []
    for k in range(steps + 1):
        start = time.perf_counter()
        with autocast('cpu', precision):
            sr = net(lq, ref).sr
        loss = F.l1_loss(sr.float(), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def zoom_seconds_per_mp(net: SDAN, precision: str, side: int) -> float:
    lq, ref = torch.rand(1, 1, side, side), torch.rand(1, 3, side, side)
    net = net.eval().to(memory_format=torch.channels_last)  # as sdan-zoom runs it on a CPU
    best = float('inf')
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            with autocast('cpu', precision):
                tiled_forward(net, lq, ref, tile=side)
            best = min(best, time.perf_counter() - start)
    return best / (side * side / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=parse_size, nargs='+', default=[(16, 4), (16, 8), (32, 8), (64, 16)],
                        metavar='FxB', help='features x residual blocks')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16'))
    parser.add_argument('--steps', type=int, default=3, help='timed training steps per size (median)')
    parser.add_argument('--side', type=int, default=512, help='side of the zoomed mosaic (0: no zoom)')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    torch.manual_seed(0)
    print(f'{device_name(torch.device("cpu"))}, {args.precision}, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}'
          f'\n\n| SDAN | parameters | training step (s) | zoom (s per MP) | 24-MP zoom (min) |\n|---|---|---|---|---|')
    for feat, block in args.sizes:
        net = SDAN(num_feat=feat, num_block=block, **RECIPE)
        params = sum(p.numel() for p in net.parameters())
        step = train_step_seconds(net.train(), args.precision, args.steps)
        per_mp = zoom_seconds_per_mp(net, args.precision, args.side) if args.side else float('nan')
        print(f'| {feat}x{block} | {params / 1e3:.0f} k | {step:.2f} | {per_mp:.1f} | {24 * per_mp / 60:.1f} |',
              flush=True)


if __name__ == '__main__':
    main()
