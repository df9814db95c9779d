"""Freed memory kept for reuse on a CPU, so that SDAN's large feature maps do not cost page faults at every allocation.

glibc's ``malloc`` serves every block over its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it
back to the kernel on ``free``; the next forward allocates the same maps again, and the kernel faults in and zeroes
every page anew. SDAN's maps are far larger (one 64-channel bf16 map of a 1-MP mosaic is 128 MiB, the tail's 16 times
that), so on a CPU this churn takes a large share of the time: nearly half of a tiled bf16 forward was spent in the
kernel (``bench/RESULTS.md``, "Freed memory kept for reuse").

:func:`retain_freed_memory` tells glibc to serve every block from its heap and not to give the heap's free top back
below 2 GiB, so freed maps are reused. The process keeps its high-water mark of memory until it ends, and the heap
fragments, so the peak RSS can exceed the peak of live memory and moves between runs (``bench/RESULTS.md``).
Jemalloc or tcmalloc preloaded (``LD_PRELOAD``, as ``python -m torch.backends.xeon.run_cpu`` does) do the same job;
this needs nothing installed. ``SDAN_RETAIN_MEMORY=0`` leaves ``malloc`` as it is.

The kept heap fragments: blocks freed and not reused stay resident, and a block that lives long pins the heap around
it. A tiled zoom of a 1-MP mosaic in one 1024² tile (default SDAN, fp32) peaked at 4.3-5.6 GiB resident against
2.44 GiB with glibc's default. Two tools bound it: :func:`outside_heap` serves the allocations made inside it by
``mmap`` as glibc does by default (whole-image arrays that live long, and what reading a RAW file allocates and
frees), so that they neither pin nor fragment the heap; :func:`release_free_memory` (glibc's ``malloc_trim``) gives
the heap's free pages back to the kernel between phases whose blocks differ (``tiled_forward``'s passes, and past its
``trim_above`` after any module of the network). Blocks of one size are reused best: ``tiled_forward`` gives every
tile's window of a pass one shape. With two threads or more the heap's growth varies by chance between runs alike (a
3-MP zoom in bf16, 2 threads: 2.6 to 6.2 GiB; one thread: 3.6 at 6 MP), which the trims bound.
glibc serves a request from a free block of the heap before it maps new pages, which ``outside_heap`` cannot forbid;
:func:`mapped_empty` allocates an array that is mapped whatever the heap holds, for the whole image's outputs.
"""
import contextlib
import ctypes
import math
import mmap
import os
import platform
import resource
import sys
from typing import Iterator, Optional

import torch

#: mallopt parameters (malloc.h): the heap top beyond which free() trims, and the most chunks served by mmap (glibc's
#: default: 65536).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
#: M_TRIM_THRESHOLD is an int: the largest free heap top kept is 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1
#: The environment variable that turns it off ('0').
ENV = 'SDAN_RETAIN_MEMORY'

_state: Optional[bool] = None
_libc: Optional[ctypes.CDLL] = None


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse in this process (idempotent).

    Returns:
        bool: Whether it is in force: False with ``SDAN_RETAIN_MEMORY=0``, or where the C library is not glibc
        (macOS, musl), which is then left as it is.
    """
    global _state, _libc
    if _state is None:
        _state = False
        if os.environ.get(ENV, '1') != '0' and platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc':
            try:
                _libc = ctypes.CDLL(None)
                _state = bool(_libc.mallopt(_M_MMAP_MAX, 0)) and bool(_libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
            except (OSError, AttributeError):
                _state = False
    return _state


@contextlib.contextmanager
def outside_heap() -> Iterator[None]:
    """Within this block, large allocations are ``mmap``'d and given back on free, as by glibc's default, where
    :func:`retain_freed_memory` is in force (else it changes nothing): for arrays of the whole image, which would pin
    the kept heap, and for work that allocates and frees them (reading a RAW file).

    glibc serves a request from the heap's free memory before it maps new pages, so the heap's free top (kept up to
    2 GiB) is given back first (:func:`release_free_memory`); a free block inside the heap as large as a request
    still serves it. Arrays allocated here by name are mapped whatever the heap holds: :func:`mapped_empty`."""
    if not _state:
        yield
        return
    release_free_memory()
    _libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    try:
        yield
    finally:
        _libc.mallopt(_M_MMAP_MAX, 0)


def resident_memory() -> int:
    """Bytes of this process's resident memory now (Linux's ``/proc/self/statm``; elsewhere its peak so far)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024  # bytes on macOS, KiB elsewhere


def release_free_memory() -> None:
    """Give the kept heap's free pages back to the kernel (glibc's ``malloc_trim``), where :func:`retain_freed_memory`
    is in force; else nothing. The heap keeps its layout: a block allocated there again faults its pages in once."""
    if _state:
        _libc.malloc_trim(0)


def mapped_empty(like: torch.Tensor, *size: int) -> torch.Tensor:
    """An uninitialised tensor of ``size`` with ``like``'s dtype and device, as ``like.new_empty(*size)``; on a CPU
    where :func:`retain_freed_memory` is in force, its memory is an anonymous ``mmap`` of its own, never a block of
    the kept heap, and goes back to the kernel when the tensor (and every view of it) is freed: for the whole
    image's arrays, which live through all the tiles' allocations and would pin the heap around them."""
    count = math.prod(size)
    if not _state or like.device.type != 'cpu' or count == 0:  # mmap cannot map 0 bytes
        return like.new_empty(*size)
    buffer = mmap.mmap(-1, count * like.element_size())
    return torch.frombuffer(buffer, dtype=like.dtype, count=count).view(*size)  # the tensor holds the mapping
