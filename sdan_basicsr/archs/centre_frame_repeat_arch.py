"""A video network fed its centre frame in every input slot: the same class without temporal information.

The single-frame rows of the video benchmark (a temporal gain is the network against this wrapper of it).
"""
import copy

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class CentreFrameRepeat(nn.Module):
    """Wraps a video network (input (N, T, C, h, w)) and replaces every frame of its input by the centre one.

    The wrapped network is built as usual and trains and tests unchanged on the same data, so that it and the wrapper
    differ only in the frames they see; MSFFN's N_f = 1 (Table VIII: no temporal information, "degenerated to an
    SISR model"). Its weights are those of ``net`` under the prefix ``net.``.

    Args:
        network (dict): Options of the wrapped network, ``type`` included (as ``network_g``).
    """

    def __init__(self, network: dict):
        super().__init__()
        self.net = build_network(copy.deepcopy(network))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C, h, w) → the wrapped network's output for T copies of frame T // 2."""
        if x.dim() != 5:
            raise ValueError(f'CentreFrameRepeat expects input of shape (N, T, C, h, w), got {tuple(x.shape)}')
        t = x.shape[1]
        return self.net(x[:, t // 2:t // 2 + 1].expand_as(x).contiguous())
