"""Mixed precision of training, testing and ``sdan-zoom``: the option values, ``auto``'s choice, the autocast context.

One vocabulary everywhere: ``fp32`` (no autocast, the paper's setting), ``bf16`` and ``fp16`` (``torch.autocast``
with that dtype; float32 master weights) and ``auto`` (:func:`auto_precision` of the device). In option files
``train.amp`` / ``val.amp`` take ``false`` (= fp32), ``bf16``, ``fp16`` or ``auto``. Which layers of SDAN run in low
precision is SDAN's own policy (see its docstring).
"""
import contextlib
from typing import Optional, Union

import torch

#: Precision name → autocast dtype (None: no autocast).
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
#: What an option file may write for ``amp``.
AMP_VALUES = (False, 'bf16', 'fp16', 'auto')


def parse_amp(value: Union[bool, str, None], key: str) -> str:
    """The precision name of option ``key`` = ``value`` (``false``/``~``/``fp32`` → ``fp32``; ``auto`` kept).

    Raises:
        ValueError: naming ``key`` and the allowed values, for anything else (``fp8``, ``true``, a typo).
    """
    if value is None or value is False or value == 'fp32':
        return 'fp32'
    if isinstance(value, str) and (value in PRECISIONS or value == 'auto'):
        return value
    allowed = ', '.join(str(v).lower() if isinstance(v, bool) else repr(v) for v in AMP_VALUES)
    raise ValueError(f'{key}: {value!r} is not a supported precision; allowed values: {allowed}')


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so that bf16 autocast is a speed-up."""
    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def auto_precision(device: Union[str, torch.device]) -> str:
    """``auto``'s choice: bf16 on a CPU with native bf16 or a CUDA device that has it, fp16 on other CUDA
    devices, else fp32."""
    device = torch.device(device)
    if device.type == 'cuda':
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    if device.type == 'cpu' and cpu_has_native_bf16():
        return 'bf16'
    return 'fp32'


def resolve(precision: str, device: Union[str, torch.device]) -> str:
    """``precision``, or :func:`auto_precision` of ``device`` for ``auto``."""
    return auto_precision(device) if precision == 'auto' else precision


def memory_format(device: Union[str, torch.device], precision: str) -> torch.memory_format:
    """The memory format of ``train.channels_last: true`` for ``precision`` on ``device``: ``channels_last`` for
    bf16/fp16 on a CPU, where oneDNN's low-precision convolutions otherwise reorder every NCHW map to NHWC and back
    (measured: a bf16 training step of the default SDAN at 8×144² in 12.4 s instead of 22.0 s; the demo's
    16-feature SDAN at 8×48² in 1.41 s instead of 1.14 s, ``bench/RESULTS.md``); ``contiguous_format`` otherwise,
    so that fp32 training is unchanged to the last bit."""
    low = PRECISIONS[resolve(precision, device)] is not None
    return torch.channels_last if low and torch.device(device).type == 'cpu' else torch.contiguous_format


def autocast(device: Union[str, torch.device], precision: str):
    """``torch.autocast`` on ``device``'s type with ``precision``'s dtype (``auto`` resolved); a no-op for ``fp32``."""
    dtype: Optional[torch.dtype] = PRECISIONS[resolve(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
