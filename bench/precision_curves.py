"""Training loss and validation PSNR of the same training in two precisions (same options and seed), in one PNG.

Usage: ``python bench/precision_curves.py --run fp32=ROOT_A:EXPERIMENT_A --run bf16=ROOT_B:EXPERIMENT_B -o out.png``
where ``ROOT`` holds ``experiments/<EXPERIMENT>/train_*.log``; more ``--run`` flags add curves (differences are to the
first).
Prints the validation PSNR of each run at every validation and the differences to the first run.
"""
import argparse

from zoom_bench import _curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--run', action='append', required=True, help='LABEL=ROOT:EXPERIMENT (first: reference)')
    parser.add_argument('-o', '--output', required=True, help='PNG to write')
    parser.add_argument('--title', default='the same training (options, seed) in each precision')
    args = parser.parse_args()
    curves = {}
    for spec in args.run:
        label, location = spec.split('=', 1)
        root, name = location.rsplit(':', 1)
        curves[label] = _curve(root, name)
    first = next(iter(curves))
    print('iteration ' + ' '.join(f'{label:>10}' for label in curves) + ' ' +
          ' '.join(f'{"Δ" + label:>10}' for label in list(curves)[1:]))
    for i, (it, ref) in enumerate(curves[first][1]):
        values = [c[1][i][1] if i < len(c[1]) else float('nan') for c in curves.values()]
        print(f'{it:>9} ' + ' '.join(f'{v:10.4f}' for v in values) + ' ' +
              ' '.join(f'{v - ref:+10.4f}' for v in values[1:]))

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(13, 5))
    for label, (losses, val) in curves.items():
        line, = ax_loss.plot(*zip(*losses), label=label, lw=1)
        ax_psnr.plot(*zip(*val), 'o-', color=line.get_color(), label=label)
    ax_loss.set(xlabel='iteration', ylabel='training loss (l_pix)', yscale='log', title='training loss')
    ax_psnr.set(xlabel='iteration', ylabel='PSNR (dB), held-out scenes', title='validation PSNR')
    ax_loss.legend()
    ax_psnr.legend()
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
