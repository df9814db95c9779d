"""SDAN: Squared Deformable Alignment Network for learning misaligned optical zoom (Mei et al., ICME 2021).

The network, its two named building blocks (:class:`SquaredDeformableAlignment`,
:class:`CrossPackingAttention`) and the validity mask M' of eq. (6).
"""
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from basicsr.archs.arch_util import ResidualBlockNoBN, make_layer
from basicsr.archs.rcan_arch import ChannelAttention
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.autograd.function import once_differentiable
from torchvision.ops import DeformConv2d

from sdan_basicsr.ops import SquaredDeformConv2d
from sdan_basicsr.ops.mixed_precision import LOW_PRECISION, run_in_float32

#: Input channels of each ``in_format``: the RGGB mosaic, its 4-channel packing, or the camera RGB.
IN_FORMAT_CHANNELS = {'bayer': 1, 'packed': 4, 'rgb': 3}
#: Side of the pixel (un)shuffle of Cross Packing Attention; the network pads inputs to a multiple of it.
CPA_PACKING = 8
#: The noise map enters the head as NOISE_GAIN · σ: σ of a normalised mosaic spans ~0.002–0.1 over the sensors of
#: Brooks et al.'s range, ×10 brings it to the order of the input's own values.
NOISE_GAIN = 10.


