"""Masked dual L1 loss of SDAN (ICME 2021, eq. 6): the aligned LR image and the zoomed HR image, each masked."""
from typing import Optional

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

_REDUCTIONS = ('mean', 'masked_mean')


def _shave(t: Optional[torch.Tensor], border: int) -> Optional[torch.Tensor]:
    return t if t is None or border == 0 else t[..., border:-border, border:-border]


@LOSS_REGISTRY.register()
class MaskedDualL1Loss(nn.Module):
    """L = loss_weight · [aligned_weight · R(ρ(X' − Y') · M') + R(ρ(X~ − Y) · M)]  (SDAN eq. 6).

    X~ (N, 3, sH, sW) is the zoomed output and Y its target; X' (N, 3, H, W) the aligned low-resolution
    output and Y' the target bicubic-downsampled to the input grid; M' the validity mask at LR and
    M = M' nearest-upsampled to HR. ρ(d) = sqrt(d² + ε) (ε = ``charbonnier_eps``; 0 gives |d|).
    A network without X' (any plain SR arch) gets the HR term only, with M = 1.

    Args:
        loss_weight (float): Weight of the whole loss. Default: 1.0.
        aligned_weight (float): Weight of the LR (alignment) term. Default: 1.0.
        reduction (str): ``mean`` divides each term by all its elements (the released behaviour);
            ``masked_mean`` by its valid elements (mask sum × channels). Default: ``mean``.
        charbonnier_eps (float): ε of ρ; the released code used 1e-12. Default: 0 (plain L1).
        crop_border_hr (int): Pixels shaved off every side of the HR term before the loss. Default: 0.
        crop_border_lr (int): Pixels shaved off every side of the LR term. Default: 0.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 aligned_weight: float = 1.0,
                 reduction: str = 'mean',
                 charbonnier_eps: float = 0.0,
                 crop_border_hr: int = 0,
                 crop_border_lr: int = 0):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
        self.loss_weight = loss_weight
        self.aligned_weight = aligned_weight
        self.reduction = reduction
        self.charbonnier_eps = charbonnier_eps
        self.crop_border_hr = crop_border_hr
        self.crop_border_lr = crop_border_lr

    def _term(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor], border: int):
        if pred.shape != target.shape:
            raise ValueError(f'prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape')
        pred, target, mask = _shave(pred, border), _shave(target, border), _shave(mask, border)
        diff = pred - target
        rho = torch.sqrt(diff * diff + self.charbonnier_eps) if self.charbonnier_eps else diff.abs()
        if mask is None:
            return rho.mean()
        weighted = rho * mask
        if self.reduction == 'mean':
            return weighted.mean()
        valid = mask.expand_as(rho).sum()
        return weighted.sum() / valid.clamp(min=1)

    def forward(self,
                sr: torch.Tensor,
                gt: torch.Tensor,
                aligned: Optional[torch.Tensor] = None,
                aligned_gt: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Loss of eq. (6).

        Args:
            sr (Tensor): X~ (N, C, sH, sW).
            gt (Tensor): Y, same shape.
            aligned (Tensor | None): X' (N, C, H, W); None for networks without an aligned output.
            aligned_gt (Tensor | None): Y', same shape as ``aligned``.
            mask (Tensor | None): M' (N, 1, H, W); None means all valid.
        """
        hr_mask = None if mask is None else F.interpolate(mask, size=sr.shape[-2:], mode='nearest')
        loss = self._term(sr, gt, hr_mask, self.crop_border_hr)
        if aligned is not None:
            if aligned_gt is None:
                raise ValueError('MaskedDualL1Loss got the aligned output X\' without its target Y\'')
            loss = loss + self.aligned_weight * self._term(aligned, aligned_gt, mask, self.crop_border_lr)
        return self.loss_weight * loss
