"""SDAN's Table 1 and Table 2 in miniature, on the demo generator's real DNG mosaics.

Every row trains through the real launcher (``sdan_basicsr/train.py``) with the same data, batch,
iterations and schedule, then is scored by ``sdan_basicsr/test.py`` (RGB PSNR/SSIM/LPIPS after a
32-px border crop) on the README demo's held-out scenes (``DEMO_TREE``: photographs never trained on, blue- and
green-dominant ones among them), on average and per scene. Writes ``bench/zoom_bench.md`` and
``bench/zoom_bench_curves.png``.

    python bench/zoom_bench.py --iters 600            # all rows
    python bench/zoom_bench.py --rows bicubic sdan_raw --iters 100

A row whose run finished in ``--work`` with the same options on the same demo tree is not trained again
(``rows/<row>.json``), so an interrupted bench resumes and rows run apart end up in one table and one plot.
"""
import argparse
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from os import path as osp

import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from sdan_basicsr.tools.demo import DEMO_TREE, demo_tree_params, read_image_metrics, read_test_metrics  # noqa: E402


def _demo_options():
    """The README demo's training options, on which every trained row is built."""
    with open(osp.join(ROOT, 'options', 'train_sdan_demo.yml'), encoding='utf-8') as f:
        return yaml.safe_load(f)


#: The demo's SDAN (its option file's ``network_g``, ``image_skip`` left to ``--image-skip``); ``cfa_head`` (not in the
#: released code) lets its head tell the mosaic's CFA sites apart. BasicSR's MSRResNet has a plain head on the mosaic,
#: which cannot (see ``SDAN``'s ``cfa_head``). The RGB row reads the camera JPEG, gamma-encoded already (``in_gamma``
#: 1).
SDAN_NET = {k: v for k, v in _demo_options()['network_g'].items() if k != 'image_skip'}
#: row → (table, label, network_g overrides (None: bicubic, no training), in_format, pixel loss)
ROWS = {
    'bicubic': ('Table 1', 'Bicubic (camera JPEG)', None, 'rgb', None),
    'msrresnet_l1': ('Table 1', 'MSRResNet, L1 on misaligned pairs (RAW)',
                     {'type': 'MSRResNet', 'num_in_ch': 1, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4,
                      'upscale': 4}, 'bayer', {'type': 'L1Loss'}),
    'sdan_rgb': ('Table 1', 'SDAN (RGB input)',
                 dict(SDAN_NET, num_in_ch=3, in_format='rgb', cfa_head=False, in_gamma=1.), 'rgb', 'dual'),
    'sdan_raw': ('Table 1 / Table 2', 'SDAN (RAW input) = ++ Flip Augment', SDAN_NET, 'bayer', 'dual'),
    'dcn': ('Table 2', 'DCN', dict(SDAN_NET, offsets='per_tap', attention='none', flip_ref=False), 'bayer', 'dual'),
    'sdcn': ('Table 2', 'SDCN', dict(SDAN_NET, attention='none', flip_ref=False), 'bayer', 'dual'),
    'cl_attention': ('Table 2', '+ CL-Attention', dict(SDAN_NET, attention='ca', flip_ref=False), 'bayer', 'dual'),
    'cp_attention': ('Table 2', '+ CP-Attention', dict(SDAN_NET, flip_ref=False), 'bayer', 'dual'),
}
DUAL_LOSS = {'type': 'MaskedDualL1Loss', 'loss_weight': 1.0, 'reduction': 'mean', 'crop_border_hr': 8,
             'crop_border_lr': 2}
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 32},
           'ssim': {'type': 'calculate_ssim', 'crop_border': 32},
           'lpips': {'type': 'calculate_lpips', 'crop_border': 32, 'better': 'lower'}}


def _launch(script, opt, work):
    cmd = [sys.executable, osp.join(ROOT, 'sdan_basicsr', script), '-opt', opt]
    env = dict(os.environ, SDAN_ROOT=work)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-4000:]}')


def _network(row, image_skip):
    """network_g of ``row`` (None for bicubic); ``image_skip`` switches SDAN's option of that name on."""
    net = copy.deepcopy(ROWS[row][2])
    if net is not None and net['type'] == 'SDAN' and image_skip:
        net['image_skip'] = True
    return net


