"""How much memory ``sdan-zoom`` takes on a CPU, and the tile that keeps it inside a budget.

A zoom's peak resident memory is modelled as

    peak ≈ a + d · P + [C · P · bytes]  + b · G² · (C · bytes + e · s²) + f · G · C · bytes · s²

with P the mosaic's pixels, C the network's feature channels, s its scale, ``bytes`` the size of a feature value in
the precision that runs (2 in bf16/fp16, 4 in fp32) and G = tile + 2 · halo the side of a tile's window in pass 3.
``a`` is the process (Python, PyTorch, the weights, the attention matrices); ``d · P`` the maps of the whole mosaic
that stay in memory (the network's inputs, the reference, the output averaged for the colour fit, the reading of the
RAW file before them); the bracket CPA2's input, kept for the whole image between the tiled passes unless it goes to
disk; the last two terms one tile's working set (the feature maps of its window, the tail's strips across it). The
zoomed image itself is not in memory: it goes to a temporary file tile by tile and is encoded from there by strips.
The constants were fitted on measured runs (``bench/zoom_memory.py``: peak RSS of each run in a fresh process, with
freed memory kept for reuse as ``sdan-zoom`` keeps it), plus a margin; :func:`plan` picks the largest tile whose
expected peak fits the budget.
"""
import os
import re
import resource
import sys
from functools import lru_cache
from typing import Dict, NamedTuple, Optional, Tuple

from sdan_basicsr.archs.sdan_arch import CPA_PACKING, SDAN
from sdan_basicsr.utils.tiled_sdan import tail_halo

#: Fitted coefficients (bytes per unit) of the terms of :func:`terms` (``bench/zoom_memory.py --fit``).
COEFFICIENTS = {'process': 0.1 * 2**30, 'mosaic': 64., 'window_features': 10., 'window_output': 40., 'tail': 90.}
#: The fitted part of the model is multiplied by this (the largest measured / fitted ratio, rounded up).
MARGIN = 1.1
#: Share of the memory available at start that the default budget takes.
DEFAULT_SHARE = 0.7
#: Tiles tried, in input pixels: multiples of this step up to the largest (beyond it the halo costs < 15 % and a
#: larger tile saves little time).
TILE_STEP = 64
MAX_TILE = 1024
#: Rows of the tail's strips in pass 3 (``tiled_forward``'s ``tail_rows``): the tail's 2× and 4× maps across a tile's
#: window are a tile's largest (measured, a 1024-wide strip in fp32: 1.8 GiB at 128 rows, 0.9 at 64, 0.45 at 32); 64
#: rows halve them for 4 rows recomputed in 64, which took no measurable time.
TAIL_ROWS = 64
#: Pixels a tile's window reaches beyond the tile on each side in pass 3, besides the body's receptive field: the
#: deformable convolution's reach (|Θ| of a trained network is a few pixels) and CPA's 8-pixel rounding.
EXTRA_HALO = 16


class MemoryPlan(NamedTuple):
    """What :func:`plan` chose: ``tile`` (input pixels), ``spill`` (CPA2's input in a temporary file) and the expected
    ``peak`` in bytes."""
    tile: int
    spill: bool
    peak: int


def feature_bytes(precision: str) -> int:
    """Bytes of one feature value in ``precision``."""
    return 4 if precision == 'fp32' else 2