def noise_sigma(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """σ per site of a normalised RGGB mosaic from its noise profile (Brooks et al. 2019's noise-level map).

    Args:
        x (Tensor): (N, 1, h, w) mosaic in RGGB phase, h and w even.
        noise (Tensor): (N, 2, 2, 2): [S, O] over the 2×2 cell of the mosaic, variance = S · x + O (the DNG
            NoiseProfile's model); :func:`~sdan_basicsr.data.raw_utils.site_noise_profile` makes it.

    Returns:
        Tensor: (N, 1, h, w) ``sqrt(S · max(x, 0) + O)``, from the noisy values as the sensor gives them.
    """
    h, w = x.shape[-2:]
    shot, read = (noise[:, i:i + 1].to(x.dtype).repeat(1, 1, h // 2, w // 2) for i in (0, 1))
    return (shot * x.clamp(min=0) + read).clamp(min=0).sqrt()


def pad_to_multiple(img: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple of ``multiple`` (reflection keeps a Bayer mosaic's phase).

    Images smaller than the padding are replicate-padded.
    """
    h, w = img.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return img
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(img, (0, pad_w, 0, pad_h), mode=mode)


def upsample_image(img: torch.Tensor, scale: int) -> torch.Tensor:
    """``img`` bilinearly upsampled by ``scale`` (``image_skip``'s X' ↑ s), in NCHW: PyTorch's CPU kernel takes
    over three times as long on a channels-last 3-channel image (a 1-MP X' ↑ 4: 255 against 75 ms)."""
    return F.interpolate(img.contiguous(), scale_factor=scale, mode='bilinear', align_corners=False)


class SDANOutput(NamedTuple):
    """What :class:`SDAN` returns.

    Attributes:
        sr (Tensor): Zoomed image X~ (N, 3, s·h, s·w).
        aligned (Tensor): Aligned low-resolution image X' (N, 3, h, w).
        mask (Tensor): Validity mask M' (N, 1, h, w) of eq. (6), no gradient.
        offset (Tensor): Learned offsets Θ (N, 2, h, w) [dy, dx]; (N, 18, h, w) for per-tap offsets.
    """
    sr: torch.Tensor
    aligned: torch.Tensor
    mask: torch.Tensor
    offset: torch.Tensor


def validity_mask(offset: torch.Tensor) -> torch.Tensor:
    """M' of eq. (6): 1 where the moved window centre (row + dy, col + dx) lies in [0, h) × [0, w).

    Args:
        offset (Tensor): (N, 2·k², h, w) in [dy, dx] × k² layout; the centre tap's pair is used
            (for squared offsets, k = 1 and it is Θ itself).

    Returns:
        Tensor: (N, 1, h, w), detached, dtype of ``offset``.
    """
    n, c, h, w = offset.shape
    centre = (c // 2) // 2 * 2
    offset = offset.detach()
    rows = offset[:, centre] + torch.arange(h, dtype=offset.dtype, device=offset.device).view(h, 1)
    cols = offset[:, centre + 1] + torch.arange(w, dtype=offset.dtype, device=offset.device)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return inside.unsqueeze(1).to(offset.dtype)


class BayerHead(nn.Conv2d):
    """The head conv3×3 of a 1-channel RGGB mosaic with one kernel per CFA site (R, Gr, Gb, B).

    The mosaic is split into its four CFA planes (each site's value in its own channel, zeros elsewhere) and
    convolved by a 4-channel conv3×3: at a site of colour φ, tap t reads only the plane of site φ + t, so the
    4 × 9 weights of each output channel are exactly one 3×3 kernel per site. A plain conv3×3 on the mosaic
    (the released head) applies one kernel at every site, so it cannot tell an R site from a B site and the
    network can only guess colours from the scenes' palette; this head reads them off the mosaic.

    The mosaic must start on an R site (``SRRAWPairedDataset`` and ``pad_to_multiple`` keep that phase); the
    buffer ``pattern`` (the RGGB layout of the planes) marks such weights in a checkpoint.
    """

    def __init__(self, out_channels: int):
        super().__init__(4, out_channels, 3, 1, 1)
        self.register_buffer('pattern', torch.arange(4).view(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f'a Bayer mosaic must have even height and width, got {tuple(x.shape)}')
        packed = F.pixel_unshuffle(x, 2)  # (N, 4, h/2, w/2): the sites of pattern, in its order
        # planes[:, c, k] = packed[:, k] where site k of the 2×2 cell has colour plane c, else 0
        mask = F.one_hot(self.pattern.flatten(), 4).t().to(x.dtype)
        planes = packed.unsqueeze(1) * mask.view(1, 4, 4, 1, 1)
        return super().forward(F.pixel_shuffle(planes.reshape(n, 16, h // 2, w // 2), 2))


#: Rows of the C'×C' attention matrix that :class:`_PackedChannelAttention` and :func:`gram` handle at once.
_ATTENTION_ROWS = 512
#: Length L of X from which :func:`gram` uses E's symmetry (measured at C' = 4096: ``bench/RESULTS.md``).
_GRAM_BLOCKED_L = 256


def gram(x: torch.Tensor, alpha: float = 1., out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """alpha · X Xᵀ of one packed map X (C', L), from the blocks of rows on and right of the diagonal, mirrored.

    E = X Xᵀ is symmetric: for C' in b blocks of rows this takes (b + 1) / 2b of a full product's arithmetic
    (56 % for C' = 4096, the default SDAN's), the rest is a transposed copy. That copy costs more than the products
    it saves when L is short (training crops: L = 64 for a 64² mosaic), and below ``_GRAM_BLOCKED_L`` the whole
    product is formed at once.

    Args:
        x (Tensor): (C', L).
        alpha (float): Scale of the product (−1 gives CPA's −E). Default: 1.
        out (Tensor | None): (C', C') to write into. Default: None (a new tensor).
    """
    c = x.shape[0]
    out = x.new_empty(c, c) if out is None else out
    if x.shape[1] < _GRAM_BLOCKED_L:
        return torch.addmm(out, x, x.t(), beta=0, alpha=alpha, out=out)
    for r in range(0, c, _ATTENTION_ROWS):
        rows, right = slice(r, min(r + _ATTENTION_ROWS, c)), slice(r, c)
        torch.addmm(out[rows, right], x[rows], x[right].t(), beta=0, alpha=alpha, out=out[rows, right])
        out[rows.stop:, rows] = out[rows, rows.stop:].t()
    return out


class _PackedChannelAttention(torch.autograd.Function):
    """A X with A = softmax(−X Xᵀ) for X of shape (N, C', L), the softmax and A X in blocks of rows.

    −E comes from :func:`gram` (half the products of X·(−Xᵀ), E being symmetric) and the softmax (which shifts
    each row by its maximum, so no exp overflows) writes A directly. The backward uses the
    saved A: with G the output gradient, dA = G Xᵀ, S = A ⊙ (dA − rowsum(A ⊙ dA)) (the softmax's
    backward) and dX = Aᵀ G − S X − Sᵀ X.

    Mixed precision (X in float16/bfloat16): E and the softmax are computed in float32 from X upcast (E sums L
    products and the softmax amplifies its absolute error, which a low-precision E of |E| ~ 10³ would make
    whole units); A is then stored in X's dtype, and A X and the whole backward run in it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n, c, _ = x.shape
        keep = ctx.needs_input_grad[0]
        block_rows = min(c, _ATTENTION_ROWS)
        attention = x.new_empty(n, c, c) if keep else x.new_empty(block_rows, c)
        x_energy = x.float() if x.dtype in LOW_PRECISION else x
        neg_energy = x_energy.new_empty(c, c)
        weights = neg_energy.new_empty(block_rows, c) if x_energy is not x else None  # float32 A, before rounding
        out = torch.empty_like(x)
        for i in range(n):
            gram(x_energy[i], alpha=-1., out=neg_energy)
            for r in range(0, c, _ATTENTION_ROWS):
                rows = slice(r, min(r + _ATTENTION_ROWS, c))
                size = rows.stop - r
                block = attention[i, rows] if keep else attention[:size]
                energy = neg_energy[rows]
                if weights is None:
                    torch.softmax(energy, -1, out=block)
                else:
                    block.copy_(torch.softmax(energy, -1, out=weights[:size]))
                torch.mm(block, x[i], out=out[i, rows])
        if keep:
            ctx.save_for_backward(x, attention)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        x, attention = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x)
        c = x.shape[1]
        for i in range(x.shape[0]):
            torch.mm(attention[i].t(), grad_out[i], out=grad_x[i])
            for r in range(0, c, _ATTENTION_ROWS):
                rows = slice(r, min(r + _ATTENTION_ROWS, c))
                block = attention[i, rows]
                s = torch.mm(grad_out[i, rows], x[i].t()).mul_(block)
                s.addcmul_(block, s.sum(dim=-1, keepdim=True), value=-1)
                grad_x[i, rows].addmm_(s, x[i], alpha=-1)
                grad_x[i].addmm_(s.t(), x[i, rows], alpha=-1)
        return grad_x


class CrossPackingAttention(nn.Module):
    """Cross Packing Attention (CPA, Sec. 3.2): channel attention on space-to-depth packed features.

    pack = pixel_unshuffle(x, K) has C·K² channels at (h/K, w/K); with X the packed map flattened to
    (C·K², L): E = X Xᵀ, E' = rowmax(E) − E, A = softmax(E'), out = γ·(A X) + X (DANet's channel
    attention: no projections, no reduction), unpacked with pixel_shuffle. γ is a learnable scalar
    initialised to 0, so the block starts as the identity. The attention is equivariant to any
    permutation of the packed channels, so the toolbox's pixel (un)shuffle order is immaterial.

    Args:
        packing (int): Packing kernel K; h and w must be multiples of it. Default: 8.
    """

    def __init__(self, packing: int = CPA_PACKING):
        super().__init__()
        self.packing = packing
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, packed: torch.Tensor) -> torch.Tensor:
        """A X for a packed map (N, C', h', w') → (N, C', h', w').

        softmax(rowmax(E) − E) = softmax(−E) row by row (a softmax ignores a per-row shift), computed
        in blocks of rows, one image at a time, by :class:`_PackedChannelAttention`: with gradients the
        C'×C' matrix A is the only one kept (for the backward), without them one block of its rows.
        """
        return _PackedChannelAttention.apply(packed.flatten(2)).view_as(packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.packing or w % self.packing:
            raise ValueError(f'CrossPackingAttention needs h and w divisible by {self.packing}, got {tuple(x.shape)}')
        attended = self.attend(F.pixel_unshuffle(x, self.packing))
        return x + self.gamma * F.pixel_shuffle(attended, self.packing)


def _attention(kind: str, num_feat: int) -> nn.Module:
    if kind == 'cpa':
        return CrossPackingAttention()
    if kind == 'ca':
        return ChannelAttention(num_feat, squeeze_factor=16)
    if kind == 'none':
        return nn.Identity()
    raise ValueError(f"attention must be 'cpa', 'ca' or 'none', got {kind!r}")


class SquaredDeformableAlignment(nn.Module):
    """Squared deformable alignment module (Sec. 3.2, Fig. 2): offset learning + feature alignment.

    Reference branch F^Y' = ReLU(conv(ref)); offset branch
    conv(cat[F^X, F^Y']) → att → ReLU → conv → att → ReLU → conv → Θ; then eq. (4)/(5):
    F^X' = ReLU(DCN(F^X, Θ)) with one (dy, dx) per pixel shared by the 9 taps (squared offsets), or
    18 per-tap offsets (vanilla DCN, Table 2's first row).

    Args:
        num_feat (int): Feature channels C. Default: 64.
        num_ref_ch (int): Reference channels (3, or 12 with flip augmentation). Default: 12.
        offsets (str): ``squared`` (2 channels) or ``per_tap`` (18 channels, DCNv1). Default: ``squared``.
        attention (str): ``cpa``, ``ca`` (RCAN's squeeze-excitation, reduction 16) or ``none``. Default: ``cpa``.
        offset_init (str): ``kaiming`` (released: kaiming-normal offset convs, zero biases) or ``zero``
            (the last offset conv starts at 0, so the module starts as a plain conv). Default: ``kaiming``.
        modulation (bool): Also learn one modulation scalar per pixel, shared by all taps (sigmoid).
            The released model has none. Default: False.
        dcn_backend (str): Squared deformable conv backend (``auto``, ``fast``, ``torchvision``, ``mmcv``);
            per-tap offsets always use ``torchvision.ops.deform_conv2d``. Default: ``auto``.
    """

    def __init__(self,
                 num_feat: int = 64,
                 num_ref_ch: int = 12,
                 offsets: str = 'squared',
                 attention: str = 'cpa',
                 offset_init: str = 'kaiming',
                 modulation: bool = False,
                 dcn_backend: str = 'auto'):
        super().__init__()
        if offsets not in ('squared', 'per_tap'):
            raise ValueError(f"offsets must be 'squared' or 'per_tap', got {offsets!r}")
        if offset_init not in ('kaiming', 'zero'):
            raise ValueError(f"offset_init must be 'kaiming' or 'zero', got {offset_init!r}")
        self.offsets = offsets
        self.modulation = modulation
        self.num_offset_ch = 2 if offsets == 'squared' else 18
        self.conv_ref = nn.Conv2d(num_ref_ch, num_feat, 3, 1, 1)
        self.offset_conv1 = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.offset_att1 = _attention(attention, num_feat)
        self.offset_conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.offset_att2 = _attention(attention, num_feat)
        self.offset_conv3 = nn.Conv2d(num_feat, self.num_offset_ch + int(modulation), 3, 1, 1)
        if offsets == 'squared':
            self.dcn = SquaredDeformConv2d(num_feat, num_feat, 3, backend=dcn_backend)
        elif dcn_backend in ('auto', 'torchvision'):
            self.dcn = DeformConv2d(num_feat, num_feat, 3, padding=1)
        else:
            raise ValueError(f"per_tap offsets need dcn_backend 'auto' or 'torchvision', got {dcn_backend!r}")
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.offset_conv1, self.offset_conv2, self.offset_conv3):
            nn.init.kaiming_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        if offset_init == 'zero':
            nn.init.zeros_(self.offset_conv3.weight)

    def offset_head(self, x: torch.Tensor):
        """Θ (and the modulation, or None) from the offset branch's last features, in float32: a fraction of a
        pixel matters, and bf16 keeps only 8 significant bits (steps of 1/16 px at |Θ| = 8)."""
        x = run_in_float32(self.offset_conv3, x)
        offset = x[:, :self.num_offset_ch]
        return offset, (torch.sigmoid(x[:, self.num_offset_ch:]) if self.modulation else None)

    def forward(self, feat: torch.Tensor, ref: torch.Tensor):
        """Align ``feat`` (F^X) to ``ref``; returns (F^X', Θ)."""
        ref_feat = self.relu(self.conv_ref(ref))
        x = self.relu(self.offset_att1(self.offset_conv1(torch.cat([feat, ref_feat], dim=1))))
        x = self.relu(self.offset_att2(self.offset_conv2(x)))
        offset, mask = self.offset_head(x)
        if self.offsets == 'squared':
            aligned = self.dcn(feat, offset, mask)
        else:
            # torchvision's kernel has no float16/bfloat16 on CPU: float32 under autocast
            aligned = run_in_float32(self.dcn, feat, offset, None if mask is None else mask.expand(-1, 9, -1, -1))
        return self.relu(aligned), offset


@ARCH_REGISTRY.register()
class SDAN(nn.Module):
    """Squared Deformable Alignment Network (ICME 2021), an SRResNet with squared deformable alignment.

    ``forward(x, ref)`` → :class:`SDANOutput` ``(sr, aligned, mask, offset)``. Training feeds
    ``ref`` = Y' (the target bicubic-downsampled to the input grid), inference the RGB rendition of
    the input shot. Layers: head conv+ReLU → :class:`SquaredDeformableAlignment` → X' = conv(F^X');
    body of ``num_block`` residual blocks + conv, long skip from F^X'; tail of log2(s) ×
    [conv(C→4C), PixelShuffle(2), ReLU] and a last conv, no clamp. Inputs whose size is not a
    multiple of 8 (CPA's packing) are reflect-padded (which keeps the Bayer phase) and cropped back.

    At the defaults it has 1,673,930 parameters (the released model: ~1.67 M; its residual blocks have
    no biases, BasicSR's ``ResidualBlockNoBN`` used here has, +2,048).

    Mixed precision (the policy, applied whenever SDAN runs under ``torch.autocast``, bf16 or fp16): the convolutions
    of the head, the reference branch, offset_conv1/2, the DCN's own convolution, the body and the tail run in the
    low precision (nearly all the arithmetic); these stay in float32, and SDAN's four outputs are float32:

    - CPA's energy E = X Xᵀ and its softmax (:class:`_PackedChannelAttention`): E sums h/8·w/8 products and the
      softmax turns its absolute error into weight error, so a bf16 E (|E| ~ 10³–10⁴, steps of 4–32) scrambles
      A; A X and CPA's backward run in the low precision;
    - the offset head offset_conv3 → Θ (and the modulation): a fraction of a pixel matters, and bf16 would
      quantise |Θ| = 8 px to steps of 1/16 px; the validity mask M' comes from this float32 Θ;
    - the bilinear warp of the squared DCN (the ``fast`` backend upcasts its convolution's output; the fused
      C++ kernel runs in float32), and X' = conv_aligned(F^X'), which eq. (6) compares with Y'.

    ``bench/precision_quality.py`` measures what each float32 stage is worth on a trained model; the losses of
    ``SDANModel`` always run on float32 outputs. Outside autocast the network is plain float32 (or float64).

    Table 2 ablations by options: DCN = ``offsets='per_tap', attention='none', flip_ref=False``; SDCN =
    ``attention='none', flip_ref=False``; + CL-Attention = ``attention='ca', flip_ref=False``;
    + CP-Attention = ``flip_ref=False``; ++ Flip Augment = the defaults.

    Args:
        num_in_ch (int): Input channels; must match ``in_format`` (bayer 1, packed 4, rgb 3). Default: 1.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Feature channels. Default: 64.
        num_block (int): Residual blocks in the body. Default: 16.
        upscale (int): Zoom factor relative to the input grid, a power of 2 (4 for ``bayer``/``rgb``,
            8 for ``packed`` on SR-RAW's 4X pairs). Default: 4.
        in_format (str): ``bayer`` (RGGB mosaic, 1 channel), ``packed`` (R, Gr, B, Gb at half size)
            or ``rgb``. Default: ``bayer``.
        offsets (str): ``squared`` or ``per_tap``. Default: ``squared``.
        attention (str): ``cpa``, ``ca`` or ``none``. Default: ``cpa``.
        flip_ref (bool): Feed the reference with its flips along H, W and H+W (12 channels). Default: True.
        offset_init (str): ``kaiming`` or ``zero``, see :class:`SquaredDeformableAlignment`. Default: ``kaiming``.
        modulation (bool): Learn a per-pixel modulation of the DCN. Default: False.
        dcn_backend (str): ``auto`` (= ``fast``), ``fast``, ``torchvision`` or ``mmcv``. Default: ``auto``.
        cfa_head (bool): ``bayer`` only: the head convolves the mosaic with one kernel per CFA site
            (:class:`BayerHead`), so that colours are read off the mosaic. The released head (False) shares one
            kernel across sites and cannot tell R from B: it learns the training scenes' palette instead of the
            RAW → RGB mapping (``bench/RESULTS.md``, generalization). Default: False.
        image_skip (bool): Add X' bilinearly upsampled by ``upscale`` to X~, so that the body and tail
            learn only the detail that X' lacks (the global skip of BasicSR's ``MSRResNet``, here from the
            aligned image). Not in the paper; it makes short trainings converge much faster. Default: False.
        in_gamma (float): ``bayer``/``packed`` only: the network sees the mosaic gamma-encoded, X ** (1 / in_gamma)
            per site (clamped at 0), instead of linear. The output is gamma-encoded RGB (the JPEG's tone curve),
            so the head then only interpolates each channel's own sites; from a linear mosaic a small network must
            build the steep x ** (1 / 2.2) near black out of ReLUs, and leaks bright channels into a dim one (a flat
            warm patch's blue read +74 % too high in linear terms; +11 % with ``in_gamma=2.2``, ``bench/RESULTS.md``).
            Like ``img_range`` of BasicSR's EDSR, it is a fixed input encoding; the RAW → RGB mapping is still
            learned. Other than 1 (the paper's linear input), it is saved with the weights as the buffer
            ``input_gamma``. Default: 1.
        noise_input (bool): ``bayer`` only: the head also reads the input's noise level, a map of σ per site from
            the file's noise profile (:func:`noise_sigma`; ``forward(x, ref, noise)``), through its own conv3×3
            ``conv_noise``, zero-initialised so that weights without it load unchanged (Brooks et al. 2019 give
            their denoiser the same map). Without it one network must guess the noise of every sensor and ISO from
            the image: at high ISO it sharpens the noise (``bench/RESULTS.md``, Pretrained SDAN). Default: False.
        tail_chunk (int): When no gradient is recorded, run the tail on strips of this many input rows
            (each with a halo of 2 rows, more than the tail's reach), so that inference holds the tail's
            4C-channel map at 2x and C-channel map at s x for one strip instead of the whole image: the
            same output, a fraction of the peak memory. 0 runs the tail on the whole image. Training
            (gradients on) always runs it whole. Default: 128.
    """

    def __init__(self,
                 num_in_ch: int = 1,
                 num_out_ch: int = 3,
                 num_feat: int = 64,
                 num_block: int = 16,
                 upscale: int = 4,
                 in_format: str = 'bayer',
                 offsets: str = 'squared',
                 attention: str = 'cpa',
                 flip_ref: bool = True,
                 offset_init: str = 'kaiming',
                 modulation: bool = False,
                 dcn_backend: str = 'auto',
                 cfa_head: bool = False,
                 image_skip: bool = False,
                 tail_chunk: int = 128,
                 in_gamma: float = 1.,
                 noise_input: bool = False):
        super().__init__()
        if in_format not in IN_FORMAT_CHANNELS:
            raise ValueError(f'in_format must be one of {sorted(IN_FORMAT_CHANNELS)}, got {in_format!r}')
        if num_in_ch != IN_FORMAT_CHANNELS[in_format]:
            raise ValueError(f"num_in_ch={num_in_ch} does not match in_format={in_format!r}, "
                             f'which has {IN_FORMAT_CHANNELS[in_format]} channels')
        if upscale < 1 or upscale & (upscale - 1):
            raise ValueError(f'upscale must be a power of 2, got {upscale}')
        if cfa_head and in_format != 'bayer':
            raise ValueError(f"cfa_head is for in_format='bayer', got in_format={in_format!r}")
        if noise_input and in_format != 'bayer':
            raise ValueError(f"noise_input is for in_format='bayer', got in_format={in_format!r}")
        if tail_chunk < 0:
            raise ValueError(f'tail_chunk must be >= 0 (0: whole image), got {tail_chunk}')
        if in_gamma <= 0 or (in_gamma != 1 and in_format == 'rgb'):
            raise ValueError(f"in_gamma must be > 0, and 1 for in_format='rgb' (a JPEG is gamma-encoded already), "
                             f'got in_gamma={in_gamma} with in_format={in_format!r}')
        self.num_in_ch = num_in_ch
        self.upscale = upscale
        self.in_format = in_format
        self.flip_ref = flip_ref
        self.image_skip = image_skip
        self.tail_chunk = tail_chunk
        self.in_gamma = float(in_gamma)
        self.noise_input = noise_input
        if in_gamma != 1:  # recorded in the weights: they load only into a network that encodes its input alike
            self.register_buffer('input_gamma', torch.tensor(self.in_gamma))

        self.conv_first = BayerHead(num_feat) if cfa_head else nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        if noise_input:
            self.conv_noise = nn.Conv2d(1, num_feat, 3, 1, 1)
            nn.init.zeros_(self.conv_noise.weight)
            nn.init.zeros_(self.conv_noise.bias)
        self.align = SquaredDeformableAlignment(num_feat, 12 if flip_ref else 3, offsets, attention, offset_init,
                                                modulation, dcn_backend)
        self.conv_aligned = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat, pytorch_init=True)
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        upsample = []
        for _ in range(int(math.log2(upscale))):
            upsample += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*upsample)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def _check(self, x: torch.Tensor, ref: torch.Tensor, noise: Optional[torch.Tensor] = None) -> None:
        if x.dim() != 4 or x.shape[1] != self.num_in_ch:
            raise ValueError(f'x must have shape (N, {self.num_in_ch}, h, w) for in_format={self.in_format!r}, '
                             f'got {tuple(x.shape)}')
        if self.noise_input and noise is None:
            raise ValueError('this SDAN reads its input\'s noise level (noise_input): pass noise, the (N, 2, 2, 2) '
                             'noise profile (the dataset option noise_profile: true gives it)')
        if self.noise_input and tuple(noise.shape) != (x.shape[0], 2, 2, 2):
            raise ValueError(f'noise must have shape ({x.shape[0]}, 2, 2, 2), got {tuple(noise.shape)}')
        if self.noise_input and (x.shape[2] % 2 or x.shape[3] % 2):
            raise ValueError(f'a Bayer mosaic must have even height and width, got {tuple(x.shape)}')
        if ref.dim() != 4 or ref.shape[1] != 3 or ref.shape[0] != x.shape[0] or ref.shape[2:] != x.shape[2:]:
            raise ValueError(f'ref must have shape ({x.shape[0]}, 3, {x.shape[2]}, {x.shape[3]}) to match x '
                             f'{tuple(x.shape)}, got {tuple(ref.shape)}')

    def encode_input(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mosaic as the head sees it: X ** (1 / in_gamma), clamped at 0 (``in_gamma``; X itself at 1); with
        ``noise_input``, NOISE_GAIN · σ (:func:`noise_sigma`) as one more channel."""
        encoded = x if self.in_gamma == 1 else x.float().clamp(min=0).pow(1 / self.in_gamma).to(x.dtype)
        if not self.noise_input:
            return encoded
        return torch.cat([encoded, NOISE_GAIN * noise_sigma(x, noise)], dim=1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """F^X = ReLU(conv_first(X) [+ conv_noise(σ)]) of :meth:`encode_input`'s output."""
        feat = self.conv_first(x[:, :self.num_in_ch])
        if self.noise_input:
            feat = feat + self.conv_noise(x[:, self.num_in_ch:])
        return self.relu(feat)

    def tail(self, feat: torch.Tensor, rows: Optional[int] = None) -> torch.Tensor:
        """X~ = conv_last(upsample(feat)); by strips of ``rows`` rows (default: ``tail_chunk``) when no gradient is
        recorded."""
        rows = self.tail_chunk if rows is None else rows
        if torch.is_grad_enabled() or not rows or feat.shape[2] <= rows:
            return self.conv_last(self.upsample(feat))
        s, (n, _, h, w) = self.upscale, feat.shape
        halo = 2  # the tail's 3x3 convs at 1x, 2x, 4x, ... reach 1 + 1/2 + 1/4 + ... < 2 input rows
        sr = feat.new_empty(n, self.conv_last.out_channels, s * h, s * w)
        for top in range(0, h, rows):
            bottom = min(top + rows, h)
            lo, hi = max(top - halo, 0), min(bottom + halo, h)
            strip = self.conv_last(self.upsample(feat[:, :, lo:hi]))
            sr[:, :, s * top:s * bottom] = strip[:, :, s * (top - lo):s * (bottom - lo)]
        return sr

    def forward(self, x: torch.Tensor, ref: torch.Tensor, noise: Optional[torch.Tensor] = None) -> SDANOutput:
        self._check(x, ref, noise)
        h, w = x.shape[2:]
        x = self.encode_input(x, noise)
        x, ref = pad_to_multiple(x, CPA_PACKING), pad_to_multiple(ref, CPA_PACKING)
        if self.flip_ref:
            ref = torch.cat([ref, ref.flip(2), ref.flip(3), ref.flip(2, 3)], dim=1)

        feat = self.head(x)
        aligned_feat, offset = self.align(feat, ref)
        aligned = run_in_float32(self.conv_aligned, aligned_feat)
        feat = self.conv_body(self.body(aligned_feat)) + aligned_feat
        sr = self.tail(feat)
        if self.image_skip:
            sr = sr + upsample_image(aligned, self.upscale)

        offset = offset[..., :h, :w]
        s = self.upscale
        return SDANOutput(sr[..., :s * h, :s * w], aligned[..., :h, :w], validity_mask(offset), offset)
