"""How much memory ``sdan-zoom`` takes on a CPU, and the tile that keeps it inside a budget.

A zoom's peak resident memory is modelled as

    peak ≈ base + exit + [C·P·bytes] + [12·G²·s²]
           + margin · (a + d·P + b·G²·C·4 + e·G²·s² + f·(r + 4)·G·C·4·s²)

with P the mosaic's pixels, C the network's feature channels, s its scale, ``bytes`` the size of a feature value in the
precision that runs, G the side of a tile's window in pass 3 (a tile as the image is cut into equal ones, and its halo,
at most the image) and r the rows of the tail's strips (:data:`TAIL_ROWS`). ``base`` is the process before the zoom
(Python, PyTorch, the weights: 1.0 GiB with PyTorch's CUDA build), measured, and ``exit`` what Python's teardown adds;
the bracket is CPA2's input, kept for the whole image between the tiled passes unless it goes to disk; the second, with
``image_skip``, X' of a tile's window upsampled to s² (3 float32 channels beside the window's output); ``d · P`` the
whole mosaic's arrays (the network's inputs, the reference, the output averaged for the colour fit, the RAW file's
reading and the fit's copies); the last three one tile's working set (its window's feature maps, its output at s², the
tail's strips across it). The zoomed image itself never is in memory: tiles go to a temporary file and are encoded from
there by strips.

The constants were fitted (non-negative least squares) on the peaks of real zooms, each in a fresh process with freed
memory kept for reuse as ``sdan-zoom`` keeps it (``bench/zoom_memory.py --fit``), and the margin covers the largest
measured / fitted ratio and the spread between runs: the kept heap fragments, and the same zoom's peak moved by ±9 %.
The expected peak is also where ``tiled_forward`` gives the kept heap's free pages back (its ``trim_above``, checked
after every module), so that the heap's growth by chance (two threads or more) stays near it.
bf16 and fp16 are counted as fp32 but for CPA2's input: on a CPU autocast adds casts and float32 stages (the 64×16
network's 24 MP: 7.78 GiB in bf16, 7.06 in fp32), and without native bf16 it takes 2.5 times fp32's memory
(``bench/zoom_memory.py``'s notes), which ``auto`` never picks.
:func:`plan` picks the largest tile whose expected peak fits the budget.
"""
import os
import re
from functools import lru_cache
from typing import Dict, NamedTuple, Optional, Tuple

from sdan_basicsr.archs.sdan_arch import CPA_PACKING, SDAN
from sdan_basicsr.utils.cpu_memory import resident_memory
from sdan_basicsr.utils.tiled_sdan import tail_halo, tile_shape

#: Fitted coefficients (bytes per unit) of the terms of :func:`terms`: ``bench/zoom_memory.py --fit`` on its grid of
#: fp32 runs (2-core AMD EPYC, 2026-12-06; 0.2-60 MP mosaics, 8 to 64 feature channels, tiles 128-1024).
COEFFICIENTS = {'process': 58.5e6, 'mosaic': 32.77, 'window_features': 7.693, 'window_output': 11.59, 'tail': 5.11}
#: The fitted part of the model is multiplied by this: the largest measured / fitted ratio of the grid was 1.481 (the
#: 64 x 16 network's smallest tile), and one configuration measured three times spread by ±9 %.
MARGIN = 1.5
#: What the process's peak grows by after the zoom, as its parent sees it (``RUSAGE_CHILDREN``): Python's teardown at
#: exit touched 0.03-0.12 GiB more in the runs measured.
EXIT_BYTES = int(0.15 * 2**30)
#: CPA2's input goes to disk beyond this size even when it would fit in memory: writing it and reading it back (3 GiB
#: for a 24-MP mosaic in bf16) costs a few seconds of a zoom of minutes, and keeps the peak where the tile sets it.
SPILL_BYTES = 2**30
#: Share of the memory available at start that the default budget takes.
DEFAULT_SHARE = 0.7
#: Tiles tried, in input pixels: multiples of this step up to the largest (beyond it the halo costs < 15 % and a
#: larger tile saves little time).
TILE_STEP = 64
MAX_TILE = 1024
#: Rows of the tail's strips in pass 3 (``tiled_forward``'s ``tail_rows``): the tail's 2× and 4× maps across a tile's
#: window are a tile's largest (measured, a 1024-wide strip in fp32: 1.3-1.8 GiB at 128 rows, 0.9 at 64, 0.5 at 32); 64
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

    Exactly: CPA2's input (C × P × feature bytes) unless ``spill``, Θ and M' with ``save_offsets`` (12 bytes a
    pixel), X' of the window upsampled with ``image_skip`` (12 bytes an output pixel; the fit's networks had none).
    Fitted: ``process`` (1), ``mosaic`` (P), ``window_features`` (G² · C · 4), ``window_output`` (G² · s²), ``tail``
    ((:data:`TAIL_ROWS` + 4) · G · C · 4 · s², the tail's strips across the window), with G the side of a tile's
    window in pass 3 (a tile as :func:`~sdan_basicsr.utils.tiled_sdan.tile_shape` cuts the image, and :func:`halo`
    on both sides, at most the image's side).

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
        side_h, side_w = (min(t + 2 * halo(net), v) for t, v in zip(tile_shape((h, w), tile), (h, w)))
    else:
        side_h, side_w, spill = h, w, True  # untiled: no map is kept between passes
    exact = (0 if spill else channels * pixels * feature_bytes(precision)) + 12 * pixels * save_offsets
    exact += 12 * side_h * side_w * scale**2 * net.image_skip
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
    ``base`` + :data:`EXIT_BYTES` + the exact terms + :data:`MARGIN` × the fitted ones (:func:`terms`).

    Args:
        net, size, tile, precision, spill, save_offsets: As for :func:`terms`.
        base (int | None): The process's own memory. Default: None (:func:`process_base`).

    Returns:
        int: Bytes.
    """
    exact, quantities = terms(net, size, tile, precision, spill, save_offsets)
    fitted = sum(COEFFICIENTS[k] * v for k, v in quantities.items())
    return int((process_base() if base is None else base) + EXIT_BYTES + exact + MARGIN * fitted)


def plan(net: SDAN, size: Tuple[int, int], precision: str, budget: int, save_offsets: bool = False,
         base: Optional[int] = None) -> MemoryPlan:
    """The largest tile (multiple of :data:`TILE_STEP`, at most :data:`MAX_TILE`) whose expected peak fits ``budget``;
    CPA2's input goes to disk where a larger tile fits with it there, or where it is over :data:`SPILL_BYTES`.

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
    large = terms(net, size, best[True], precision)[0] > SPILL_BYTES  # the exact term: CPA2's input in memory
    spill = best[True] > best[False] or large
    tile = best[spill]
    return MemoryPlan(tile, spill or not tile,
                      expected_peak(net, size, tile or TILE_STEP, precision, spill or not tile, save_offsets, base))


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
