"""Bicubic interpolation as a registered arch: the first row of SDAN's Table 1, tested like any network."""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class Bicubic(nn.Module):
    """Bicubic upsampling (PyTorch's, a = −0.75), no parameters; run it with ``test.py`` on ``in_format: rgb``.

    A video input (N, T, C, h, w), as BasicSR's video datasets give, is upsampled at its centre frame T // 2.

    Args:
        upscale (int): Zoom factor. Default: 4.
    """

    def __init__(self, upscale: int = 4):
        super().__init__()
        self.upscale = upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x[:, x.shape[1] // 2]
        return F.interpolate(x, scale_factor=self.upscale, mode='bicubic', align_corners=False)
