"""Masked dual L1 loss of SDAN (ICME 2021, eq. 6): the aligned LR image and the zoomed HR image, each masked; and an
optional colour term on block means of the HR image."""
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

    Colour term (not in the paper; ``color_weight`` > 0): ``color_weight`` · mean |B_k(X~) − B_k(Y)| over the k × k
    blocks (k = ``color_block`` HR pixels) that are at least half valid, where B_k is the mean of a block's valid
    pixels. Per pixel, an L1 loss fits the median of what the target may be at that pixel given the input; where the
    residual misalignment leaves that open (small bright details on a darker ground, whose place is uncertain) the
    median is the ground's level, so the output loses the details' share of the mean and its colour reads low in the
    channels where they are bright. A block mean averages the misalignment away, so the term fits the target's mean
    colour: the colour loss of DPED (Ignatov et al., ICCV 2017: compare blurred images, for pairs that are not
    aligned) with block means and L1. On the demo tree (``bench/RESULTS.md``, "Colour across seeds, and a colour term
    in the loss") it brings the training scenes' mean colours closer to their targets; on held-out photographs it
    narrows the colour spread a little at a cost in LPIPS, so the demo leaves it off.

    Args:
        loss_weight (float): Weight of the whole loss. Default: 1.0.
        aligned_weight (float): Weight of the LR (alignment) term. Default: 1.0.
        reduction (str): ``mean`` divides each term by all its elements (the released behaviour);
            ``masked_mean`` by its valid elements (mask sum × channels). Default: ``mean``.
        charbonnier_eps (float): ε of ρ; the released code used 1e-12. Default: 0 (plain L1).
        crop_border_hr (int): Pixels shaved off every side of the HR term before the loss. Default: 0.
        crop_border_lr (int): Pixels shaved off every side of the LR term. Default: 0.
        color_weight (float): Weight of the colour term (on the HR image, after ``crop_border_hr``). Default: 0 (the
            paper's loss).
        color_block (int): k, the side of the colour term's blocks in HR pixels. Default: 16.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 aligned_weight: float = 1.0,
                 reduction: str = 'mean',
                 charbonnier_eps: float = 0.0,
                 crop_border_hr: int = 0,
                 crop_border_lr: int = 0,
                 color_weight: float = 0.0,
                 color_block: int = 16):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
        if color_weight < 0 or color_block < 1:
            raise ValueError(f'color_weight must be >= 0 and color_block >= 1, got {color_weight} and {color_block}')
        self.loss_weight = loss_weight
        self.aligned_weight = aligned_weight
        self.reduction = reduction
        self.charbonnier_eps = charbonnier_eps
        self.crop_border_hr = crop_border_hr
        self.crop_border_lr = crop_border_lr
        self.color_weight = color_weight
        self.color_block = color_block

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

    def _color_term(self, pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """mean |B_k(X~) − B_k(Y)| over the blocks at least half valid (in float32: block means of dim channels
        differ by less than bfloat16 resolves)."""
        if mask is None:
            mask = pred.new_ones(pred.shape[0], 1, *pred.shape[-2:])
        pred, target, mask = (_shave(t, self.crop_border_hr).float() for t in (pred, target, mask))
        k = self.color_block
        if min(pred.shape[-2:]) < k:
            raise ValueError(f'color_block {k} is larger than the HR image {tuple(pred.shape[-2:])} after the crop')
        valid = F.avg_pool2d(mask, k)
        diff = (F.avg_pool2d((pred - target) * mask, k) / valid.clamp(min=1e-6)).abs()
        used = (valid >= 0.5).float()
        return (diff * used).sum() / (used.sum() * pred.shape[1]).clamp(min=1)

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
        if self.color_weight:
            loss = loss + self.color_weight * self._color_term(sr, gt, hr_mask)
        if aligned is not None:
            if aligned_gt is None:
                raise ValueError('MaskedDualL1Loss got the aligned output X\' without its target Y\'')
            loss = loss + self.aligned_weight * self._term(aligned, aligned_gt, mask, self.crop_border_lr)
        return self.loss_weight * loss
