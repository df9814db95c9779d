"""What mixed precision costs in quality: a trained SDAN tested (``test.py``'s metrics, in-process) in fp32 and under
autocast with SDAN's precision policy, and with parts of the policy switched off, which is how the policy was chosen.

Variants (each under every low precision asked for):

- ``policy``: SDAN as shipped (CPA's energy and softmax, the offset head Θ, the warp and X' in float32);
- ``cpa-lowp``: CPA's energy E = X Xᵀ and its softmax in the low precision too;
- ``offsets-lowp``: the offset head and X' (``run_in_float32`` stages of the arch) in the low precision too;
- ``warp-lowp``: the squared DCN's bilinear warp in the low precision too (the PyTorch warp: the fused kernel is
  float32-only);
- ``blanket``: all three, i.e. plain autocast over the whole network.

Usage: ``python bench/precision_quality.py -opt options/test_sdan_demo.yml [--precisions bf16 fp16]``
(run from the repository root; the option file's ``path.pretrain_network_g`` is the model tested).
"""
import argparse
import contextlib
import time
from os import path as osp

import torch
import yaml

import sdan_basicsr  # noqa: F401  (registers the plugin, applies the basicsr fixes)
from sdan_basicsr.archs import sdan_arch
from sdan_basicsr.ops import squared_deform_conv

VARIANTS = ('policy', 'cpa-lowp', 'offsets-lowp', 'warp-lowp', 'blanket')


@contextlib.contextmanager
def variant(name: str):
    """Switch parts of SDAN's precision policy off for the duration (``policy``: nothing changes)."""
    saved = sdan_arch.LOW_PRECISION, sdan_arch.run_in_float32, squared_deform_conv.LOW_PRECISION
    if name in ('cpa-lowp', 'blanket'):
        sdan_arch.LOW_PRECISION = ()  # CPA then forms E from X as it comes
    if name in ('offsets-lowp', 'blanket'):
        sdan_arch.run_in_float32 = lambda fn, *tensors: fn(*tensors)
    if name in ('warp-lowp', 'blanket'):
        squared_deform_conv.LOW_PRECISION = ()  # the convolution's output is then warped as it comes
    try:
        yield
    finally:
        sdan_arch.LOW_PRECISION, sdan_arch.run_in_float32, squared_deform_conv.LOW_PRECISION = saved


def load_options(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt.update(is_train=False, dist=False, rank=0, world_size=1, num_gpu=0 if not torch.cuda.is_available() else 1)
    opt['path'].setdefault('visualization', '/tmp')
    opt['val']['save_img'] = False
    for phase, dataset in opt['datasets'].items():
        dataset.update(phase=phase, scale=opt['scale'])
    return opt


def evaluate(opt: dict, precision: str):
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model

    opt = dict(opt, val=dict(opt['val'], amp=precision))
    model = build_model(opt)
    results = {}
    for dataset_opt in opt['datasets'].values():
        loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=opt['num_gpu'], dist=False)
        start = time.perf_counter()
        model.validation(loader, current_iter=0, tb_logger=None, save_img=False)
        results = dict(model.metric_results, seconds=time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-opt', required=True, help='test option file of the model (test.py\'s)')
    parser.add_argument('--precisions', nargs='+', default=['bf16', 'fp16'], choices=['bf16', 'fp16'])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    opt = load_options(args.opt)
    print(f'model: {osp.abspath(opt["path"]["pretrain_network_g"])}; torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads')
    reference = evaluate(opt, 'fp32')
    names = [k for k in reference if k != 'seconds']
    print(f'{"precision":<10} {"variant":<13} ' + ' '.join(f'{n:>8}' for n in names) +
          ' ' + ' '.join(f'{"Δ" + n:>8}' for n in names) + f' {"seconds":>8}')

    def row(precision, name, res):
        print(f'{precision:<10} {name:<13} ' + ' '.join(f'{res[n]:8.4f}' for n in names) + ' ' +
              ' '.join(f'{res[n] - reference[n]:+8.4f}' for n in names) + f' {res["seconds"]:8.1f}', flush=True)

    row('fp32', '-', reference)
    for precision in args.precisions:
        for name in args.variants:
            with variant(name):
                row(precision, name, evaluate(opt, precision))


if __name__ == '__main__':
    main()
