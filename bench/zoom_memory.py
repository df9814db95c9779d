"""Peak memory of ``sdan-zoom`` on a CPU against its model (``sdan_basicsr/utils/zoom_memory.py``): measure, fit, check.

Every run is the real zoom (:func:`sdan_basicsr.tools.zoom.zoom`, 8-bit PNG, colours matched) in a fresh subprocess,
on a DNG of scikit-image's astronaut written here (``bench_zoom.write_inputs``: random SDAN weights, γ = 0.1); its
peak is the child's ``ru_maxrss``, its base its resident memory before the zoom (Python, PyTorch, the weights).

    python bench/zoom_memory.py --fit --rows bench/zoom_memory.jsonl   # the grid of small runs, fitted constants
    python bench/zoom_memory.py --size 4000 6000 --precision bf16     # 24 MP at the default --max-memory
    python bench/zoom_memory.py --size 4000 6000 --precision bf16 --max-memory 6G
    python bench/zoom_memory.py --size 6336 9504 --precision bf16     # 61 MP (Sony A7R IV)
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from bench_zoom import write_inputs  # noqa: E402

#: The fitting grid: (h, w, tile, num_feat, num_block, precision, spill), in fp32. Small networks give the mosaic's
#: terms on large images (up to 60 MP) cheaply, the default one (64 × 16) the tile's terms on a 1-MP mosaic (1-2
#: minutes a run on 2 cores). bf16 is left out: on a CPU without native bf16 (where ``auto`` takes fp32) autocast
#: emulates it, 2.5 times the memory of fp32 and 25 times its time (384x512, tile 256: 5.01 GiB in 402 s against 2.41
#: GiB in 16 s); with native bf16 (where ``auto`` takes it) the fp32 fit holds it (64 x 16, 24 MP, 2026-12-06: 7.78
#: GiB in bf16 against 7.97 expected, fp32 7.06).
GRID = (
    (1024, 1536, 256, 8, 1, 'fp32', False),
    (1024, 1536, 1024, 8, 1, 'fp32', False),
    (1536, 2048, 512, 8, 1, 'fp32', True),
    (2048, 3072, 512, 8, 1, 'fp32', True),
    (4000, 6000, 1024, 8, 1, 'fp32', True),
    (6336, 9504, 1024, 8, 1, 'fp32', True),
    (512, 768, 128, 32, 4, 'fp32', False),
    (512, 768, 512, 32, 4, 'fp32', False),
    (384, 512, 128, 64, 16, 'fp32', False),
    (384, 512, 256, 64, 16, 'fp32', False),
    (384, 512, 512, 64, 16, 'fp32', True),
    (1024, 1024, 256, 64, 16, 'fp32', True),
    (1024, 1024, 512, 64, 16, 'fp32', False),
    (1024, 1024, 1024, 64, 16, 'fp32', True),
)


def one(args) -> None:
    """Child process: one zoom, printed as a JSON line."""
    import torch

    from sdan_basicsr.tools.zoom import build_network, zoom
    from sdan_basicsr.utils import zoom_memory
    torch.set_num_threads(args.threads)
    raw, weights = write_inputs(args.workdir, args.size[0], args.size[1], args.num_feat, args.num_block)
    if args.weights:  # trained weights instead of random ones of --num-feat x --num-block
        from sdan_basicsr.weights import SHIPPED_WEIGHTS
        weights = SHIPPED_WEIGHTS if args.weights == 'shipped' else args.weights
    net = build_network(weights)
    base = zoom_memory.process_base()
    out = osp.join(args.workdir, f'out_{os.getpid()}.png')
    info = zoom(raw, net, out, tile=args.tile, precision=args.precision, max_memory=args.max_memory,
                spill=args.spill, progress=False)
    os.remove(out)
    spill = info['spill']
    print(json.dumps(dict(h=args.size[0], w=args.size[1], tile=info['tile'], spill=spill, num_feat=args.num_feat,
                          num_block=args.num_block, weights=args.weights, precision=info['precision'],
                          seconds=round(info['seconds'], 1), base=base, peak=int(info['peak_rss_gib'] * 2**30),
                          expected=zoom_memory.expected_peak(net, args.size, info['tile'], info['precision'], spill,
                                                             base=base))))


def measure(args, h: int, w: int, tile, num_feat: int, num_block: int, precision: str, spill) -> dict:
    cmd = [sys.executable, __file__, '--one', '--size', str(h), str(w), '--workdir', args.workdir, '--num-feat',
           str(num_feat), '--num-block', str(num_block), '--threads', str(args.threads), '--precision', precision]
    cmd += [] if tile is None else ['--tile', str(tile)]
    cmd += [] if spill is None else ['--spill' if spill else '--no-spill']
    cmd += [] if args.max_memory is None else ['--max-memory', args.max_memory]
    cmd += ['--weights', args.weights] if args.weights else []
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{res.stderr[-2000:]}')
    row = json.loads(res.stdout.strip().splitlines()[-1])
    gib = lambda v: f'{v / 2**30:.2f}'  # noqa: E731
    net = f'{num_feat}x{num_block}' if not args.weights else osp.basename(args.weights)
    print(f"| {h}x{w} ({h * w / 1e6:.2f} MP) | {net} | {row['precision']} | {row['tile']} | "
          f"{'disk' if row['spill'] else 'memory'} | {row['seconds']} | {gib(row['base'])} | {gib(row['peak'])} | "
          f"{gib(row['expected'])} |", flush=True)
    return row


def fit(rows: list) -> None:
    """Non-negative least squares of the model's fitted terms on the measured peaks less base and exact terms."""
    from scipy.optimize import nnls

    from sdan_basicsr.archs.sdan_arch import SDAN
    from sdan_basicsr.utils import zoom_memory
    names = list(zoom_memory.COEFFICIENTS)
    a, y = [], []
    for r in rows:
        net = SDAN(num_feat=r['num_feat'], num_block=r['num_block'])
        exact, quantities = zoom_memory.terms(net, (r['h'], r['w']), r['tile'], r['precision'], r['spill'])
        a.append([quantities[k] for k in names])
        y.append(r['peak'] - r['base'] - exact)
    a, y = np.array(a), np.array(y, dtype=np.float64)
    scale = np.abs(a).max(0)
    coef, _ = nnls(a / scale, y)
    coef /= scale
    model = a @ coef
    ratio = y / np.maximum(model, 1)
    print('COEFFICIENTS =', {k: float(f'{v:.4g}') for k, v in zip(names, coef)})
    print('measured / fitted (the model part):', ' '.join(f'{v:.3f}' for v in ratio), f'max {ratio.max():.3f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--fit', action='store_true', help='run GRID and fit the model')
    parser.add_argument('--rows', help='JSON-lines file of measured runs: each run is appended to it, and with '
                        '--fit the runs already in it are not measured again')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='one zoom of an H x W mosaic')
    parser.add_argument('--tile', type=int, help='tile (default: planned from --max-memory)')
    parser.add_argument('--spill', action=argparse.BooleanOptionalAction, default=None,
                        help="CPA2's input on disk (default: as planned)")
    parser.add_argument('--max-memory', help="sdan-zoom's --max-memory, e.g. 6G (default: its default)")
    parser.add_argument('--num-feat', type=int, default=64)
    parser.add_argument('--num-block', type=int, default=16)
    parser.add_argument('--weights', help='with --size: these weights ("shipped": the package\'s) instead of random '
                        'ones of --num-feat x --num-block')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--workdir', default=None, help='where the DNGs and weights go (default: a temp folder)')
    parser.add_argument('--one', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        from sdan_basicsr.utils.zoom_memory import parse_size
        args.max_memory = None if args.max_memory is None else parse_size(args.max_memory)
        one(args)
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix='zoom_memory_')
    print('| mosaic | SDAN | precision | tile | CPA2 input | seconds | base GiB | peak GiB | expected GiB |\n'
          '|---|---|---|---|---|---|---|---|---|')
    rows = []
    if args.rows and osp.exists(args.rows):
        with open(args.rows) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    key = lambda r: (r['h'], r['w'], r['tile'], r['num_feat'], r['num_block'], r['precision'], r['spill'])  # noqa
    specs = [spec for spec in GRID if spec not in {key(r) for r in rows}] if args.fit else []
    if args.size:
        specs.append((*args.size, args.tile, args.num_feat, args.num_block, args.precision, args.spill))
    for spec in specs:
        rows.append(measure(args, *spec))
        if args.rows:
            with open(args.rows, 'a') as f:
                f.write(json.dumps(rows[-1]) + '\n')
    if args.fit:
        fit([r for r in rows if key(r) in GRID])


if __name__ == '__main__':
    main()
