"""Exact tiled inference of :class:`~sdan_basicsr.archs.sdan_arch.SDAN` at any image size.

Global statistics of the attention blocks are accumulated over the whole image first, then the local layers run
tile by tile with enough overlap, so the result equals ``net(x, ref)`` to float rounding and memory is set by the tile.
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.archs.rcan_arch import ChannelAttention
from torch import nn
from tqdm import tqdm

from sdan_basicsr.archs.sdan_arch import (
    CPA_PACKING,
    SDAN,
    BayerHead,
    CrossPackingAttention,
    SDANOutput,
    gram,
    pad_to_multiple,
    upsample_image,
)
from sdan_basicsr.ops.mixed_precision import run_in_float32
from sdan_basicsr.utils.cpu_memory import mapped_empty, outside_heap, release_free_memory, resident_memory
from sdan_basicsr.utils.disk_array import DiskArray

#: A box (y0, y1, x0, x1) on the padded input grid, end exclusive.
Box = Tuple[int, int, int, int]
#: Called with (row, column, sr tile) in output pixels of the unpadded image, instead of assembling ``sr``.
SrSink = Callable[[int, int, torch.Tensor], None]
#: The low-resolution outputs that :func:`tiled_forward` can assemble.
LOW_RES_OUTPUTS = ('aligned', 'mask', 'offset')
#: Integer types of the sizes of float types, through which a feature map is stored on disk (numpy has no bfloat16).
_BITS_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}

#: Depth (input pixels from a window edge that is not an image edge) of the values a window gets wrong at CPA1's
#: input: conv_first / conv_ref, then offset_conv1.
_DEPTH_ATT1 = 2
#: ... at CPA2's input: CPA1 spreads any wrong value over its whole 8×8 block, then offset_conv2.
_DEPTH_ATT2 = CPA_PACKING + 1
#: Extra margin of the deformable conv's window beyond ⌈max |Θ|⌉: its 3×3 taps (1), the bilinear corner (1),
#: and the 3×3 convolution of the conv-then-warp evaluation (1).
_DCN_MARGIN = 3


def _grow(box: Box, by: int, size: Tuple[int, int], align: int = 1) -> Box:
    """``box`` grown by ``by`` on every side, rounded outwards to multiples of ``align``, clipped to ``size``."""
    y0, y1, x0, x1 = box
    h, w = size
    return (max(0, (y0 - by) // align * align), min(h, -(-(y1 + by) // align) * align),
            max(0, (x0 - by) // align * align), min(w, -(-(x1 + by) // align) * align))


def _fit(window: Box, side: Tuple[int, int], size: Tuple[int, int]) -> Box:
    """``window`` lengthened to ``side`` (h, w; at most the image's) inwards from an image edge: the window of a tile
    at an edge, or of a shorter last tile, gets the shape of an inner tile's (``side``)."""
    y0, y1, x0, x1 = window
    (side_h, side_w), (h, w) = side, size
    y0, x0 = max(0, min(y0, h - side_h)), max(0, min(x0, w - side_w))
    return y0, max(y1, min(h, y0 + side_h)), x0, max(x1, min(w, x0 + side_w))


def _crop(t: torch.Tensor, window: Box, box: Box, scale: int = 1) -> torch.Tensor:
    """The part of ``t`` (computed on ``window``) that lies on ``box`` (inside ``window``), at ``scale``× the grid."""
    return t[..., scale * (box[0] - window[0]):scale * (box[1] - window[0]),
             scale * (box[2] - window[2]):scale * (box[3] - window[2])]


class _GlobalAttention:
    """One attention block of the offset branch, split into a global statistic and a local application.

    ``cpa`` (:class:`CrossPackingAttention`): the packed Gram matrix E = X Xᵀ is summed over the tiles' own
    8×8 blocks, then A = softmax(rowmax(E) − E) is formed once and out = γ·(A X) + X is applied block by block.
    ``ca`` (RCAN's channel attention): the channel sums give the image mean, then the channel weights. ``none``:
    the identity.
    """

    def __init__(self, module: nn.Module, batch: int):
        if isinstance(module, CrossPackingAttention):
            self.kind = 'cpa'
        elif isinstance(module, ChannelAttention):
            self.kind = 'ca'
        elif isinstance(module, nn.Identity):
            self.kind = 'none'
        else:
            raise TypeError(f'tiled_forward does not know the attention block {type(module).__name__}')
        self.module = module
        self.batch = batch
        self.stat: Optional[torch.Tensor] = None
        self.weights: Optional[torch.Tensor] = None

    def _pack(self, feat: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(feat, self.module.packing).flatten(2)

    def accumulate(self, feat: torch.Tensor) -> None:
        """Add the statistic of ``feat`` (N, C, h, w), the block input on a tile's own, 8-aligned box."""
        if self.kind == 'cpa':
            packed = self._pack(feat)
            # float32 products, as CPA forms E under autocast too
            stat = torch.stack([run_in_float32(gram, p) for p in packed]).double()
        elif self.kind == 'ca':
            stat = feat.sum(dim=(2, 3), dtype=torch.float64)
        else:
            return
        self.stat = stat if self.stat is None else self.stat.add_(stat)

    def finalize(self, area: int, dtype: torch.dtype) -> None:
        """Turn the accumulated statistic into the block's weights; ``area`` = pixels of the padded image."""
        if self.kind == 'cpa':
            energy = self.stat
            energy = energy.amax(dim=-1, keepdim=True) - energy
            self.weights = torch.softmax(energy, dim=-1).to(dtype)
        elif self.kind == 'ca':
            mean = (self.stat / area).to(dtype).view(self.batch, -1, 1, 1)
            self.weights = self.module.attention[1:](mean)
        self.stat = None

    def apply(self, feat: torch.Tensor) -> torch.Tensor:
        """The block's output on a window whose sides are multiples of 8 (image edges excepted, which are too)."""
        if self.kind == 'cpa':
            k = self.module.packing
            packed = self._pack(feat)
            attended = torch.bmm(self.weights, packed).view(feat.shape[0], -1, feat.shape[2] // k, feat.shape[3] // k)
            return feat + self.module.gamma * F.pixel_shuffle(attended, k)
        if self.kind == 'ca':
            return feat * self.weights
        return feat


def tail_halo(net: SDAN) -> int:
    """Input pixels that pass 3's body and tail read beyond a tile, on each side: the body's convs and conv_body, then
    the tail (a conv at 1×, 2×, … and conv_last add < 2 input pixels in all)."""
    body_convs = sum(m.kernel_size[0] // 2 for m in net.body.modules() if isinstance(m, nn.Conv2d))
    return body_convs + net.conv_body.kernel_size[0] // 2 + (2 if net.upscale > 1 else 1)


class _FeatureStore:
    """A feature map (N, C, h, w) of the whole padded image, written box by box and read by windows: a tensor, or one
    :class:`DiskArray` per batch element (channels last, the float bits as integers) in ``folder``."""

    def __init__(self, size: Tuple[int, int], folder: Optional[str]):
        self.size = size
        self.folder = folder
        self.tensor: Optional[torch.Tensor] = None
        self.disk: List[DiskArray] = []
        self.dtype: Optional[torch.dtype] = None  # of the map on disk, and where it is read back to
        self.device: Optional[torch.device] = None

    def put(self, box: Box, feat: torch.Tensor) -> None:
        """Store ``feat`` (N, C, box h, box w) on ``box``."""
        if self.folder is None:
            if self.tensor is None:
                # lives through passes 2 and 3: it must not pin the heap of the tiles' maps
                self.tensor = mapped_empty(feat, *feat.shape[:2], *self.size)
            self.tensor[..., box[0]:box[1], box[2]:box[3]] = feat
            return
        if not self.disk:
            self.dtype, self.device = feat.dtype, feat.device
            self.disk = [DiskArray((*self.size, feat.shape[1]), np.dtype(f'i{feat.element_size()}'), self.folder)
                         for _ in range(feat.shape[0])]
        for disk, one in zip(self.disk, feat):
            hwc = one.permute(1, 2, 0).contiguous().cpu().view(_BITS_OF_SIZE[one.element_size()])
            disk.write(box[0], box[2], hwc.numpy())

    def get(self, window: Box) -> torch.Tensor:
        """The map on ``window`` (N, C, h, w); read from disk, it is channels last."""
        if self.folder is None:
            return self.tensor[..., window[0]:window[1], window[2]:window[3]]
        parts = [torch.from_numpy(disk.read(*window)).view(self.dtype).permute(2, 0, 1) for disk in self.disk]
        return (parts[0][None] if len(parts) == 1 else torch.stack(parts)).to(self.device)

    def close(self) -> None:
        self.tensor = None
        for disk in self.disk:
            disk.close()


class _TiledSDAN:
    """The passes of :func:`tiled_forward` over one padded image in tiles of at most ``tile`` (:func:`tile_shape`).

    Every window a pass computes on has one shape for all the tiles (:meth:`window`), the shape of an inner tile's:
    at an image edge, and for the last partial tile of a row or column, the window reaches further into the image
    instead of being cut. Where freed memory is kept for reuse, the next tile then reuses the blocks the last one
    freed; windows of several sizes left blocks that no later tile reused, resident, and new shapes added cached
    kernels between them (a 24-MP zoom of the 64×16 network peaked at 11.1 GiB against 7.6 expected).
    """

    def __init__(self, net: SDAN, x: torch.Tensor, ref: torch.Tensor, tile: int, spill_dir: Optional[str] = None,
                 tail_rows: Optional[int] = None):
        self.net = net
        self.tail_rows = tail_rows
        self.align = net.align
        self.x = x
        self.ref = ref
        self.size = tuple(x.shape[2:])
        #: the tiles' (h, w), multiples of 8
        self.tile = tile_shape(self.size, tile)
        self.att = [_GlobalAttention(net.align.offset_att1, x.shape[0]),
                    _GlobalAttention(net.align.offset_att2, x.shape[0])]
        #: CPA2's input on the whole image, filled by pass 2 from every tile's own box; pass 3 reads Θ's input here
        #: instead of running the offset branch a third time (C channels of the image in the autocast dtype)
        self.att2_input = _FeatureStore(self.size, spill_dir)
        self.tail_halo = tail_halo(net)
        #: the largest |Θ| met so far in pass 3 (F^X is read this far around every window from then on)
        self.reach = 0

    def window(self, box: Box, by: int, side: Tuple[int, int]) -> Tuple[Box, Tuple[int, int]]:
        """The window around ``box`` that reads ``by`` pixels beyond it, rounded out to CPA's 8×8 blocks, with the
        shape of the same window around an inner box of ``side`` (h, w: a tile, or an inner tile's window):
        (window, its shape before the image cuts it)."""
        margin = 2 * -(-by // CPA_PACKING) * CPA_PACKING
        side = (side[0] + margin, side[1] + margin)
        return _fit(_grow(box, by, self.size, CPA_PACKING), side, self.size), side

    def ref_window(self, box: Box) -> torch.Tensor:
        """The network's reference on ``box``: with ``flip_ref``, the flips of the *whole* image, gathered."""
        y0, y1, x0, x1 = box
        h, w = self.size
        ref = self.ref[..., y0:y1, x0:x1]
        if not self.net.flip_ref:
            return ref
        flip_h = self.ref[..., h - y1:h - y0, x0:x1].flip(2)
        flip_w = self.ref[..., y0:y1, w - x1:w - x0].flip(3)
        flip_hw = self.ref[..., h - y1:h - y0, w - x1:w - x0].flip(2, 3)
        return torch.cat([ref, flip_h, flip_w, flip_hw], dim=1)

    def head(self, box: Box) -> torch.Tensor:
        """F^X on ``box`` (for a :class:`BayerHead`, computed on ``box`` grown to whole 2×2 CFA cells)."""
        window = _grow(box, 0, self.size, 2) if isinstance(self.net.conv_first, BayerHead) else box
        feat = self.net.head(self.x[..., window[0]:window[1], window[2]:window[3]])
        return _crop(feat, window, box)

    def offset_branch(self, window: Box, stage: int) -> torch.Tensor:
        """On ``window``: CPA1's input (stage 1) or CPA2's input (stage 2)."""
        align = self.align
        ref_feat = align.relu(align.conv_ref(self.ref_window(window)))
        feat = align.offset_conv1(torch.cat([self.head(window), ref_feat], dim=1))
        del ref_feat
        if stage == 1:
            return feat
        return align.offset_conv2(align.relu(self.att[0].apply(feat)))

    def statistics(self, stage: int, box: Box) -> None:
        """Pass 1 or 2: add the tile's own part of the attention statistic of stage ``stage``; pass 2 also keeps
        the tile's own CPA2 input in :attr:`att2_input`."""
        window, _ = self.window(box, _DEPTH_ATT1 if stage == 1 else _DEPTH_ATT2, self.tile)
        feat = _crop(self.offset_branch(window, stage), window, box)
        self.att[stage - 1].accumulate(feat)
        if stage == 2:
            self.att2_input.put(box, feat)

    def theta(self, box: Box, side: Tuple[int, int]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(Θ, modulation or None) on ``box`` (a window of ``side``): A₂ and the offset head on the kept CPA2 input
        around it (one pixel for offset_conv3, rounded out to CPA's 8×8 blocks), which is exact everywhere."""
        window, _ = self.window(box, 1, side)
        feat = self.att2_input.get(window)
        theta, mask = self.align.offset_head(F.relu(self.att[1].apply(feat)))  # not in place: feat is the kept map
        return _crop(theta, window, box), None if mask is None else _crop(mask, window, box)

    def aligned_features(self, box: Box, side: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(F^X', Θ) on ``box`` (a window of ``side``); F^X is read as far as the largest |Θ| so far reaches."""
        theta, mask = self.theta(box, side)
        self.reach = max(self.reach, math.ceil(theta.abs().max().item()) if theta.numel() else 0)
        source, _ = self.window(box, self.reach + _DCN_MARGIN, side)
        dcn = self.align.dcn
        k = dcn.weight.shape[-1]
        # conv-then-warp: (w ∗ F^X) on source ± k//2, sampled bilinearly (zeros outside) at p + Θ(p)
        conv = F.conv2d(self.head(source), dcn.weight, padding=k - 1)
        rows = torch.arange(box[0], box[1], dtype=theta.dtype, device=theta.device).view(-1, 1)
        cols = torch.arange(box[2], box[3], dtype=theta.dtype, device=theta.device)
        rows = theta[:, 0] + rows - (source[0] - k // 2)
        cols = theta[:, 1] + cols - (source[2] - k // 2)
        grid = torch.stack([2 * cols / (conv.shape[3] - 1) - 1, 2 * rows / (conv.shape[2] - 1) - 1], dim=-1)
        # the warp in float32 (under autocast too), as the squared deformable conv's fast backend
        aligned = run_in_float32(lambda c, g: F.grid_sample(c, g, mode='bilinear', padding_mode='zeros',
                                                            align_corners=True), conv, grid)
        del conv, grid
        if mask is not None:
            aligned = aligned * mask
        if dcn.bias is not None:
            aligned = aligned + dcn.bias.view(1, -1, 1, 1)
        # grid_sample writes NCHW: F^X' goes on in the convolutions' format (channels-last where sdan-zoom puts the
        # network on a CPU), so that no residual sum of the body mixes the two formats (several times slower)
        if dcn.weight.is_contiguous(memory_format=torch.channels_last):
            aligned = aligned.contiguous(memory_format=torch.channels_last)
        return self.align.relu(aligned), theta

    def outputs(self, box: Box) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pass 3: (X~, X', Θ) on ``box``."""
        net = self.net
        grown, side = self.window(box, self.tail_halo, self.tile)
        aligned_feat, theta = self.aligned_features(grown, side)
        aligned = run_in_float32(net.conv_aligned, aligned_feat)
        feat = net.conv_body(net.body(aligned_feat)) + aligned_feat
        del aligned_feat
        sr = net.tail(feat, self.tail_rows)  # by strips: the tail's 4C-channel maps of one strip at a time
        if net.image_skip:  # bilinear ×s reads one pixel around: inside the halo
            skip = upsample_image(aligned, net.upscale)
            sr = sr.add_(skip) if sr.dtype == skip.dtype else sr + skip  # in place: one window output less
            del skip
        return _crop(sr, grown, box, net.upscale), _crop(aligned, grown, box), _crop(theta, grown, box)


def tile_shape(size: Tuple[int, int], tile: int) -> Tuple[int, int]:
    """The tiles' (h, w) that :func:`tiled_forward` cuts an image of ``size`` into for ``tile``: as many per axis as
    tiles of at most ``tile`` need (both rounded up to CPA's 8×8 blocks), as equal as the blocks allow (every window
    has an inner tile's shape, so a short last tile would cost a whole one)."""
    blocks = lambda v: -(-v // CPA_PACKING)  # noqa: E731
    return tuple(-(-blocks(n) // -(-blocks(n) // blocks(tile))) * CPA_PACKING for n in size)


def _tiles(size: Tuple[int, int], shape: Tuple[int, int]) -> List[Box]:
    (h, w), (th, tw) = size, shape
    return [(y, min(y + th, h), x, min(x + tw, w)) for y in range(0, h, th) for x in range(0, w, tw)]


def _validity_mask(theta: torch.Tensor, box: Box, size: Tuple[int, int]) -> torch.Tensor:
    """M' of eq. (6) for Θ on ``box`` of an image of ``size`` (h, w): the moved centre lies inside the image."""
    rows = theta[:, 0] + torch.arange(box[0], box[1], dtype=theta.dtype, device=theta.device).view(-1, 1)
    cols = theta[:, 1] + torch.arange(box[2], box[3], dtype=theta.dtype, device=theta.device)
    inside = (rows >= 0) & (rows < size[0]) & (cols >= 0) & (cols < size[1])
    return inside.unsqueeze(1).to(theta.dtype)


@torch.no_grad()
def tiled_forward(net: SDAN,
                  x: torch.Tensor,
                  ref: torch.Tensor,
                  tile: int = 512,
                  progress: bool = False,
                  sr_sink: Optional[SrSink] = None,
                  keep: Sequence[str] = LOW_RES_OUTPUTS,
                  spill_dir: Optional[str] = None,
                  tail_rows: Optional[int] = None,
                  trim_above: Optional[int] = None,
                  noise: Optional[torch.Tensor] = None) -> SDANOutput:
    """``net(x, ref, noise)`` computed tile by tile, exactly (to float rounding), with memory set by ``tile``.

    The input is padded as :meth:`SDAN.forward` pads it, then three passes run over tiles of at most ``tile`` ×
    ``tile`` input pixels, as equal as CPA's 8×8 blocks allow, every window of a pass in one shape (at the image's
    edges a window reaches further in; where freed memory is kept for reuse, the heap's free pages are given back
    between passes and, past ``trim_above``, after a module; the whole image's maps are allocated outside
    the heap: ``cpu_memory``):

    1. per tile (plus the halo of two 3×3 convs): features up to CPA1's input; the tile's own packed columns add
       to E₁ = X Xᵀ of the whole image; A₁ = softmax(rowmax(E₁) − E₁) is formed once;
    2. per tile: the same features on the tile's blocks and one block around, A₁ applied block-wise, on to CPA2's
       input, which is kept for the whole image (C channels in the autocast dtype: 3 GiB for a 24-MP mosaic in
       bf16, 6 GiB in float32; in a temporary file with ``spill_dir``); E₂ and A₂ likewise;
    3. per tile, grown by the receptive field of the body and tail: Θ from the kept CPA2 input (A₂, the offset
       head), then the squared deformable conv reads F^X as far as the tile's largest |Θ| reaches (the halo is
       measured at run time, so any offset stays exact), then X', the body and the tail (by strips of
       ``tail_rows`` rows); the tile's own part is pasted.

    RCAN's channel attention (``attention='ca'``) is handled the same way with the image mean as its statistic.
    Per-tap offsets (``offsets='per_tap'``, Table 2's DCN row) are not supported: run those untiled.

    Args:
        net (SDAN): The network (any ``in_format``, ``flip_ref``, ``modulation``, squared offsets).
        x (Tensor): Input (N, C, h, w) as for ``net``.
        ref (Tensor): Reference (N, 3, h, w).
        tile (int): Largest tile side in input pixels, rounded up to a multiple of 8. Default: 512.
        progress (bool): Show a tqdm bar over the tiles of the three passes. Default: False.
        sr_sink (callable | None): Receives ``(row, col, sr_tile)`` (output pixels of the unpadded image) for
            every tile instead of having X~ assembled; the returned ``sr`` is then None. Default: None.
        keep (Sequence[str]): The low-resolution outputs to assemble, of :data:`LOW_RES_OUTPUTS`; the others are
            returned as None. Default: all.
        spill_dir (str | None): Keep CPA2's input in an unnamed temporary file in this folder, not in memory
            (see :class:`~sdan_basicsr.utils.disk_array.DiskArray`); pass 3 reads each tile's window back.
            Default: None (in memory).
        tail_rows (int | None): Rows of the tail's strips in pass 3 (its 2× and 4× maps across the tile's window are
            the largest of a tile; fewer rows take less memory and recompute 2 rows each side of every strip).
            Default: None (the network's ``tail_chunk``).
        trim_above (int | None): After every module of the network, give the kept heap's free pages back when the
            process's resident memory is above this many bytes: a bound for blocks freed that later ones do not
            reuse, which with two threads or more pile up by chance within a tile too (a 3-MP zoom in bf16 peaked
            at 2.6 to 6.2 GiB in runs alike). Every release costs the next blocks their page faults (+21 % time for
            the 16×8 network giving them back after every tile). 0: after every module. Default: None (never).
        noise (Tensor | None): The input's noise profile, for a network with ``noise_input``. Default: None.

    Returns:
        SDANOutput: ``(sr, aligned, mask, offset)`` as ``net(x, ref)`` returns them, None for those not kept.
    """
    if not isinstance(net, SDAN):
        raise TypeError(f'tiled_forward needs an SDAN, got {type(net).__name__}')
    if net.align.offsets != 'squared':
        raise ValueError(f"tiled_forward supports squared offsets only, the network has offsets="
                         f"{net.align.offsets!r}; run it untiled")
    if tile < 1:
        raise ValueError(f'tile must be positive, got {tile}')
    if set(keep) - set(LOW_RES_OUTPUTS):
        raise ValueError(f'keep must name outputs of {LOW_RES_OUTPUTS}, got {tuple(keep)}')
    net._check(x, ref, noise)
    n, _, h, w = x.shape
    with outside_heap():  # the whole image's padded copies live through the passes
        x_pad, ref_pad = pad_to_multiple(net.encode_input(x, noise), CPA_PACKING), pad_to_multiple(ref, CPA_PACKING)
    run = _TiledSDAN(net, x_pad, ref_pad, tile, spill_dir, tail_rows)
    tiles = _tiles(run.size, run.tile)
    guards = [] if trim_above is None else [m.register_forward_hook(_trim_hook(trim_above)) for m in net.modules()]
    # leave=None: the bar stays when it is the only one, and goes when it is nested in a bar over files
    bar = tqdm(total=3 * len(tiles), unit='tile', disable=not progress, leave=None)
    try:
        for stage in (1, 2):
            bar.set_description(f'SDAN pass {stage}/3 (CPA{stage} statistics)')
            for box in tiles:
                run.statistics(stage, box)
                bar.update()
            run.att[stage - 1].finalize(run.size[0] * run.size[1], x.dtype)
            release_free_memory()  # the next pass allocates blocks of other sizes

        s = net.upscale
        sr = None if sr_sink is not None else mapped_empty(x, n, net.conv_last.out_channels, s * h, s * w)
        aligned = mapped_empty(x, n, net.conv_aligned.out_channels, h, w) if 'aligned' in keep else None
        offset = mapped_empty(x, n, net.align.num_offset_ch, h, w) if 'offset' in keep else None
        mask = mapped_empty(x, n, 1, h, w) if 'mask' in keep else None
        bar.set_description('SDAN pass 3/3 (tiles)')
        for box in tiles:
            if box[0] < h and box[2] < w:
                sr_tile, aligned_tile, theta = run.outputs(box)
                own = (box[0], min(box[1], h), box[2], min(box[3], w))
                rows, cols = slice(own[0], own[1]), slice(own[2], own[3])
                theta = _crop(theta, box, own)
                if offset is not None:
                    offset[..., rows, cols] = theta
                if mask is not None:
                    mask[..., rows, cols] = _validity_mask(theta, own, (h, w))
                if aligned is not None:
                    aligned[..., rows, cols] = _crop(aligned_tile, box, own)
                del aligned_tile, theta
                sr_tile = _crop(sr_tile, box, own, s)
                if sr_sink is None:
                    sr[..., s * own[0]:s * own[1], s * own[2]:s * own[3]] = sr_tile
                else:
                    sr_sink(s * own[0], s * own[2], sr_tile)
                del sr_tile
            bar.update()
    finally:
        for guard in guards:
            guard.remove()
        run.att2_input.close()
        bar.close()
    return SDANOutput(sr, aligned, mask, offset)


def _trim_hook(trim_above: int) -> Callable:
    """A forward hook that gives the kept heap's free pages back when the resident memory is above ``trim_above``
    bytes: after every module, so that a tile's blocks of many sizes cannot pile up past the bound within a tile."""

    def hook(module: nn.Module, inputs, output) -> None:
        if resident_memory() > trim_above:
            release_free_memory()

    return hook