def terms(net: SDAN, size: Tuple[int, int], tile: int, precision: str, spill: bool = False,
          save_offsets: bool = False) -> Tuple[int, Dict[str, float]]:
    """The model's terms for zooming a mosaic of ``size`` with ``net``: the bytes known exactly, and the quantities
    that :data:`COEFFICIENTS` multiply.

    Exactly: CPA2's input (C × P × feature bytes) unless ``spill``, Θ and M' with ``save_offsets`` (12 bytes a pixel).
    Fitted: ``process`` (1), ``mosaic`` (P), ``window_features`` (G² · C · 4), ``window_output`` (G² · s²), ``tail``
    ((:data:`TAIL_ROWS` + 4) · G · C · 4 · s², the tail's strips across the window), with G the side of a tile's
    window in pass 3 (the tile and :func:`halo` on both sides, at most the image's side).

    Args:
        net (SDAN): The network.
        size (tuple[int, int]): Mosaic height and width (input pixels of ``net``).
        tile (int): Tile side in input pixels; 0 = untiled.
        precision (str): ``fp32``, ``bf16`` or ``fp16``.
        spill (bool): CPA2's input goes to a temporary file. Default: False.
        save_offsets (bool): Θ and M' are kept for ``--save-offsets``. Default: False.

    Returns:
        tuple: Exact bytes, and ``{term: quantity}``.
    """
    h, w = (-(-v // CPA_PACKING) * CPA_PACKING for v in size)
    pixels = h * w
    channels, scale = net.conv_body.out_channels, net.upscale
    if tile:
        tile = -(-tile // CPA_PACKING) * CPA_PACKING
        side_h, side_w = (min(tile + 2 * halo(net), v) for v in (h, w))
    else:
        side_h, side_w, spill = h, w, True  # untiled: no map is kept between passes
    exact = (0 if spill else channels * pixels * feature_bytes(precision)) + 12 * pixels * save_offsets
    # a tile's maps are counted at 4 bytes in every precision: on a CPU autocast adds casts and float32 stages
    # (measured: bf16 takes no less than fp32 there)
    return exact, dict(process=1., mosaic=float(pixels), window_features=float(side_h * side_w * channels * 4),
                       window_output=float(side_h * side_w * scale**2),
                       tail=float((TAIL_ROWS + 4) * side_w * channels * 4 * scale**2))


def halo(net: SDAN) -> int:
    """Input pixels of a tile's window in pass 3 beyond the tile, on each side: the body's and tail's receptive
    field (:func:`~sdan_basicsr.utils.tiled_sdan.tail_halo`) and :data:`EXTRA_HALO`."""
    return tail_halo(net) + EXTRA_HALO


def expected_peak(net: SDAN, size: Tuple[int, int], tile: int, precision: str, spill: bool = False,
                  save_offsets: bool = False, base: Optional[int] = None) -> int:
    """The modelled peak resident memory (bytes) of zooming a mosaic of ``size`` (h, w) with ``net`` on a CPU:
    ``base`` + the exact terms + :data:`MARGIN` × the fitted ones (:func:`terms`).

    Args:
        net, size, tile, precision, spill, save_offsets: As for :func:`terms`.
        base (int | None): The process's own memory. Default: None (:func:`process_base`).

    Returns:
        int: Bytes.
    """
    exact, quantities = terms(net, size, tile, precision, spill, save_offsets)
    fitted = sum(COEFFICIENTS[k] * v for k, v in quantities.items())
    return int((process_base() if base is None else base) + exact + MARGIN * fitted)


def plan(net: SDAN, size: Tuple[int, int], precision: str, budget: int, save_offsets: bool = False,
         base: Optional[int] = None) -> MemoryPlan:
    """The largest tile (multiple of :data:`TILE_STEP`, at most :data:`MAX_TILE`) whose expected peak fits ``budget``;
    CPA2's input stays in memory unless a larger tile fits with it on disk.

    Args:
        net (SDAN): The network.
        size (tuple[int, int]): Mosaic height and width.
        precision (str): ``fp32``, ``bf16`` or ``fp16``.
        budget (int): Bytes the zoom may take.
        save_offsets (bool): Θ and M' are kept. Default: False.
        base (int | None): The process's own memory. Default: None (:func:`process_base`).

    Returns:
        MemoryPlan: The choice; ``tile`` 0 when not even the smallest tile fits (``peak`` is then the smallest tile's
        expected peak).
    """
    largest = min(MAX_TILE, -(-max(size) // TILE_STEP) * TILE_STEP)
    best = {}
    for spill in (False, True):
        fits = [t for t in range(TILE_STEP, largest + 1, TILE_STEP)
                if expected_peak(net, size, t, precision, spill, save_offsets, base) <= budget]
        best[spill] = max(fits, default=0)
    spill = best[True] > best[False]
    tile = best[spill]
    return MemoryPlan(tile, spill or not tile,
                      expected_peak(net, size, tile or TILE_STEP, precision, spill or not tile, save_offsets, base))


def resident_memory() -> int:
    """Bytes of this process's resident memory now (Linux's ``/proc/self/statm``; elsewhere its peak so far)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024  # bytes on macOS, KiB elsewhere


@lru_cache(maxsize=1)
def process_base() -> int:
    """:func:`resident_memory` the first time it is asked for, before any zoom (Python, PyTorch, the libraries, the
    weights): the ``a`` of the model. Later zooms of the same process reuse the memory the first one freed (it is
    kept for reuse), so it is measured once."""
    return resident_memory()


def available_memory() -> int:
    """Bytes of memory available to a new process now: Linux's MemAvailable, else the free physical memory."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 2


def default_budget() -> int:
    """:data:`DEFAULT_SHARE` of :func:`available_memory`."""
    return int(DEFAULT_SHARE * available_memory())


def parse_size(text: str) -> int:
    """Bytes of a size such as ``6G``, ``6GiB``, ``800M``, ``1.5g`` or ``123456`` (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*', text.lower())
    if not match:
        raise ValueError(f'not a size: {text!r} (e.g. 6G, 800M)')
    return int(float(match.group(1)) * 1024**'_kmgt'.index(match.group(2) or '_'))
