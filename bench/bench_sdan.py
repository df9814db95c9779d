"""Speed and memory of the whole SDAN: training steps with ``fast`` vs ``torchvision`` squared DCN in each precision
(fp32, bf16, fp16 autocast with SDAN's float32 stages), inference time and peak memory at growing mosaic sizes per
precision and memory format, and Cross Packing Attention (CPA) before/after its cheaper ``attend``.

Every memory figure comes from a fresh subprocess (CPU: growth of the peak RSS, VmHWM; CUDA: peak allocated).
"""
import argparse
import itertools
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import torch
import torch.nn.functional as F
from bench_util import device_name, pick_device, synchronize  # noqa: E402

from sdan_basicsr.archs.sdan_arch import SDAN, CrossPackingAttention
from sdan_basicsr.ops.squared_deform_conv import warp_implementation
from sdan_basicsr.utils.cpu_memory import retain_freed_memory
from sdan_basicsr.utils.precision import PRECISIONS, autocast, memory_format

NEW_ATTEND = CrossPackingAttention.attend


def original_attend(self, packed: torch.Tensor) -> torch.Tensor:
    """CPA's attention as first written (the formula of the spec, op by op): the 'before' of the comparison."""
    x = packed.flatten(2)
    energy = torch.bmm(x, x.transpose(1, 2))
    energy = energy.amax(dim=-1, keepdim=True) - energy
    return torch.bmm(torch.softmax(energy, dim=-1), x).view_as(packed)


ATTENDS = {'new': NEW_ATTEND, 'original': original_attend}
MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def current_rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    """Let the peak RSS restart from the current RSS (Linux ≥ 4.0); without it the peak covers the warm-up too."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``getrusage``'s ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a subprocess of a large parent would report the parent's peak."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024  # KiB


class MemoryMeter:
    """Peak memory growth of what runs inside ``with``: RSS on CPU, allocated memory on CUDA (MiB)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.growth_mb = float('nan')

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            reset_peak_rss()
            self.base = current_rss_mb()
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.growth_mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        else:
            self.growth_mb = peak_rss_mb() - self.base


def make_inputs(batch: int, side: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, side, side, generator=gen).to(device)
    ref = torch.rand(batch, 3, side, side, generator=gen).to(device)
    target = torch.rand(batch, 3, 4 * side, 4 * side, generator=gen).to(device)
    return x, ref, target


def make_model(backend: str, device: torch.device, seed: int = 0, **kwargs) -> SDAN:
    torch.manual_seed(seed)
    model = SDAN(dcn_backend=backend, **kwargs)
    for module in model.modules():
        if isinstance(module, CrossPackingAttention):
            module.gamma.data.fill_(0.5)  # γ = 0 at init; make CPA count in the outputs compared
    return model.to(device)


def sdan_loss(out, ref, target) -> torch.Tensor:
    """Eq. (6), released normalisation: mean(|X' − Y'|·M') + mean(|X~ − Y|·M)."""
    s = out.sr.shape[-1] // out.mask.shape[-1]
    mask_hr = F.interpolate(out.mask, scale_factor=s, mode='nearest')
    return ((out.aligned - ref).abs() * out.mask).mean() + ((out.sr - target).abs() * mask_hr).mean()


class CpaTimer:
    """Wall time spent inside the CPA modules' forward (pack, attend, unpack), via module hooks."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.total = 0.0
        self.device = device
        for module in model.modules():
            if isinstance(module, CrossPackingAttention):
                module.register_forward_pre_hook(self._start)
                module.register_forward_hook(self._stop)

    def _start(self, module, args):
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def _stop(self, module, args, output):
        synchronize(self.device)
        self.total += time.perf_counter() - self._t0


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------------------- workers (subprocesses)
def warm_up(device: torch.device) -> None:
    """Start thread pools and kernels on a tiny SDAN, whose peak memory stays far below the measured runs'."""
    with torch.no_grad():
        SDAN(num_feat=4, num_block=1).to(device)(*make_inputs(1, 16, device)[:2])