def _train_opt(row, data, iters, batch, image_skip, seed=None, amp=None):
    opt = _demo_options()
    _, _, _, in_format, loss = ROWS[row]
    opt['name'] = f'zoom_bench_{row}'
    if seed is not None:
        opt['manual_seed'] = seed
    if amp is not None:
        opt['train']['amp'] = amp
    for split, folder in (('train', 'train'), ('val', 'test')):
        opt['datasets'][split].update(dataroot=osp.join(data, folder), in_format=in_format)
    opt['datasets']['train']['batch_size_per_gpu'] = batch
    opt['network_g'] = _network(row, image_skip)
    opt['train'].update(total_iter=iters, pixel_opt=DUAL_LOSS if loss == 'dual' else loss)
    opt['train']['scheduler'].update(periods=[iters])
    opt['val'] = {'val_freq': max(iters // 4, 1), 'save_img': False, 'metrics': {'psnr': METRICS['psnr']}}
    opt['logger'].update(print_freq=10, save_checkpoint_freq=iters)
    return opt


def _test_opt(row, data, weights, image_skip):
    in_format = ROWS[row][3]
    net = _network(row, image_skip)
    return {'name': f'zoom_bench_{row}_test', 'model_type': 'SDANModel', 'scale': 4, 'num_gpu': 'auto',
            'datasets': {'test': {'name': 'demo-test', 'type': 'SRRAWPairedDataset', 'in_format': in_format,
                                  'dataroot': osp.join(data, 'test')}},
            'network_g': net or {'type': 'Bicubic', 'upscale': 4},
            'path': {'pretrain_network_g': weights}, 'val': {'save_img': False, 'metrics': METRICS}}


def _parameters(row, image_skip):
    """Parameters of ``row``'s network (0 for bicubic), built through BasicSR's ARCH_REGISTRY."""
    from basicsr.archs import build_network

    import sdan_basicsr  # noqa: F401  (registers the archs)

    net = _network(row, image_skip)
    return sum(p.numel() for p in build_network(net).parameters()) if net else 0


def _run_row(row, data, opts, args):
    """Train (unless bicubic) and test ``row``; returns (test metrics + train seconds + per-image metrics under
    ``images``, :func:`_curve` of its log).

    The result is kept in ``rows/<row>.json`` with the options and demo tree it came from, and reused when they are
    unchanged.
    """
    train_opt = (_train_opt(row, data, args.iters, args.batch, args.image_skip, args.seed, args.amp)
                 if ROWS[row][2] else None)
    weights = (osp.join(args.work, 'experiments', f'zoom_bench_{row}', 'models', 'net_g_latest.pth')
               if train_opt else None)
    test_opt = _test_opt(row, data, weights, args.image_skip)
    record = osp.join(args.work, 'rows', f'{row}.json')

    def log_curve():
        return _curve(args.work, f'zoom_bench_{row}') if train_opt else ([], [])

    if osp.isfile(record):
        with open(record, encoding='utf-8') as f:
            kept = json.load(f)
        if (kept['train_opt'], kept['test_opt'], kept.get('tree')) == (train_opt, test_opt, demo_tree_params(data)):
            print(f'{row}: reusing {record}', flush=True)
            return kept['result'], log_curve()
    seconds = 0.0
    if train_opt is not None:
        start = time.time()
        _launch('train.py', _write(opts, f'train_{row}', train_opt), args.work)
        seconds = time.time() - start
    _launch('test.py', _write(opts, f'test_{row}', test_opt), args.work)
    result = dict(read_test_metrics(args.work, f'zoom_bench_{row}_test'), seconds=seconds,
                  images=read_image_metrics(args.work, f'zoom_bench_{row}_test'))
    os.makedirs(osp.dirname(record), exist_ok=True)
    with open(record, 'w', encoding='utf-8') as f:
        json.dump({'train_opt': train_opt, 'test_opt': test_opt, 'tree': demo_tree_params(data), 'result': result},
                  f, indent=1)
    return result, log_curve()


def _curve(work, name):
    """(iteration, training loss) and (iteration, validation PSNR) points of experiment ``name``'s log.

    A validation is placed at the last iteration logged before it (BasicSR logs iteration ``k · print_freq`` before
    it validates there, so this is exact when ``print_freq`` divides ``val_freq``); the extra validation at the end
    of training repeats the last one's iteration and is dropped. Read from the log, not the option file, so that
    ``--force_yml`` changes count.
    """
    text = ''.join(open(p, encoding='utf-8').read()
                   for p in sorted(glob.glob(osp.join(work, 'experiments', name, f'train_{name}_*.log'))))
    losses, psnrs, last = [], [], 0
    for m in re.finditer(r'iter:\s*([\d,]+),.*?l_pix: ([-+0-9.eE]+)|# psnr: ([-+0-9.eE]+)', text):
        if m.group(1):
            last = int(m.group(1).replace(',', ''))
            losses.append((last, float(m.group(2))))
        elif not psnrs or psnrs[-1][0] != last:
            psnrs.append((last, float(m.group(3))))
    return losses, psnrs


def _write(dir_, name, opt):
    path = osp.join(dir_, f'{name}.yml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f)
    return path


def _scene_lines(results, scenes):
    """Markdown table of PSNR / SSIM / LPIPS per held-out scene (rows) and bench row (columns)."""
    stems = list(next(iter(results.values()))['images'])
    lines = ['', 'Per held-out scene, PSNR / SSIM / LPIPS:', '',
             '| scene (photo) | ' + ' | '.join(ROWS[row][1] for row in results) + ' |',
             '|---' * (len(results) + 1) + '|']
    for stem in stems:
        photo = scenes[f'test/{stem.split("_")[0]}']['photo']
        cells = [' / '.join(f'{r["images"][stem].get(m, float("nan")):.{d}f}' for m, d in (('psnr', 2), ('ssim', 3),
                                                                                          ('lpips', 3)))
                 for r in results.values()]
        lines.append(f'| {stem} ({photo}) | ' + ' | '.join(cells) + ' |')
    return lines


def _plot(curves, results, out):
    """Training loss (left) and held-out validation PSNR (right) of the trained rows; bicubic's PSNR dashed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(13, 5))
    for row, (losses, val) in curves.items():
        if losses:
            line, = ax_loss.plot(*zip(*losses), label=ROWS[row][1], lw=1)
            ax_psnr.plot(*zip(*val), 'o-', color=line.get_color(), label=ROWS[row][1])
    if 'bicubic' in results:
        ax_psnr.axhline(results['bicubic']['psnr'], color='k', ls='--', label=ROWS['bicubic'][1])
    ax_loss.set(xlabel='iteration', ylabel='training loss (l_pix)', yscale='log', title='training loss')
    ax_psnr.set(xlabel='iteration', ylabel='PSNR (dB), held-out scenes', title='validation PSNR')
    ax_loss.legend(fontsize=8)
    ax_psnr.legend(fontsize=8)
    fig.suptitle('zoom_bench: equal budget per row')
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', nargs='+', default=list(ROWS), choices=list(ROWS))
    parser.add_argument('--iters', type=int, default=600)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--work', default=osp.join(ROOT, 'experiments', 'zoom_bench'))
    parser.add_argument('--scenes', type=int, default=DEMO_TREE['num_scenes'],
                        help=f"demo scenes ({DEMO_TREE['num_test']} held out)")
    parser.add_argument('--size', type=int, default=DEMO_TREE['size'], help='demo shot width')
    parser.add_argument('--residual', type=float, default=DEMO_TREE['residual'],
                        help="non-affine misalignment of the demo tree (the README demo's by default)")
    parser.add_argument('--image-skip', action='store_true', help="SDAN rows with SDAN's image_skip option on")
    parser.add_argument('--seed', type=int, help="manual_seed of the trained rows (default: the demo option file's)")
    parser.add_argument('--amp', choices=('false', 'bf16', 'fp16', 'auto'),
                        help="train.amp of the trained rows (default: the demo option file's)")
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'zoom_bench.md'))
    args = parser.parse_args()
    if args.amp == 'false':
        args.amp = False
    amp = args.amp if args.amp is not None else _demo_options()['train'].get('amp', False)

    from sdan_basicsr.tools.make_demo import make_demo, read_meta

    data = osp.join(args.work, 'data')
    tree = dict(DEMO_TREE, num_scenes=args.scenes, size=args.size, residual=args.residual)
    if demo_tree_params(data) != tree:
        shutil.rmtree(data, ignore_errors=True)
        make_demo(data, **tree)
    opts = osp.join(args.work, 'options')
    os.makedirs(opts, exist_ok=True)
    results, curves = {}, {}
    for row in args.rows:
        results[row], curves[row] = _run_row(row, data, opts, args)
        print(row, results[row], flush=True)

    png = osp.splitext(args.out)[0] + '_curves.png'
    _plot(curves, results, png)
    extra = ((' --image-skip' if args.image_skip else '') + (f' --seed {args.seed}' if args.seed is not None else '') +
             (f' --amp {args.amp or "false"}' if args.amp is not None else ''))
    lines = [f'Command: `python bench/zoom_bench.py --iters {args.iters} --batch {args.batch} '
             f'--residual {args.residual:g}{extra} --rows {" ".join(args.rows)}`; demo tree: {args.scenes} scenes '
             f'({tree["num_test"]} held out), shots {args.size} px, residual misalignment {args.residual:g}.',
             f'Budget per trained row: {args.iters} iterations, batch {args.batch}, Adam 1e-3 cosine to 1e-5, '
             f'train.amp {amp}.', '',
             '| table | row | parameters | PSNR | SSIM | LPIPS | train time (s) '
             '| val PSNR during training (iteration) |',
             '|---|---|---|---|---|---|---|---|']
    for row, r in results.items():
        lines.append(f'| {ROWS[row][0]} | {ROWS[row][1]} | {_parameters(row, args.image_skip):,} | '
                     f'{r.get("psnr", float("nan")):.2f} | '
                     f'{r.get("ssim", float("nan")):.4f} | {r.get("lpips", float("nan")):.4f} | {r["seconds"]:.0f} | '
                     f'{", ".join(f"{v:.2f} ({i})" for i, v in curves[row][1])} |')
    lines += _scene_lines(results, read_meta(data)['scenes'])
    lines.append(f'\nTraining curves: `{osp.relpath(png, osp.dirname(args.out))}`')
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
