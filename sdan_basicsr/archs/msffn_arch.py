"""MSFFN: Multi-Stage Feature Fusion Network for video super-resolution (×4).

Song et al., "Multi-Stage Feature Fusion Network for Video Super-Resolution", IEEE TIP 2021.
"""
import math

import torch
import torch.nn.functional as F
from basicsr.archs.arch_util import DCNv2Pack, ResidualBlockNoBN, make_layer
from basicsr.archs.edvr_arch import PCDAlignment
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


class MDRB(nn.Module):
    """Multi-scale Dilated Residual Block (Fig. 4): parallel 3×3 and 5×5 convs, then 3×3 convs with
    dilation 2 and 3, plus the input (eq. (5) predicts Θ from its output).

    Args:
        num_feat (int): Channel number C. Default: 80.
    """

    def __init__(self, num_feat: int = 80):
        super().__init__()
        self.conv3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat, num_feat, 5, 1, 2)
        self.conv_d2 = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 2, dilation=2)
        self.conv_d3 = nn.Conv2d(num_feat, num_feat, 3, 1, 3, dilation=3)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lrelu(torch.cat([self.conv3(x), self.conv5(x)], dim=1))
        return self.conv_d3(self.lrelu(self.conv_d2(out))) + x


class MDDAlign(nn.Module):
    """Multi-scale Dilated Deformable alignment (Sec. III-B.2, eqs. (5)–(6)).

    A 3×3 bottleneck on [F_{t+i}, F_t] feeds the MDRB, whose output gives the offsets and masks Θ of a
    modulated deformable conv (``DCNv2Pack``, zero-initialised offset conv) applied to F_{t+i}.

    Args:
        num_feat (int): Channel number C. Default: 80.
        deformable_groups (int): Deformable groups. Default: 8.
    """

    def __init__(self, num_feat: int = 80, deformable_groups: int = 8):
        super().__init__()
        self.bottleneck = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        self.mdrb = MDRB(num_feat)
        self.dcn = DCNv2Pack(num_feat, num_feat, 3, padding=1, deformable_groups=deformable_groups)

    def forward(self, feat_sup: torch.Tensor, feat_ref: torch.Tensor) -> torch.Tensor:
        theta_feat = self.mdrb(self.lrelu(self.bottleneck(torch.cat([feat_sup, feat_ref], dim=1))))
        return self.dcn(feat_sup, theta_feat)


class PCDAlign(nn.Module):
    """EDVR's Pyramid, Cascading and Deformable alignment in the MDD module's place (the "PCD" column of Table V).

    Each feature gets EDVR's three-level pyramid (two stride-2 levels of two 3×3 convs with LeakyReLU(0.1), shared
    by the supporting and the reference frame); BasicSR's ``PCDAlignment`` aligns the supporting pyramid to the
    reference one coarse to fine and refines the result with its cascading deformable conv. Needs h and w divisible
    by 4.

    Args:
        num_feat (int): Channel number C. Default: 80.
        deformable_groups (int): Deformable groups of every modulated deformable conv. Default: 8.
    """

    def __init__(self, num_feat: int = 80, deformable_groups: int = 8):
        super().__init__()
        self.pyramid = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(num_feat, num_feat, 3, 2, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True),
                nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True))
            for _ in range(2))
        self.pcd_align = PCDAlignment(num_feat, deformable_groups)

    def _levels(self, feat: torch.Tensor) -> list:
        levels = [feat]
        for down in self.pyramid:
            levels.append(down(levels[-1]))
        return levels

    def forward(self, feat_sup: torch.Tensor, feat_ref: torch.Tensor) -> torch.Tensor:
        return self.pcd_align(self._levels(feat_sup), self._levels(feat_ref))


