"""Squared deformable convolution: a k×k deformable convolution whose whole window moves by one offset per pixel.

SDAN (ICME 2021), eq. (5) with squared offsets: every tap of the window at p shares Δp(p) = Θ(p).
Three backends compute the same function: ``fast`` (exact conv-then-warp), ``torchvision`` and ``mmcv``.
On CPU, ``fast`` warps with the fused C++ kernel ``sdan_basicsr.ops._squared_warp`` when it was built
(see :func:`warp_extension_available`), else with pure PyTorch.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torchvision.ops import deform_conv2d

from .mixed_precision import LOW_PRECISION, run_in_float32

try:
    from . import _squared_warp
except ImportError:  # not built (no compiler, or torch missing at install time): pure-PyTorch warp
    _squared_warp = None

BACKENDS = ('auto', 'fast', 'torchvision', 'mmcv')


def warp_extension_available() -> bool:
    """Whether the fused C++ warp kernel was built; ``fast`` uses it for float32/float64 CPU tensors."""
    return _squared_warp is not None


def warp_implementation(device='cpu', dtype: torch.dtype = torch.float32) -> str:
    """Name of the warp that ``fast`` runs for tensors on ``device`` of ``dtype``: ``fused C++ (CPU)``
    or ``PyTorch (index_select / index_add_)``, followed by ``, float32 from <dtype>`` for a float16/bfloat16
    convolution (under autocast), whose output the warp upcasts."""
    warp_dtype = torch.float32 if dtype in LOW_PRECISION else dtype
    name = 'fused C++ (CPU)' if _use_fused_warp(torch.device(device), warp_dtype) else \
        'PyTorch (index_select / index_add_)'
    return name + (f', float32 from {str(dtype).replace("torch.", "")}' if dtype in LOW_PRECISION else '')


def _use_fused_warp(device: torch.device, dtype: torch.dtype, *others: Optional[torch.Tensor]) -> bool:
    """The C++ kernel takes float32/float64 CPU tensors, all of one dtype (``others``: Θ, mask, bias)."""
    return (_squared_warp is not None and device.type == 'cpu' and dtype in (torch.float32, torch.float64)
            and all(t is None or (t.device.type == 'cpu' and t.dtype == dtype) for t in others))


def expand_squared_offset(theta: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Repeat a squared offset field for every tap: (N, 2, H, W) → (N, 2·k², H, W), layout [dy, dx] × k².

    This is the per-tap offset layout of ``torchvision.ops.deform_conv2d`` and mmcv.
    """
    _check_theta(theta)
    return theta.repeat(1, kernel_size * kernel_size, 1, 1)


def _check_theta(theta: torch.Tensor) -> None:
    if theta.dim() != 4 or theta.shape[1] != 2:
        raise ValueError(f'theta must have shape (N, 2, H, W), got {tuple(theta.shape)}')


def _check_inputs(x, theta, weight, bias, mask) -> None:
    if x.dim() != 4:
        raise ValueError(f'x must have shape (N, C, H, W), got {tuple(x.shape)}')
    _check_theta(theta)
    if theta.shape[0] != x.shape[0] or theta.shape[2:] != x.shape[2:]:
        raise ValueError(f'theta {tuple(theta.shape)} does not match x {tuple(x.shape)} in batch or size')
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3] \
            or weight.shape[2] % 2 == 0:
        raise ValueError(f'weight must have shape (C_out, {x.shape[1]}, k, k) with odd k, got {tuple(weight.shape)}')
    if bias is not None and bias.shape != (weight.shape[0], ):
        raise ValueError(f'bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}')
    if mask is not None and mask.shape != (x.shape[0], 1, *x.shape[2:]):
        raise ValueError(f'mask must have shape ({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]}), '
                         f'got {tuple(mask.shape)}')


