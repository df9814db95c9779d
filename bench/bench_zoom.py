"""Time and peak memory of ``sdan-zoom`` (exact tiled SDAN) vs tile size, vs image size, and on a 24-MP RAW.

Every measurement runs the real command (:func:`sdan_basicsr.tools.zoom.zoom`) on a DNG written here, in a fresh
subprocess, so its peak resident memory (``ru_maxrss``) is its own. Default-size SDAN with random weights (γ = 0.1).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def write_inputs(folder: str, h: int, w: int, num_feat: int, num_block: int) -> tuple:
    """A ``h``×``w`` RGGB DNG of a real photograph (scikit-image's astronaut, resized) and random SDAN weights."""
    import cv2
    import torch
    from skimage import data as skdata

    from sdan_basicsr.archs.sdan_arch import SDAN
    from sdan_basicsr.data import raw_utils

    raw = osp.join(folder, f'mosaic_{h}x{w}.DNG')
    if not osp.exists(raw):
        rgb = cv2.resize(skdata.astronaut(), (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
        linear = rgb**2.2 * 0.8
        mosaic = raw_utils.mosaic_rgb(linear)
        black, white = raw_utils.SONY_BLACK_LEVEL, raw_utils.SONY_WHITE_LEVEL
        raw_utils.write_dng(raw, np.round(black + mosaic * (white - black)).astype(np.uint16), 'RGGB', black, white,
                            (0.5, 1., 0.6))
    weights = osp.join(folder, f'sdan_{num_feat}x{num_block}.pth')
    if not osp.exists(weights):
        torch.manual_seed(0)
        net = SDAN(num_feat=num_feat, num_block=num_block)
        with torch.no_grad():
            net.align.offset_att1.gamma.fill_(0.1)
            net.align.offset_att2.gamma.fill_(0.1)
        torch.save({'params': net.state_dict()}, weights)
    return raw, weights


def one(args) -> None:
    """Child process: one zoom, printed as a JSON line."""
    import torch

    from sdan_basicsr.tools.zoom import build_network, zoom
    torch.set_num_threads(args.threads)
    raw, weights = write_inputs(args.workdir, args.one[0], args.one[1], args.num_feat, args.num_block)
    out = osp.join(args.workdir, f'out_{args.one[0]}x{args.one[1]}_t{args.one[2]}.png')
    info = zoom(raw, build_network(weights), out, tile=args.one[2], progress=args.progress, precision=args.precision)
    os.remove(out)
    print(json.dumps(dict(h=args.one[0], w=args.one[1], tile=args.one[2], precision=info['precision'],
                          seconds=round(info['seconds'], 1),
                          peak_gib=round(info['peak_rss_gib'], 2))))


def measure(args, h: int, w: int, tile: int) -> dict:
    cmd = [sys.executable, __file__, '--one', str(h), str(w), str(tile), '--workdir', args.workdir,
           '--num-feat', str(args.num_feat), '--num-block', str(args.num_block), '--threads', str(args.threads),
           '--precision', args.precision]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{res.stderr[-2000:]}')
    row = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"| {h}x{w} ({h * w / 1e6:.2f} MP) | {tile or 'untiled'} | {row['precision']} | {row['seconds']} | "
          f"{row['peak_gib']} |",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--image', type=int, nargs=2, default=(512, 512), help='mosaic h w of the tile sweep')
    parser.add_argument('--tiles', type=int, nargs='*', default=(0, 128, 256, 512), help='tile sweep (0 = untiled)')
    parser.add_argument('--tile', type=int, default=128, help='tile of the image-size sweep')
    parser.add_argument('--sizes', type=int, nargs='*', default=(256, 512, 768), help='square mosaics of the sweep')
    parser.add_argument('--target', action='store_true', help='also zoom a 6000x4000 mosaic (~1 h on 2 cores)')
    parser.add_argument('--target-tile', type=int, default=512)
    parser.add_argument('--num-feat', type=int, default=64)
    parser.add_argument('--num-block', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--precision', default='fp32', choices=('auto', 'fp32', 'bf16', 'fp16'),
                        help="sdan-zoom's --precision (default: fp32)")
    parser.add_argument('--workdir', default=None, help='where the DNGs and weights go (default: a temp folder)')
    parser.add_argument('--one', type=int, nargs=3, metavar=('H', 'W', 'TILE'), help=argparse.SUPPRESS)
    parser.add_argument('--progress', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix='bench_zoom_')
    print(f'SDAN num_feat={args.num_feat} num_block={args.num_block}, {args.threads} threads, {time.ctime()}')
    print('| mosaic | tile | precision | seconds | peak RSS GiB |\n|---|---|---|---|---|')
    for tile in args.tiles:
        measure(args, *args.image, tile)
    for size in args.sizes:
        measure(args, size, size, args.tile)
    if args.target:
        measure(args, 4000, 6000, args.target_tile)


if __name__ == '__main__':
    main()