class SFTLayer(nn.Module):
    """Spatial feature transform, eq. (9) in SFTGAN's form: SFT(F | ψ) = F ⊙ (γ + 1) + β.

    γ and β each come from two 1×1 convs with LeakyReLU(0.1) between, on the condition ψ.

    Args:
        num_feat (int): Channel number C of the modulated features. Default: 80.
        num_cond (int): Channel number of the condition ψ. Default: 480.
    """

    def __init__(self, num_feat: int = 80, num_cond: int = 480):
        super().__init__()
        self.scale = nn.Sequential(
            nn.Conv2d(num_cond, num_feat, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(num_feat, num_feat, 1))
        self.shift = nn.Sequential(
            nn.Conv2d(num_cond, num_feat, 1), nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(num_feat, num_feat, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x * (self.scale(cond) + 1) + self.shift(cond)


class MRFB(nn.Module):
    """Modulative Residual Fusion Block: SFT → conv → ReLU → SFT → conv, plus the input.

    Args:
        num_feat (int): Channel number C. Default: 80.
        num_cond (int): Channel number of the condition ψ. Default: 480.
    """

    def __init__(self, num_feat: int = 80, num_cond: int = 480):
        super().__init__()
        self.sft1 = SFTLayer(num_feat, num_cond)
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.sft2 = SFTLayer(num_feat, num_cond)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(self.sft1(x, cond)))
        return self.conv2(self.sft2(out, cond)) + x


@ARCH_REGISTRY.register()
class MSFFN(nn.Module):
    """Multi-Stage Feature Fusion Network (MSFFN), IEEE TIP 2021.

    TAN (Sec. III-B): a shared feature extractor (conv + residual blocks, ReLU), MDD alignment of each
    supporting frame to the reference and the attention mask of eqs. (7)–(8),
    M = 1 / (1 + exp(‖F_t − F^a‖₁)) = sigmoid(−d) over channels. ψ (eq. (3)) concatenates the
    (T−1) masked aligned features. MFFN (Sec. III-C): an SRResNet-style body of MRFBs on the
    reference features, each modulated by ψ (eq. (9)); a feedback skip adds the last MRFB's output to
    the first one's input for ``num_feedback`` extra passes (no extra parameters); the upsampler
    log2(upscale) × (conv → PixelShuffle(2) → LeakyReLU) → conv to RGB, plus an interpolated skip of the
    centre frame.

    No official code exists; these readings are options (defaults in brackets): the MDRB concatenates
    its 3×3 and 5×5 branches before the dilation-2 conv and adds its input after the dilation-3 conv;
    SFT uses SFTGAN's two 1×1 convs per γ/β and F ⊙ (γ + 1) + β; the body has no conv after it (as
    MSRResNet); ``num_feedback`` [1]; ``attention`` [True]; ``skip_mode`` ['bilinear']; ``mask_distance``
    ['mean']: eq. (8)'s L1 distance over the C channels as a mean. Summed over them as printed (``'sum'``), the
    distance of freshly initialised 32-channel features is ~5.7 on real footage, so M ≈ 0.007 and the neighbours
    (and the gradients that would teach the alignment) are all but cut off: after 1000 iterations the network's
    output did not change when its neighbours were replaced by the centre frame (``bench/video_bench.py``). The mean
    (~0.18, M ≈ 0.45 at the start) lets the mask start open and learn to close where alignment fails.

    The paper's ablations are options too: ``alignment='pcd'`` puts EDVR's PCD alignment (:class:`PCDAlign`) in the
    MDD module's place (Table V); ``fusion='df'`` is the one-stage direct fusion of Table VI: the SFT layers are
    removed (each MRFB becomes a plain residual block, conv → ReLU → conv + skip) and one 3×3 conv fuses the
    concatenated reference and aligned supporting features (T·C → C) into the body's input. For "Ours-S"
    (``num_feat=64``) PCD makes 5.23 M parameters of MDD's 4.18 M (the paper: 5.73 and 5.69 M), direct fusion 2.59 M.

    Parameters: 6.49 M at the paper's sizes (``MSFFN()``, built, not run; 4.18 M for "Ours-S",
    ``num_feat=64``), against the paper's 8.5 M (Table I). The paper gives no layer sizes for the
    SFT condition convs, the MDRB or the upsampler; its Table V puts the MDD module alone at about
    1.48 M for Ours-S, three times this reading's 0.49 M, so its alignment (and likely its SFT
    branches) are wider than the minimal layers used here.

    Input (N, T, 3, h, w) with odd T = ``num_frame``; output (N, 3, s·h, s·w), s = ``upscale``; any h, w.

    Args:
        num_in_ch (int): Channel number of input frames. Default: 3.
        num_out_ch (int): Channel number of the output. Default: 3.
        num_feat (int): Channel number C (80 = "Ours", 64 = "Ours-S"). Default: 80.
        num_frame (int): Number T = 2N+1 of input frames (odd); the centre one is the reference. Default: 7.
        num_extract_block (int): Residual blocks of the shared feature extractor. Default: 5.
        num_block (int): MRFBs in the MFFN body. Default: 16.
        upscale (int): Upscaling factor, a power of two ≥ 2. Default: 4.
        deformable_groups (int): Deformable groups of the MDD's modulated deformable conv. Default: 8.
        num_feedback (int): Extra passes through the body with the feedback skip (0: none). Default: 1.
        attention (bool): Apply the attention mask of eq. (8) to the aligned features. Default: True.
        skip_mode (str): Interpolation of the centre-frame skip, 'bilinear' or 'bicubic'. Default: 'bilinear'.
        alignment (str): 'mdd' (the paper's) or 'pcd' (EDVR's, needs h, w divisible by 4). Default: 'mdd'.
        fusion (str): 'sft' (multi-stage, the paper's) or 'df' (one-stage direct fusion). Default: 'sft'.
        mask_distance (str): The L1 distance of eq. (8) over the channels, 'mean' or 'sum' (as printed).
            Default: 'mean'.
    """

    def __init__(self,
                 num_in_ch: int = 3,
                 num_out_ch: int = 3,
                 num_feat: int = 80,
                 num_frame: int = 7,
                 num_extract_block: int = 5,
                 num_block: int = 16,
                 upscale: int = 4,
                 deformable_groups: int = 8,
                 num_feedback: int = 1,
                 attention: bool = True,
                 skip_mode: str = 'bilinear',
                 alignment: str = 'mdd',
                 fusion: str = 'sft',
                 mask_distance: str = 'mean'):
        super().__init__()
        if num_frame < 3 or num_frame % 2 == 0:
            raise ValueError(f'num_frame must be odd (2N+1) and at least 3, got {num_frame}')
        if upscale < 2 or upscale & (upscale - 1):
            raise ValueError(f'upscale must be a power of two >= 2, got {upscale}')
        if skip_mode not in ('bilinear', 'bicubic'):
            raise ValueError(f"skip_mode must be 'bilinear' or 'bicubic', got {skip_mode!r}")
        if alignment not in ('mdd', 'pcd'):
            raise ValueError(f"alignment must be 'mdd' or 'pcd', got {alignment!r}")
        if fusion not in ('sft', 'df'):
            raise ValueError(f"fusion must be 'sft' or 'df', got {fusion!r}")
        if mask_distance not in ('mean', 'sum'):
            raise ValueError(f"mask_distance must be 'mean' or 'sum', got {mask_distance!r}")
        self.num_in_ch = num_in_ch
        self.num_frame = num_frame
        self.upscale = upscale
        self.num_feedback = num_feedback
        self.attention = attention
        self.skip_mode = skip_mode
        self.alignment = alignment
        self.fusion = fusion
        self.mask_distance = mask_distance
        num_cond = (num_frame - 1) * num_feat

        # TAN: shared feature extraction and MDD alignment
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.feature_extraction = make_layer(ResidualBlockNoBN, num_extract_block, num_feat=num_feat)
        self.align = (MDDAlign if alignment == 'mdd' else PCDAlign)(num_feat, deformable_groups)
        # MFFN: multi-stage fusion through the SFT layers of the MRFBs, or one-stage direct fusion before plain blocks
        if fusion == 'sft':
            self.body = nn.ModuleList(MRFB(num_feat, num_cond) for _ in range(num_block))
        else:
            self.conv_fusion = nn.Conv2d(num_frame * num_feat, num_feat, 3, 1, 1)
            self.body = nn.ModuleList(ResidualBlockNoBN(num_feat, pytorch_init=True) for _ in range(num_block))
        upsample = []
        for _ in range(int(math.log2(upscale))):
            upsample += [
                nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1),
                nn.PixelShuffle(2),
                nn.LeakyReLU(negative_slope=0.1, inplace=True)
            ]
        self.upsample = nn.Sequential(*upsample)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def _mffn_body(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.body:
            x = block(x, cond) if self.fusion == 'sft' else block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, 3, h, w) → (N, 3, upscale·h, upscale·w)."""
        if x.dim() != 5 or x.shape[1] != self.num_frame or x.shape[2] != self.num_in_ch:
            raise ValueError(f'MSFFN expects input of shape (N, {self.num_frame}, {self.num_in_ch}, h, w) '
                             f'(num_frame={self.num_frame}, odd), got {tuple(x.shape)}')
        n, t, c, h, w = x.shape
        if self.alignment == 'pcd' and (h % 4 or w % 4):
            raise ValueError(f"MSFFN with alignment='pcd' needs h and w divisible by 4, got {tuple(x.shape)}")
        feat = self.feature_extraction(self.relu(self.conv_first(x.view(-1, c, h, w)))).view(n, t, -1, h, w)
        feat_ref = feat[:, t // 2]

        aligned = []
        for i in range(t):
            if i == t // 2:
                continue
            feat_a = self.align(feat[:, i], feat_ref)  # eq. (6)
            if self.attention:  # eqs. (7)-(8)
                dist = (feat_ref - feat_a).abs()
                dist = dist.mean(dim=1, keepdim=True) if self.mask_distance == 'mean' else dist.sum(dim=1, keepdim=True)
                feat_a = feat_a * torch.sigmoid(-dist)
            aligned.append(feat_a)
        cond = torch.cat(aligned, dim=1)  # ψ, eq. (3)
        if self.fusion == 'df':  # one-stage: the fused features replace the reference's
            feat_ref = self.conv_fusion(torch.cat([feat_ref, cond], dim=1))

        out = self._mffn_body(feat_ref, cond)
        for _ in range(self.num_feedback):
            out = self._mffn_body(feat_ref + out, cond)  # feedback skip: last MRFB's output to the first's input

        out = self.conv_last(self.upsample(out))
        return out + F.interpolate(x[:, t // 2], scale_factor=self.upscale, mode=self.skip_mode, align_corners=False)
