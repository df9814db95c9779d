"""DKSAN: Deformable Kernel Spatial Attention Network for video extreme (×16) super-resolution.

Xu et al., "Deformable Kernel Convolutional Network for Video Extreme Super-Resolution", ECCVW 2020.
"""
import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from basicsr.archs.arch_util import DCNv2Pack, ResidualBlockNoBN, make_layer
from basicsr.archs.rcan_arch import RCAB
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from sdan_basicsr.ops import DeformKernelConv2d


def _dk_stack(num_feat: int, num_layer: int, act: nn.Module, **dk_opt) -> nn.Sequential:
    """``num_layer`` × (depthwise deformable-kernel conv → ``act``)."""
    layers = []
    for _ in range(num_layer):
        layers += [DeformKernelConv2d(num_feat, num_feat, **dk_opt), act]
    return nn.Sequential(*layers)


class DKCAlign(nn.Module):
    """Deformable Kernel Convolution Alignment (DKC_Align, Fig. 2, eqs. (9)–(11)).

    f([F_n, F_r]) is a 3×3 conv with LeakyReLU; a stack of deformable-kernel layers 𝔻 turns it into
    the offset feature from which one (zero-initialised) conv of ``DCNv2Pack`` predicts the offsets
    Δp and sigmoid masks Δm of the modulated deformable conv applied to F_n (eq. (9)).

    Args:
        num_feat (int): Channel number C. Default: 128.
        num_dk (int): Deformable-kernel layers in 𝔻. Default: 6.
        deformable_groups (int): Deformable groups of the modulated deformable conv. Default: 8.
        dk_opt (dict): Keyword arguments of every ``DeformKernelConv2d``.
    """

    def __init__(self, num_feat: int = 128, num_dk: int = 6, deformable_groups: int = 8, **dk_opt):
        super().__init__()
        self.conv_fuse = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.dk_layers = _dk_stack(num_feat, num_dk, nn.LeakyReLU(negative_slope=0.1, inplace=True), **dk_opt)
        self.dcn = DCNv2Pack(num_feat, num_feat, 3, padding=1, deformable_groups=deformable_groups)

    def forward(self, feat_nbr: torch.Tensor, feat_ref: torch.Tensor) -> torch.Tensor:
        offset_feat = self.dk_layers(self.lrelu(self.conv_fuse(torch.cat([feat_nbr, feat_ref], dim=1))))
        return self.dcn(feat_nbr, offset_feat)


class DKSA(nn.Module):
    """Deformable Kernel Spatial Attention (Fig. 3 (b); the light version of Fig. 3 (c) has fewer DK layers).

    map = sigmoid(conv1×1(PixelShuffle(conv(DK(conv3×3_stride2(x)))))), output x ⊙ map. The stride-2
    conv needs even feature sizes.

    Args:
        num_feat (int): Channel number C. Default: 128.
        num_dk (int): Deformable-kernel layers (with ReLU). Default: 5.
        dk_opt (dict): Keyword arguments of every ``DeformKernelConv2d``.
    """

    def __init__(self, num_feat: int = 128, num_dk: int = 5, **dk_opt):
        super().__init__()
        self.conv_down = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.dk_layers = _dk_stack(num_feat, num_dk, nn.ReLU(inplace=True), **dk_opt)
        self.conv_up = nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_map = nn.Conv2d(num_feat, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.pixel_shuffle(self.conv_up(self.dk_layers(self.conv_down(x))))
        return x * torch.sigmoid(self.conv_map(attn))


class DKSANLevel(nn.Module):
    """One ×2 level of the cascade: [E_l] → reconstruction (eq. (12)) → upscale U_l (Fig. 4).

    F_recon = DKSA(RCABs(F)) + F; U_l = conv(C→4C) → PixelShuffle(2) → LeakyReLU → conv(C→3). Levels 2…L
    start from the previous RGB output with E_l = conv(3→C) → LeakyReLU → one residual block. Without channel
    attention the RCABs are plain residual blocks (conv → ReLU → conv + skip); without DKSA, F_recon = RCABs(F) + F.

    Args:
        num_feat (int): Channel number C.
        num_rcab (int): RCABs of the reconstruction module.
        num_dk (int): Deformable-kernel layers of its DKSA.
        num_in_ch (int | None): Channels of the RGB input of E_l; None for level 1 (no E_l).
        num_out_ch (int): Channels of the output image.
        squeeze_factor (int): Channel-attention reduction of the RCABs.
        with_ca (bool): RCABs with their channel attention (else plain residual blocks). Default: True.
        with_dksa (bool): Apply DKSA to the reconstructed features. Default: True.
        dk_opt (dict): Keyword arguments of every ``DeformKernelConv2d``.
    """

    def __init__(self, num_feat, num_rcab, num_dk, num_in_ch, num_out_ch, squeeze_factor, with_ca=True,
                 with_dksa=True, **dk_opt):
        super().__init__()
        if num_in_ch is not None:
            self.extract = nn.Sequential(
                nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True),
                ResidualBlockNoBN(num_feat=num_feat))
        if with_ca:
            self.rcabs = make_layer(RCAB, num_rcab, num_feat=num_feat, squeeze_factor=squeeze_factor)
        else:
            self.rcabs = make_layer(ResidualBlockNoBN, num_rcab, num_feat=num_feat, pytorch_init=True)
        self.dksa = DKSA(num_feat, num_dk, **dk_opt) if with_dksa else nn.Identity()
        self.upscale = nn.Sequential(
            nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2),
            nn.LeakyReLU(negative_slope=0.1, inplace=True), nn.Conv2d(num_feat, num_out_ch, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, 'extract'):
            x = self.extract(x)
        return self.upscale(self.dksa(self.rcabs(x)) + x)


