"""Validation curves of a BasicSR training from its logs: each metric against iterations and wall time.

    python bench/training_curves.py experiments/SDAN_pretrained_x4_bayer --out bench/pretrained_curves
    python bench/training_curves.py experiments/SDAN_size_16x8 experiments/SDAN_size_32x8 --out bench/size_curves

reads every ``train_*.log`` of the experiment (a resumed training has several, in order), writes ``OUT.md`` (one row
per validation: iteration, training hours so far, each metric) and ``OUT.png`` (the metrics against both). Wall time
counts only the time the training ran: the gaps between a log's end and the next log's start (a stopped machine)
are left out. Several experiments (trainings of one recipe at several sizes) get a table each and share the plots.
"""
import argparse
import glob
import re
from datetime import datetime
from os import path as osp
from typing import Dict, List

STAMP = re.compile(r'^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),\d+ ')
ITER = re.compile(r'iter:\s*([\d,]+)')
METRIC = re.compile(r'# (\w+): ([-+0-9.eE]+)')


def read_validations(folder: str) -> List[Dict[str, float]]:
    """``[{'iter', 'hours', metric: value, ...}]`` of every validation in the experiment's logs, in order (the last
    of consecutive ones at one iteration)."""
    rows, elapsed = [], 0.
    for log in sorted(glob.glob(osp.join(folder, 'train_*.log')), key=osp.getmtime):
        start = last = None
        it, row = 0, None
        with open(log, encoding='utf-8') as f:
            for line in f:
                stamp = STAMP.match(line)
                if stamp:
                    last = datetime.strptime(stamp.group(1), '%Y-%m-%d %H:%M:%S')
                    start = start or last
                    row = None
                found = ITER.search(line)
                if found:
                    it = int(found.group(1).replace(',', ''))
                if 'Validation' in line and last is not None:
                    row = dict(iter=it, hours=(elapsed + (last - start).total_seconds()) / 3600)
                    rows.append(row)
                metric = METRIC.search(line)
                if metric and row is not None:
                    row[metric.group(1)] = float(metric.group(2))
        if start is not None:
            elapsed += (last - start).total_seconds()
    kept = []
    for r in (r for r in rows if len(r) > 2):
        if kept and kept[-1]['iter'] == r['iter']:  # BasicSR validates the last weights again after training
            kept[-1] = r
        else:
            kept.append(r)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('experiment', nargs='+', help='experiments/<name> of a training (several: overlaid)')
    parser.add_argument('--out', required=True, help='output path without extension (.md and .png are written)')
    args = parser.parse_args()
    runs = {}
    for folder in args.experiment:
        rows = read_validations(folder)
        if not rows:
            raise SystemExit(f'no validation in the logs of {folder}')
        runs[osp.basename(osp.normpath(folder))] = rows
    metrics = [k for k in next(iter(runs.values()))[-1] if k not in ('iter', 'hours')]
    lines = [f'# Validation curves of {", ".join(runs)}', '',
             f'`python bench/training_curves.py {" ".join(args.experiment)} --out {args.out}`']
    for name, rows in runs.items():
        lines += ['', *([f'## {name}', ''] if len(runs) > 1 else []),
                  '| iteration | hours | ' + ' | '.join(metrics) + ' |', '|---' * (2 + len(metrics)) + '|']
        lines += [f"| {r['iter']} | {r['hours']:.2f} | " + ' | '.join(f'{r.get(m, float("nan")):.4f}' for m in metrics)
                  + ' |' for r in rows]
    with open(args.out + '.md', 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), 2, figsize=(9, 2.6 * len(metrics)), squeeze=False)
    for i, m in enumerate(metrics):
        for j, x in enumerate(('iter', 'hours')):
            ax = axes[i][j]
            for name, rows in runs.items():
                ax.plot([r[x] for r in rows], [r.get(m) for r in rows], 'o-', label=name)
            ax.set_xlabel('iteration' if x == 'iter' else 'training hours')
            ax.set_ylabel(m)
            ax.grid(alpha=0.3)
            if len(runs) > 1:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out + '.png', dpi=80)
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