def worker_infer(device: torch.device, side: int, attend: str, tail_chunk: int, memory_format: str,
                 repeats: int, precision: str = 'fp32') -> Dict:
    """SDAN inference on one (1, 1, side, side) mosaic: the fastest of ``repeats`` runs, CPA's share, peak memory.

    ``memory_format`` ``channels_last``: ``model.to(memory_format=torch.channels_last)``, so every conv runs NHWC.
    ``precision``: autocast dtype (SDAN keeps its float32 stages).
    """
    CrossPackingAttention.attend = ATTENDS[attend]
    model = make_model('fast', device, tail_chunk=tail_chunk).eval().to(memory_format=MEMORY_FORMATS[memory_format])
    timer = CpaTimer(model, device)
    times, cpa_times = [], []
    with torch.inference_mode(), autocast(device, precision):
        warm_up(device)
        x, ref, _ = make_inputs(1, side, device)
        with MemoryMeter(device) as mem:
            for _ in range(repeats):
                timer.total = 0.0
                synchronize(device)
                start = time.perf_counter()
                model(x, ref)
                synchronize(device)
                times.append(time.perf_counter() - start)
                cpa_times.append(timer.total)
    best = min(range(repeats), key=times.__getitem__)
    return {'seconds': times[best], 'cpa_seconds': cpa_times[best], 'peak_growth_mb': mem.growth_mb}


def worker_cpa(device: torch.device, batch: int, side: int, attend: str, backward: bool, repeats: int) -> Dict:
    """CPA alone on (batch, 64, side, side) features: (fwd[+bwd]) median seconds and peak memory growth."""
    CrossPackingAttention.attend = ATTENDS[attend]
    cpa = CrossPackingAttention().to(device)
    cpa.gamma.data.fill_(0.5)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 64, side, side, generator=gen).to(device).requires_grad_(backward)
    grad = torch.randn(x.shape, generator=gen).to(device)

    def run():
        if backward:
            cpa(x).backward(grad)
        else:
            with torch.no_grad():
                cpa(x)

    warm_up(device)
    with MemoryMeter(device) as mem:
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {'seconds': statistics.median(times), 'peak_growth_mb': mem.growth_mb}


def in_subprocess(args: argparse.Namespace, job: Dict) -> Dict:
    cmd = [sys.executable, __file__, '--device', args.device, '--worker', json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {'error': (proc.stderr.strip().splitlines() or [f'exit {proc.returncode}'])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------- sections
def bench_training(args: argparse.Namespace, device: torch.device) -> None:
    """Every (backend, precision) cell starts from the same weights and takes the same steps, interleaved, so the
    ratios of one row are measured side by side; rel(·) compare the first step with fp32 of the same backend."""
    print('\n== training step (forward, eq. (6) loss, backward, Adam step; fp16 through a GradScaler), same weights, '
          'γ of both CPAs = 0.5')
    print('   x fp32: speed-up over fp32 of the same backend; x tv32: over torchvision fp32 (the released code\'s '
          'configuration)')
    print(f'{"batch":>5} {"mosaic":>7} {"backend":>11} {"prec":>5} {"s/step":>7} {"x fp32":>6} {"x tv32":>6} '
          f'{"rel(sr)":>8} {"rel(al)":>8} {"rel(grad)":>9}  warp')
    cells = list(itertools.product(('fast', 'torchvision'), args.train_precisions))
    for batch, side in args.train:
        x, ref, target = make_inputs(batch, side, device)
        first = make_model('fast', device)
        models = {cell: make_model(cell[0], device) for cell in cells}
        for cell, model in models.items():  # as SDANModel with train.channels_last: true
            model.load_state_dict(first.state_dict())
            model.to(memory_format=memory_format(device, cell[1]))
        optims = {c: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.9, 0.99)) for c, m in models.items()}
        scalers = {c: torch.amp.GradScaler(device.type, enabled=c[1] == 'fp16') for c in cells}
        outs, grads, times = {}, {}, {c: [] for c in cells}

        def step(cell):
            optims[cell].zero_grad(set_to_none=True)
            with autocast(device, cell[1]):
                out = models[cell](x, ref)
            out = type(out)(*(t.float() for t in out))
            scalers[cell].scale(sdan_loss(out, ref, target)).backward()
            scalers[cell].unscale_(optims[cell])
            return out

        def finish(cell):
            scalers[cell].step(optims[cell])
            scalers[cell].update()

        for cell in cells:  # first step: warm-up and the agreement check
            out = step(cell)
            outs[cell] = (out.sr.detach(), out.aligned.detach())
            grads[cell] = torch.cat([p.grad.flatten() for p in models[cell].parameters()])
            finish(cell)
        for _ in range(args.train_repeats):
            for cell in cells:
                synchronize(device)
                start = time.perf_counter()
                step(cell)
                finish(cell)
                synchronize(device)
                times[cell].append(time.perf_counter() - start)
        t = {c: statistics.median(v) for c, v in times.items()}
        for cell in cells:
            backend, precision = cell
            base = (backend, 'fp32')
            warp = warp_implementation(device, PRECISIONS[precision] or torch.float32) if backend == 'fast' else \
                'torchvision.ops.deform_conv2d (float32 under autocast)'
            print(f'{batch:>5} {side:>6}² {backend:>11} {precision:>5} {t[cell]:7.2f} {t[base] / t[cell]:6.2f} '
                  f'{t[("torchvision", "fp32")] / t[cell]:6.2f} {rel_err(outs[cell][0], outs[base][0]):8.1e} '
                  f'{rel_err(outs[cell][1], outs[base][1]):8.1e} {rel_err(grads[cell], grads[base]):9.1e}  {warp}',
                  flush=True)