@ARCH_REGISTRY.register()
class DKSAN(nn.Module):
    """Deformable Kernel Spatial Attention Network (DKSAN), ECCVW 2020 (AIM 2020 video extreme SR, ×16).

    Eqs. (2)–(8): shared feature extraction (conv + residual blocks, no BN) of all 2N+1 frames;
    DKC_Align of every frame to the centre one; a 1×1 fusion conv over the T·C concatenated aligned
    features; then a cascade of L = log2(upscale) ×2 levels, each adding a bicubic ×2 of its input
    image (the centre LR frame for level 1, the previous level's output after that).

    No official code exists; these readings of the paper are options (defaults in brackets):
    every frame, the reference included, goes through the shared DKC_Align (as EDVR aligns all
    frames), so the fusion conv sees T·C channels; a reconstruction module is a plain stack of RCABs
    with the long skip of eq. (12) (no extra group conv); DKSA uses a stride-2 3×3 conv and a 3×3
    C→4C conv; the light DKSA of level 1 has ``num_dk_light`` [2] DK layers; the deformable-kernel
    layers predict one offset set per pixel shared by all channels (``dk_groups`` [1],
    ``dk_variant`` ['local'], ``kernel_space`` S [4], K = 3).

    Table 3's ablations are options: ``with_ca=False`` turns the RCABs into plain residual blocks (RCAB without its
    channel attention, as initialised by PyTorch), ``with_dkc_align=False`` fuses the unaligned features of all
    frames, ``with_dksa=False`` leaves DKSA out of every level (F_recon = RCABs(F) + F); all three off is the paper's
    "backbone" (resblocks only). At the paper's sizes the four rows of Table 3 have 27.00, 27.17, 28.00 and 31.34 M
    parameters here, against its 26.1, 26.3, 27.0 and 29.5 M.

    Parameters: 31.34 M at the paper's sizes (``DKSAN()``, built, not run), against the paper's
    29.5 M (Tables 1, 3). Table 3 puts the RCAB/resblock backbone with channel attention at
    26.3 M, DKC_Align at +0.7 M and DKSA at +2.5 M; here they are 27.23 M, 0.83 M and 3.34 M. The
    backbone gap (0.90 M) is exactly the one residual block of E_2…E_4 (3 × 0.30 M), which the
    paper's count probably lacks; the DKSA gap is the unspecified kernel of its C→4C conv
    (3×3 here, 0.59 M per level). With one offset group per channel (``dk_groups=None``) every
    deformable-kernel layer's offset predictor alone has 2.65 M parameters, far beyond the paper.

    Input (N, T, 3, h, w) with odd T = ``num_frame``; output (N, 3, s·h, s·w), s = ``upscale``. The
    stride-2 conv of DKSA needs even sizes, so odd h or w are replicate-padded by one pixel and the
    output cropped back.

    Args:
        num_in_ch (int): Channel number of input frames. Default: 3.
        num_out_ch (int): Channel number of the output. Default: 3.
        num_feat (int): Channel number C of all features. Default: 128.
        num_frame (int): Number T = 2N+1 of input frames (odd); the centre one is the reference. Default: 7.
        num_extract_block (int): Residual blocks of the feature extraction. Default: 5.
        num_rcab (int | Sequence[int]): RCABs per level, from level 1 to L (one int: the same for
            all levels). Default: (30, 20, 15, 10).
        upscale (int): Upscaling factor, a power of two ≥ 2; L = log2(upscale) levels. Default: 16.
        squeeze_factor (int): Channel-attention reduction of RCAB. Default: 16.
        num_dk_align (int): Deformable-kernel layers in DKC_Align. Default: 6.
        num_dk_attn (int): Deformable-kernel layers in DKSA of levels 2…L. Default: 5.
        num_dk_light (int): Deformable-kernel layers in the light DKSA of level 1. Default: 2.
        deformable_groups (int): Deformable groups of the aligning modulated deformable conv. Default: 8.
        kernel_space (int): Kernel space S of the deformable-kernel layers. Default: 4.
        dk_groups (int | None): Offset groups of the deformable-kernel layers (None: one per channel). Default: 1.
        dk_variant (str): 'local' or 'global' kernel offsets. Default: 'local'.
        with_ca (bool): Channel attention in the reconstruction blocks (RCABs; else plain residual blocks).
            Default: True.
        with_dkc_align (bool): Align every frame to the centre one with DKC_Align (else fuse them unaligned).
            Default: True.
        with_dksa (bool): DKSA in every level's reconstruction module. Default: True.
    """

    def __init__(self,
                 num_in_ch: int = 3,
                 num_out_ch: int = 3,
                 num_feat: int = 128,
                 num_frame: int = 7,
                 num_extract_block: int = 5,
                 num_rcab: Union[int, Sequence[int]] = (30, 20, 15, 10),
                 upscale: int = 16,
                 squeeze_factor: int = 16,
                 num_dk_align: int = 6,
                 num_dk_attn: int = 5,
                 num_dk_light: int = 2,
                 deformable_groups: int = 8,
                 kernel_space: int = 4,
                 dk_groups: Union[int, None] = 1,
                 dk_variant: str = 'local',
                 with_ca: bool = True,
                 with_dkc_align: bool = True,
                 with_dksa: bool = True):
        super().__init__()
        if num_frame < 1 or num_frame % 2 == 0:
            raise ValueError(f'num_frame must be odd (2N+1), got {num_frame}')
        if upscale < 2 or upscale & (upscale - 1):
            raise ValueError(f'upscale must be a power of two >= 2, got {upscale}')
        num_level = int(math.log2(upscale))
        num_rcab = [num_rcab] * num_level if isinstance(num_rcab, int) else list(num_rcab)
        if len(num_rcab) != num_level:
            raise ValueError(f'num_rcab needs one entry per level ({num_level} for upscale {upscale}), got {num_rcab}')
        self.num_in_ch = num_in_ch
        self.num_frame = num_frame
        self.upscale = upscale
        dk_opt = dict(kernel_size=3, kernel_space=kernel_space, groups=dk_groups, variant=dk_variant)

        # feature extraction, eq. (2)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.feature_extraction = make_layer(ResidualBlockNoBN, num_extract_block, num_feat=num_feat)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        # alignment and fusion, eqs. (3)-(4)
        if with_dkc_align:
            self.align = DKCAlign(num_feat, num_dk_align, deformable_groups, **dk_opt)
        self.fusion = nn.Conv2d(num_frame * num_feat, num_feat, 1)
        # cascade, eqs. (5)-(8)
        self.levels = nn.ModuleList(
            DKSANLevel(num_feat, n, num_dk_light if i == 0 else num_dk_attn, None if i == 0 else num_out_ch,
                       num_out_ch, squeeze_factor, with_ca, with_dksa, **dk_opt) for i, n in enumerate(num_rcab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, 3, h, w) → (N, 3, upscale·h, upscale·w)."""
        if x.dim() != 5 or x.shape[1] != self.num_frame or x.shape[2] != self.num_in_ch:
            raise ValueError(f'DKSAN expects input of shape (N, {self.num_frame}, {self.num_in_ch}, h, w) '
                             f'(num_frame={self.num_frame}, odd), got {tuple(x.shape)}')
        n, t, c, h, w = x.shape
        if h < 2 or w < 2:
            raise ValueError(f'DKSAN needs frames of at least 2×2 pixels, got input of shape {tuple(x.shape)}')
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            x = F.pad(x.view(n, t * c, h, w), (0, pad_w, 0, pad_h), mode='replicate').view(n, t, c, h + pad_h,
                                                                                           w + pad_w)
        hp, wp = x.shape[-2:]

        feat = self.feature_extraction(self.lrelu(self.conv_first(x.view(-1, c, hp, wp)))).view(n, t, -1, hp, wp)
        feat_ref = feat[:, t // 2]
        if hasattr(self, 'align'):
            feat = torch.stack([self.align(feat[:, i], feat_ref) for i in range(t)], dim=1)
        out = self.fusion(feat.flatten(1, 2))

        img = x[:, t // 2]
        for i, level in enumerate(self.levels):
            img = level(out if i == 0 else img) + F.interpolate(img, scale_factor=2, mode='bicubic',
                                                               align_corners=False)
        return img[..., :h * self.upscale, :w * self.upscale]
