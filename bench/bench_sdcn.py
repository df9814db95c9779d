"""Speed of the squared deformable convolution: ``fast`` vs ``torchvision`` vs ``mmcv`` vs a plain conv.

Forward (no grad) and forward+backward medians, measured round-robin in one run so the ratios are side by side.
"""
import argparse
import math
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from bench_util import device_name, pick_device, synchronize  # noqa: E402

from sdan_basicsr.ops.squared_deform_conv import squared_deform_conv2d, warp_implementation

#: Target configuration of the benchmark (channels, size, batch), timed forward+backward.
TARGET = (64, 128, 4)
#: ``fast`` must be at least this many times faster than ``torchvision`` at TARGET ...
TARGET_VS_TORCHVISION = 10.0
#: ... and take at most this many times the plain convolution's time.
TARGET_VS_CONV = 1.5
METHODS = ('conv NCHW', 'conv NHWC', 'fast', 'torchvision', 'mmcv')


def mmcv_available() -> bool:
    try:
        from mmcv.ops import modulated_deform_conv2d  # noqa: F401
    except ImportError:
        return False
    return True


def make_calls(channels: int, size: int, batch: int, device: torch.device, methods: List[str]) -> Dict[str, Callable]:
    """One zero-argument callable per method; each runs the layer on fixed random tensors."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device)
    theta = (torch.randn(batch, 2, size, size, generator=gen) * 2).to(device)
    weight = (torch.randn(channels, channels, 3, 3, generator=gen) / math.sqrt(9 * channels)).to(device)
    bias = torch.randn(channels, generator=gen).to(device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for t in (x, theta, weight, bias, x_cl):
        t.requires_grad_()
    funcs = {
        'conv NCHW': lambda: F.conv2d(x, weight, bias, padding=1),
        'conv NHWC': lambda: F.conv2d(x_cl, weight, bias, padding=1),
        'fast': lambda: squared_deform_conv2d(x, theta, weight, bias, backend='fast'),
        'torchvision': lambda: squared_deform_conv2d(x, theta, weight, bias, backend='torchvision'),
        'mmcv': lambda: squared_deform_conv2d(x, theta, weight, bias, backend='mmcv'),
    }
    grad = torch.randn(batch, channels, size, size, generator=gen).to(device)

    def forward(f):
        def run():
            with torch.no_grad():
                f()
        return run

    def forward_backward(f):
        def run():
            f().backward(grad)
        return run

    calls = {}
    for m in methods:
        calls[(m, 'fwd')] = forward(funcs[m])
        calls[(m, 'fwd+bwd')] = forward_backward(funcs[m])
    return calls


def time_round_robin(calls: Dict, repeats: Dict, device: torch.device) -> Dict:
    """Median seconds per call; one warm-up each, then the calls interleaved, repeat by repeat."""
    times = {key: [] for key in calls}
    for key, call in calls.items():
        call()
        synchronize(device)
    for r in range(max(repeats.values())):
        for key, call in calls.items():
            if r >= repeats[key]:
                continue
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def fmt_ms(seconds: Optional[float]) -> str:
    return f'{seconds * 1e3:10.1f}' if seconds is not None else f'{"-":>10}'


def fmt_ratio(num: Optional[float], den: Optional[float]) -> str:
    return f'{num / den:8.2f}' if num is not None and den is not None else f'{"-":>8}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='only the target configuration and one small one')
    parser.add_argument('--device', default='auto', help='auto (CUDA when present), cpu or cuda')
    parser.add_argument('--channels', type=int, nargs='+', default=[32, 64])
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 256, 512])
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed repeats of the cheap methods (median; halved, at least 3, at the largest sizes)')
    parser.add_argument('--slow-repeats', type=int, default=3, help='timed repeats of torchvision and mmcv on CPU')
    parser.add_argument('--slow-max-work', type=float, default=64 * 128 * 128 * 4,
                        help='on CPU, skip torchvision/mmcv above this channels·pixels·batch (default: the target)')
    args = parser.parse_args()
    if args.quick:
        args.channels, args.sizes, args.batches, args.repeats = [64], [64, 128], [4], 5

    device = pick_device(args.device)
    has_mmcv = mmcv_available()
    print(f'device: {device} ({device_name(device)}); torch {torch.__version__}; '
          f'mmcv.ops: {"yes" if has_mmcv else "not importable, column skipped"}')
    print('times: median ms; fwd under no_grad, fwd+bwd = forward + backward to x, theta, weight, bias; '
          'conv NCHW/NHWC = F.conv2d 3x3 same size on NCHW / channels_last input; ratios from the same run')
    warp = warp_implementation(device, torch.float32)
    layout = 'on x as given (NCHW here)' if 'C++' in warp else 'in channels_last'
    print(f'fast warp: {warp}; fast runs its conv {layout}')
    header = (f'{"ch":>3} {"size":>5} {"b":>2} {"pass":>7} ' + ' '.join(f'{m:>10}' for m in METHODS)
              + f' {"tv/fast":>8} {"mmcv/fast":>9} {"fast/NCHW":>9} {"fast/NHWC":>9}')
    print(header)
    print('-' * len(header))
    results = {}
    skipped = []
    for channels in args.channels:
        for size in args.sizes:
            for batch in args.batches:
                work = channels * size * size * batch
                methods = ['conv NCHW', 'conv NHWC', 'fast']
                slow = [m for m in ('torchvision', 'mmcv') if m != 'mmcv' or has_mmcv]
                if device.type == 'cpu' and work > args.slow_max_work:
                    skipped.append(f'{channels}ch {size}² b{batch}')
                else:
                    methods += slow
                calls = make_calls(channels, size, batch, device, methods)
                slow_cpu = device.type == 'cpu'
                cheap = args.repeats if work <= 4 * args.slow_max_work else max(3, args.repeats // 2)
                repeats = {key: args.slow_repeats if slow_cpu and key[0] in ('torchvision', 'mmcv') else cheap
                           for key in calls}
                med = time_round_robin(calls, repeats, device)
                for phase in ('fwd', 'fwd+bwd'):
                    row = {m: med.get((m, phase)) for m in METHODS}
                    results[(channels, size, batch, phase)] = row
                    ratios = [fmt_ratio(row['torchvision'], row['fast']), fmt_ratio(row['mmcv'], row['fast']),
                              fmt_ratio(row['fast'], row['conv NCHW']), fmt_ratio(row['fast'], row['conv NHWC'])]
                    print(f'{channels:>3} {size:>4}² {batch:>2} {phase:>7} '
                          + ' '.join(fmt_ms(row[m]) for m in METHODS)
                          + f' {ratios[0]} {ratios[1]:>9} {ratios[2]:>9} {ratios[3]:>9}', flush=True)
    if skipped:
        print(f'torchvision/mmcv not timed (CPU, channels·pixels·batch above {args.slow_max_work:.0f}; about 4 s per '
              f'fwd+bwd at the target already): {", ".join(skipped)}')

    row = results.get((*TARGET, 'fwd+bwd'))
    if row is None:
        print(f'targets: configuration {TARGET[0]}ch {TARGET[1]}² b{TARGET[2]} not measured')
        return
    checks = [('fast vs torchvision', row['torchvision'], row['fast'], f'>= {TARGET_VS_TORCHVISION:g}x faster',
               lambda r: r >= TARGET_VS_TORCHVISION),
              ('fast / conv NCHW', row['fast'], row['conv NCHW'], f'<= {TARGET_VS_CONV:g}x the time',
               lambda r: r <= TARGET_VS_CONV),
              ('fast / conv NHWC', row['fast'], row['conv NHWC'], f'<= {TARGET_VS_CONV:g}x the time',
               lambda r: r <= TARGET_VS_CONV)]
    for name, num, den, goal, ok in checks:
        if num is None or den is None:
            print(f'SKIP {name}: not measured')
            continue
        ratio = num / den
        print(f'{"PASS" if ok(ratio) else "FAIL"} {name} at {TARGET[0]}ch {TARGET[1]}² b{TARGET[2]} fwd+bwd: '
              f'{ratio:.2f} (target {goal})')


if __name__ == '__main__':
    main()