def bench_cpa(args: argparse.Namespace, device: torch.device) -> None:
    print('\n== CPA alone, original attend vs new attend (each cell a fresh subprocess; memory = peak growth)')
    print(f'{"case":<34} {"orig s":>8} {"new s":>8} {"speed-up":>8} {"orig MiB":>9} {"new MiB":>9}')
    cases = [(f'train b{b} {s}² fwd+bwd', b, s, True) for b, s in args.train]
    cases += [(f'infer b1 {s}² fwd', 1, s, False) for s in (args.cpa_infer_sides or [])]
    for name, batch, side, backward in cases:
        res = {a: in_subprocess(args, {'kind': 'cpa', 'batch': batch, 'side': side, 'attend': a,
                                       'backward': backward, 'repeats': args.cpa_repeats}) for a in ATTENDS}
        if any('error' in r for r in res.values()):
            print(f'{name:<34} error: {res}')
            continue
        o, n = res['original'], res['new']
        print(f'{name:<34} {o["seconds"]:8.3f} {n["seconds"]:8.3f} {o["seconds"] / n["seconds"]:8.2f} '
              f'{o["peak_growth_mb"]:9.0f} {n["peak_growth_mb"]:9.0f}', flush=True)


def whole_tail_bytes(side: int, num_feat: int = 64, upscale: int = 4) -> int:
    """The whole tail's last two maps, alive together: 4C channels at s/2 x and C channels at s x (float32)."""
    return 4 * side * side * (4 * num_feat * (upscale // 2) ** 2 + num_feat * upscale ** 2)


def available_bytes(device: torch.device) -> int:
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    with open('/proc/meminfo') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('MemAvailable')) * 1024


def bench_inference(args: argparse.Namespace, device: torch.device) -> None:
    print(f'\n== inference (batch 1, fast DCN, fastest of {args.infer_repeats} forwards, each size a fresh subprocess; '
          'tail = tail_chunk, 0: whole image)')
    print(f'{"MP":>5} {"mosaic":>7} {"attend":>8} {"tail":>5} {"format":>13} {"prec":>5} {"total s":>8} {"CPA s":>7} '
          f'{"CPA %":>6} {"s/MP":>6} {"peak MiB":>9} {"MiB/MP":>7}')
    for mp in args.sizes:
        side = max(8, round(math.sqrt(mp * 1e6) / 8) * 8)
        real_mp = side * side / 1e6
        for attend, chunk, fmt, prec in itertools.product(args.infer_attends, args.infer_tail_chunks,
                                                           args.infer_formats, args.infer_precisions):
            cell = f'{real_mp:5.2f} {side:>6}² {attend:>8} {chunk:>5} {fmt:>13} {prec:>5}'
            if chunk == 0:
                need, free = whole_tail_bytes(side), available_bytes(device)
                if need > 0.9 * free:
                    print(f'{cell} skipped: the whole tail needs {need / 2**30:.1f} GiB, '
                          f'{free / 2**30:.1f} GiB available', flush=True)
                    continue
            r = in_subprocess(args, {'kind': 'infer', 'side': side, 'attend': attend, 'tail_chunk': chunk,
                                     'memory_format': fmt, 'repeats': args.infer_repeats, 'precision': prec})
            if 'error' in r:
                print(f'{cell} error: {r["error"]}', flush=True)
                continue
            print(f'{cell} {r["seconds"]:8.2f} {r["cpa_seconds"]:7.2f} '
                  f'{100 * r["cpa_seconds"] / r["seconds"]:6.1f} {r["seconds"] / real_mp:6.2f} '
                  f'{r["peak_growth_mb"]:9.0f} {r["peak_growth_mb"] / real_mp:7.0f}', flush=True)


def parse_pair(text: str) -> List[int]:
    batch, side = text.split('x')
    return [int(batch), int(side)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='small training step, CPA cases and 0.25 MP only')
    parser.add_argument('--device', default='auto', help='auto (CUDA when present), cpu or cuda')
    parser.add_argument('--train', type=parse_pair, nargs='*', default=[[8, 64], [8, 144]],
                        help='training steps as BATCHxMOSAIC_SIDE (default: 8x64 8x144, the released setting)')
    parser.add_argument('--train-repeats', type=int, default=2, help='timed training steps per cell (median)')
    parser.add_argument('--train-precisions', nargs='+', choices=list(PRECISIONS),
                        help='precisions of the training cells (default: fp32 bf16, and fp16 on CUDA)')
    parser.add_argument('--sizes', type=float, nargs='*', default=[0.25, 0.5, 1.0, 2.0, 4.0],
                        help='inference mosaic sizes in megapixels (with tail_chunk 0, 4 MP needs ~32 GiB: the '
                             'whole tail keeps two 256/64-channel maps at 2x/4x; such cells are skipped when '
                             'that exceeds the memory available)')
    parser.add_argument('--infer-attends', nargs='+', default=['new'], choices=list(ATTENDS))
    parser.add_argument('--infer-tail-chunks', type=int, nargs='+', default=[128, 0],
                        help="SDAN's tail_chunk for the inference cells (0: the tail on the whole image)")
    parser.add_argument('--infer-formats', nargs='+', default=['contiguous', 'channels_last'],
                        choices=list(MEMORY_FORMATS), help='memory format of the model in the inference cells')
    parser.add_argument('--infer-precisions', nargs='+', default=['fp32', 'bf16'], choices=list(PRECISIONS),
                        help='autocast precision of the inference cells')
    parser.add_argument('--cpa-infer-sides', type=int, nargs='*', default=[1000], help='CPA-alone inference sides')
    parser.add_argument('--infer-repeats', type=int, default=2, help='forwards per inference size (fastest shown)')
    parser.add_argument('--cpa-repeats', type=int, default=3)
    parser.add_argument('--skip', nargs='*', default=[], choices=['train', 'cpa', 'infer'])
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = pick_device(args.device)
    args.device = device.type
    # as SDANModel and sdan-zoom do on a CPU (SDAN_RETAIN_MEMORY=0 measures without it)
    retained = device.type == 'cpu' and retain_freed_memory()

    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop('kind')
        result = worker_infer(device, **job) if kind == 'infer' else worker_cpa(device, **job)
        print(json.dumps(result))
        return

    if args.train_precisions is None:
        args.train_precisions = ['fp32', 'bf16'] + (['fp16'] if device.type == 'cuda' else [])
    if args.quick:
        args.train, args.train_repeats, args.sizes, args.cpa_infer_sides = [[2, 64]], 1, [0.25], [504]
    print(f'device: {device} ({device_name(device)}); torch {torch.__version__}; freed memory kept for reuse: '
          f'{"yes" if retained else "no"}')
    print('timings are wall-clock medians; ratios compare numbers measured side by side in this run')
    if 'train' not in args.skip:
        bench_training(args, device)
    if 'cpa' not in args.skip:
        bench_cpa(args, device)
    if 'infer' not in args.skip:
        bench_inference(args, device)


if __name__ == '__main__':
    main()