class _BilinearWarp(torch.autograd.Function):
    """Sample a channels-last map at fractional positions, bilinearly, zero outside.

    ``rows``/``cols`` hold absolute positions into ``source``. The forward gathers the four corner
    rows of C contiguous values once and blends them into the output and, when the positions need
    a gradient, into its derivatives along y and x; the backward then only scatters the output
    gradient back (``index_add_``) and takes one dot product per pixel for each axis. Same result
    as ``grid_sample(mode='bilinear', padding_mode='zeros', align_corners=True)``, at a fraction of
    its CPU cost because every memory access moves a whole channel vector.
    """

    @staticmethod
    def forward(ctx, source: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        n, c, hs, ws = source.shape
        flat = source.permute(0, 2, 3, 1).reshape(n * hs * ws, c)
        index, weight, dweight_dy, dweight_dx = _corners(rows, cols, hs, ws)
        grad_pos = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        out = flat.new_zeros(index.shape[1], c)
        d_dy, d_dx = (flat.new_zeros(index.shape[1], c) for _ in range(2)) if grad_pos else (None, None)
        for corner in range(4):
            gathered = flat.index_select(0, index[corner])
            out.addcmul_(gathered, weight[corner].unsqueeze(1))
            if grad_pos:
                d_dy.addcmul_(gathered, dweight_dy[corner].unsqueeze(1))
                d_dx.addcmul_(gathered, dweight_dx[corner].unsqueeze(1))
        ctx.save_for_backward(index, weight, d_dy, d_dx)
        ctx.source_shape = source.shape
        n_out, h, w = rows.shape
        return out.view(n_out, h, w, c).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        index, weight, d_dy, d_dx = ctx.saved_tensors
        n, c, hs, ws = ctx.source_shape
        grad_flat_out = grad_out.permute(0, 2, 3, 1).reshape(-1, c)
        grad_source = grad_rows = grad_cols = None
        if ctx.needs_input_grad[0]:
            grad_flat = grad_flat_out.new_zeros(n * hs * ws, c)
            for corner in range(4):
                grad_flat.index_add_(0, index[corner], grad_flat_out * weight[corner].unsqueeze(1))
            grad_source = grad_flat.view(n, hs, ws, c).permute(0, 3, 1, 2)
        if d_dy is not None:
            shape = grad_out.shape[:1] + grad_out.shape[2:]
            grad_rows = torch.einsum('pc,pc->p', d_dy, grad_flat_out).view(shape)
            grad_cols = torch.einsum('pc,pc->p', d_dx, grad_flat_out).view(shape)
        return grad_source, grad_rows, grad_cols


class _FusedWarp(torch.autograd.Function):
    """m(p) · S(p + Θ(p) + k//2) + b in one C++ pass (CPU), with S the padded convolution.

    The kernel samples S bilinearly (zero outside, derivatives at the floor corners, as
    :class:`_BilinearWarp`) from a channels-last copy that it makes itself, so each corner's C
    channels are one contiguous run, then multiplies by the mask and adds the bias. The output and
    the gradient of S keep the memory format of S (that of the convolution of ``x``). Only the inputs are saved: the
    backward recomputes the corners and, in one pass, scatters the output gradient into S (race-free:
    one task per image and channel block) and takes the four corner dot products per pixel that give
    the gradients of Θ and m.
    """

    @staticmethod
    def forward(ctx, source: torch.Tensor, theta: torch.Tensor, mask: Optional[torch.Tensor],
                bias: Optional[torch.Tensor], offset: int) -> torch.Tensor:
        theta = theta.contiguous()
        mask = source.new_empty(0) if mask is None else mask.contiguous()
        bias = source.new_empty(0) if bias is None else bias.contiguous()
        ctx.source_channels_last = source.permute(0, 2, 3, 1).is_contiguous()
        out, source_nhwc = _squared_warp.warp_forward(source, theta, offset, mask, bias, ctx.source_channels_last)
        ctx.save_for_backward(source_nhwc, theta, mask)
        ctx.offset = offset
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        source_nhwc, theta, mask = ctx.saved_tensors
        need = ctx.needs_input_grad
        grads = _squared_warp.warp_backward(grad_out, source_nhwc, theta, ctx.offset, mask, ctx.source_channels_last,
                                            *need[:4])
        return tuple(g if n else None for g, n in zip(grads, need[:4])) + (None, )


def _corners(rows: torch.Tensor, cols: torch.Tensor, hs: int, ws: int):
    """Flat indices, bilinear weights and their derivatives for the four corners of every sample.

    Corners outside the source get weight 0 (and a clamped, harmless index): zero padding.
    The derivatives use the floor corners, as ``grid_sample`` and the deformable-conv kernels do.
    """
    n = rows.shape[0]
    y0, x0 = rows.floor(), cols.floor()
    fy, fx = (rows - y0).reshape(-1), (cols - x0).reshape(-1)
    y0, x0 = y0.long().reshape(-1), x0.long().reshape(-1)
    base = torch.arange(n, device=rows.device).repeat_interleave(rows[0].numel()) * (hs * ws)
    index, weight, dweight_dy, dweight_dx = [], [], [], []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = y0 + dy, x0 + dx
        valid = ((yy >= 0) & (yy < hs) & (xx >= 0) & (xx < ws)).to(rows.dtype)
        wy = fy if dy else 1 - fy
        wx = fx if dx else 1 - fx
        index.append(base + yy.clamp(0, hs - 1) * ws + xx.clamp(0, ws - 1))
        weight.append(wy * wx * valid)
        dweight_dy.append((1 if dy else -1) * wx * valid)
        dweight_dx.append((1 if dx else -1) * wy * valid)
    return torch.stack(index), torch.stack(weight), torch.stack(dweight_dy), torch.stack(dweight_dx)


def _fast(x, theta, weight, bias, mask):
    """Exact conv-then-warp (SDAN spec, "fast path"): with one offset for all taps,
    Σ_k w_k · x(p + p_k + Θ(p)) = (w ∗ x)(p + Θ(p)), sampled bilinearly.

    The convolution is computed k//2 pixels beyond the image on every side (padding k − 1), as far
    as its window still sees image pixels; further out it is exactly zero, which the warp's zero
    padding supplies. Pixel p of the image is pixel p + k//2 of that map. On CPU the warp, the mask
    and the bias are one fused kernel (:class:`_FusedWarp`); elsewhere :class:`_BilinearWarp`.

    Mixed precision: under autocast the convolution (nearly all the arithmetic) runs in float16/bfloat16 and
    the warp in float32 (its output, Θ, mask and bias upcast at this boundary; the result is float32), so the
    bilinear weights keep a fraction of a pixel and the fused kernel serves both precisions.
    """
    k = weight.shape[-1]
    fused = _use_fused_warp(x.device, torch.float32 if x.dtype in LOW_PRECISION else x.dtype)
    # fused: the convolution in x's memory format (the kernel transposes what it needs itself)
    conv = F.conv2d(x if fused else x.contiguous(memory_format=torch.channels_last), weight, padding=k - 1)
    if conv.dtype in LOW_PRECISION:
        conv, theta, mask, bias = (None if t is None else t.float() for t in (conv, theta, mask, bias))
    with torch.autocast(x.device.type, enabled=False):
        return _warp(conv, theta, mask, bias, k // 2)


def _warp(conv, theta, mask, bias, offset: int):
    """m(p) · conv(p + Θ(p) + offset) + b: the fused kernel where it applies, else :class:`_BilinearWarp`."""
    if _use_fused_warp(conv.device, conv.dtype, theta, mask, bias):
        return _FusedWarp.apply(conv, theta, mask, bias, offset)
    h, w = conv.shape[2] - 2 * offset, conv.shape[3] - 2 * offset
    ys = torch.arange(h, dtype=theta.dtype, device=theta.device).view(1, h, 1) + offset
    xs = torch.arange(w, dtype=theta.dtype, device=theta.device).view(1, 1, w) + offset
    out = _BilinearWarp.apply(conv, theta[:, 0] + ys, theta[:, 1] + xs)
    if mask is not None:
        out = out * mask
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _torchvision(x, theta, weight, bias, mask):
    k = weight.shape[-1]
    offset = expand_squared_offset(theta, k)
    if mask is not None:
        mask = mask.expand(-1, k * k, -1, -1)
    # torchvision's CPU kernel has no float16/bfloat16: under autocast it runs in float32
    return run_in_float32(lambda *args: deform_conv2d(*args[:4], padding=k // 2, mask=args[4]), x, offset, weight,
                          bias, mask)


def _mmcv(x, theta, weight, bias, mask):
    try:
        from mmcv.ops import modulated_deform_conv2d
    except ImportError as err:
        raise ImportError(f"dcn backend 'mmcv' needs the package mmcv with compiled ops (mmcv.ops): {err}. "
                          "Install an mmcv build that matches your torch, or use backend='fast'.") from err
    k = weight.shape[-1]
    offset = expand_squared_offset(theta, k)
    if mask is None:
        mask = torch.ones_like(theta[:, :1])
    mask = mask.expand(-1, k * k, -1, -1).contiguous()
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    # mmcv's CPU ops take float32 only: under autocast the whole convolution runs in float32
    return run_in_float32(lambda *args: modulated_deform_conv2d(*args, 1, k // 2, 1, 1, 1), x.contiguous(), offset,
                          mask, weight, bias)


_IMPLEMENTATIONS = {'fast': _fast, 'torchvision': _torchvision, 'mmcv': _mmcv}


def resolve_backend(backend: str) -> str:
    """Name of the implementation that ``backend`` selects (``auto`` → ``fast``)."""
    if backend not in BACKENDS:
        raise ValueError(f'Unknown squared deformable conv backend {backend!r}; choose one of {BACKENDS}')
    return 'fast' if backend == 'auto' else backend


def squared_deform_conv2d(x: torch.Tensor,
                          theta: torch.Tensor,
                          weight: torch.Tensor,
                          bias: Optional[torch.Tensor] = None,
                          mask: Optional[torch.Tensor] = None,
                          backend: str = 'auto') -> torch.Tensor:
    """Deformable convolution with squared offsets (stride 1, padding k//2, one offset group).

    out(p) = m(p) · Σ_k w_k · x(p + p_k + Θ(p)) + b, bilinear sampling, zero outside the image
    (SDAN eq. (5) with Δp_k = Θ(p) for every tap k).

    Args:
        x (Tensor): Input of shape (N, C, H, W).
        theta (Tensor): Squared offsets (N, 2, H, W), channel 0 = rows (dy), channel 1 = columns (dx).
        weight (Tensor): Kernel (C_out, C, k, k), k odd.
        bias (Tensor | None): (C_out,).
        mask (Tensor | None): Per-pixel modulation m (N, 1, H, W), shared by all taps. Default: ones.
        backend (str): ``auto`` (= ``fast``), ``fast``, ``torchvision`` or ``mmcv``.

    Returns:
        Tensor: (N, C_out, H, W).
    """
    _check_inputs(x, theta, weight, bias, mask)
    return _IMPLEMENTATIONS[resolve_backend(backend)](x, theta, weight, bias, mask)


class SquaredDeformConv2d(nn.Module):
    """Module form of :func:`squared_deform_conv2d`; ``forward(x, theta, mask=None)``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Odd kernel size. Default: 3.
        bias (bool): Learn a bias. Default: True.
        backend (str): See :func:`squared_deform_conv2d`. Default: ``auto``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 backend: str = 'auto'):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        self.backend = resolve_backend(backend)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, theta: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return squared_deform_conv2d(x, theta, self.weight, self.bias, mask, self.backend)

    def extra_repr(self) -> str:
        out_ch, in_ch, k, _ = self.weight.shape
        return f'{in_ch}, {out_ch}, kernel_size={k}, bias={self.bias is not None}, backend={self.backend}'
