"""Deformable-kernel convolution (Gao et al., "Deformable Kernels", ICLR 2020), depthwise, pure PyTorch.

The K×K taps of each channel's kernel are sampled bilinearly from a larger learned kernel space
(S×S) at fractional positions predicted from the input; DKSAN (ECCVW 2020) uses it in DKC_Align and DKSA.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ('local', 'global')


def deform_kernel_conv2d(x: torch.Tensor,
                         offset: torch.Tensor,
                         weight: torch.Tensor,
                         bias: Optional[torch.Tensor] = None,
                         kernel_size: int = 3,
                         stride: int = 1,
                         padding: int = 1,
                         dilation: int = 1) -> torch.Tensor:
    """Depthwise deformable-kernel convolution with given kernel-sampling offsets.

    For output pixel p, channel c in offset group g = c mod G and tap k of the K×K grid:

        y_c(p) = Σ_k W_c(k + Δ_{g,k}(p) + (S − K)/2) · x_c(p·stride + k·dilation − padding) + b_c

    where W_c(·) samples the S×S kernel space bilinearly with zeros outside (−1, S)
    (``grid_sample(align_corners=True, padding_mode='zeros')``). With S = K and zero offsets this is
    exactly ``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)``.

    Args:
        x (Tensor): Input of shape (N, C, H, W).
        offset (Tensor): Kernel-sampling offsets of shape (N, G·2·K², H_out, W_out) (local) or
            (N, G·2·K², 1, 1) (global, one set per sample); per group, [dy, dx] for each tap in
            row-major order. G must divide C.
        weight (Tensor): Kernel space of shape (C, 1, S, S), S >= K.
        bias (Tensor | None): Shape (C,). Default: None.
        kernel_size (int): K, the number of taps per side. Default: 3.
        stride (int): Default: 1.
        padding (int): Zero padding of ``x``. Default: 1.
        dilation (int): Spacing of the taps on ``x``. Default: 1.

    Returns:
        Tensor: Shape (N, C, H_out, W_out).
    """
    n, c, h, w = x.shape
    k2 = kernel_size * kernel_size
    space = weight.shape[-1]
    if weight.shape != (c, 1, space, space) or space < kernel_size or space < 2:
        raise ValueError(f'weight must have shape ({c}, 1, S, S) with S >= max(kernel_size, 2), '
                         f'got {tuple(weight.shape)}')
    h_out = (h + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    groups = offset.shape[1] // (2 * k2)
    if (offset.dim() != 4 or offset.shape[0] != n or groups * 2 * k2 != offset.shape[1] or c % max(groups, 1)
            or groups == 0 or offset.shape[2:] not in ((h_out, w_out), (1, 1))):
        raise ValueError(f'offset must have shape ({n}, G*{2 * k2}, {h_out}, {w_out}) or ({n}, G*{2 * k2}, 1, 1) '
                         f'with G dividing {c}, got {tuple(offset.shape)}')
    num_pos = offset.shape[2] * offset.shape[3]

    # sampling positions in the kernel space, (N, G, K², L, 2) as (x, y) normalised for grid_sample
    taps = torch.arange(kernel_size, dtype=x.dtype, device=x.device) + (space - kernel_size) / 2
    grid_y, grid_x = torch.meshgrid(taps, taps, indexing='ij')
    offset = offset.reshape(n, groups, k2, 2, num_pos)
    pos_y = grid_y.reshape(1, 1, k2, 1) + offset[:, :, :, 0]
    pos_x = grid_x.reshape(1, 1, k2, 1) + offset[:, :, :, 1]
    grid = torch.stack((pos_x, pos_y), dim=-1) * (2 / (space - 1)) - 1

    # channel c = q·G + g uses group g: sample each group's channels with that group's positions
    kernels = weight.reshape(c // groups, groups, space, space).transpose(0, 1)  # (G, C/G, S, S)
    kernels = kernels.unsqueeze(0).expand(n, -1, -1, -1, -1).reshape(n * groups, c // groups, space, space)
    sampled = F.grid_sample(
        kernels, grid.reshape(n * groups, k2, num_pos, 2), mode='bilinear', padding_mode='zeros', align_corners=True)
    sampled = sampled.reshape(n, groups, c // groups, k2, num_pos).transpose(1, 2).reshape(n, c, k2, num_pos)

    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride).view(n, c, k2, h_out * w_out)
    out = (cols * sampled).sum(dim=2).view(n, c, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, c, 1, 1)
    return out


class DeformKernelConv2d(nn.Module):
    """Depthwise deformable-kernel convolution layer with its own offset predictor.

    Local variant: a K×K conv on the input (same stride, padding and dilation as the main conv)
    predicts G·2·K² kernel-sampling offsets per output pixel. Global variant: the offsets come from
    a 1×1 conv on the globally average-pooled input, one set per sample. The predictor is
    zero-initialised, so a new layer samples the centre K×K of the kernel space.

    Args:
        in_channels (int): Channel number C of the input.
        out_channels (int): Channel number of the output; must equal ``in_channels`` (depthwise).
        kernel_size (int): K, taps per side. Default: 3.
        kernel_space (int): S, side of the learned kernel space the taps are sampled from. Default: 4.
        groups (int | None): Number G of offset groups; channel c uses group c mod G. None means
            ``in_channels`` (one offset set per channel). Default: None.
        variant (str): 'local' (per-pixel offsets) or 'global' (per-sample offsets). Default: 'local'.
        stride (int): Default: 1.
        dilation (int): Default: 1.
        bias (bool): Add a learned bias. Default: True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 3,
                 kernel_space: int = 4,
                 groups: Optional[int] = None,
                 variant: str = 'local',
                 stride: int = 1,
                 dilation: int = 1,
                 bias: bool = True):
        super().__init__()
        groups = in_channels if groups is None else groups
        if out_channels != in_channels:
            raise ValueError(f'DeformKernelConv2d is depthwise: out_channels ({out_channels}) must equal '
                             f'in_channels ({in_channels})')
        if kernel_size % 2 == 0 or kernel_space < max(kernel_size, 2):
            raise ValueError(f'need an odd kernel_size <= kernel_space, kernel_space >= 2; '
                             f'got kernel_size={kernel_size}, kernel_space={kernel_space}')
        if groups < 1 or in_channels % groups:
            raise ValueError(f'groups ({groups}) must divide in_channels ({in_channels})')
        if variant not in VARIANTS:
            raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.kernel_space = kernel_space
        self.groups = groups
        self.variant = variant
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2

        self.weight = nn.Parameter(torch.empty(in_channels, 1, kernel_space, kernel_space))
        self.bias = nn.Parameter(torch.zeros(in_channels)) if bias else None
        num_offset = groups * 2 * kernel_size * kernel_size
        if variant == 'local':
            self.conv_offset = nn.Conv2d(
                in_channels, num_offset, kernel_size, stride, self.padding, dilation=dilation, bias=True)
        else:
            self.conv_offset = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, num_offset, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform kernel space (as ``nn.Conv2d``), zero bias, zero offset predictor."""
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for m in self.conv_offset.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_kernel_conv2d(x, self.conv_offset(x), self.weight, self.bias, self.kernel_size, self.stride,
                                    self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'kernel_space={self.kernel_space}, groups={self.groups}, variant={self.variant!r}, '
                f'stride={self.stride}, dilation={self.dilation}')
