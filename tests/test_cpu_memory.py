"""Freed memory kept for reuse on CPU: large maps freed and allocated again cost no page faults."""
import os
import subprocess
import sys

import pytest
import torch

from sdan_basicsr.utils.cpu_memory import ENV, mapped_empty, retain_freed_memory

#: Maps of 64 and 32 MiB, over glibc's largest mmap threshold (32 MiB): by default each is mmap'd and given back on
#: free. The same allocations ten times over, as a network's forwards are; the page faults of the last four.
CHILD = """
import resource, torch
from sdan_basicsr.utils.cpu_memory import retain_freed_memory
on = retain_freed_memory()
for i in range(10):
    if i == 6:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.ones(2**24)
    b = torch.ones(2**23)
    c = a[:2**23] + b
    del a, b, c
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
#: 4 KiB pages of the last four rounds (64 + 32 + 32 MiB each).
PAGES = 4 * (2**26 + 2**25 + 2**25) // 4096


def _steady_state_faults(retain: str):
    env = dict(os.environ, **{ENV: retain})
    out = subprocess.run([sys.executable, '-c', CHILD], env=env, capture_output=True, text=True, check=True).stdout
    on, faults = out.split()
    return on == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_freed_memory_is_reused_without_page_faults():
    on, faults = _steady_state_faults('1')
    assert on
    assert faults < PAGES // 64, f'{faults} page faults for {PAGES} pages allocated again'


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_env_turns_it_off():
    on, faults = _steady_state_faults('0')
    assert not on
    thp = '/sys/kernel/mm/transparent_hugepage/enabled'
    huge_pages_always = os.path.exists(thp) and '[always]' in open(thp).read()
    if not huge_pages_always:  # glibc's default: every map comes back from the kernel, one fault per 4 KiB page
        assert faults > PAGES // 2


#: 256 MiB freed in the kept heap stays resident until release_free_memory(). Resident bytes: kept after the free;
#: given back by trim; given back by the free of 1 GiB allocated in outside_heap() after 256 MiB went back to the
#: heap (its free top is given back on entry, and no free block of the heap can serve it: the two 256 MiB blocks freed
#: may lie side by side, and glibc serves a request they cover from them, as the docstring says); given back by the
#: free of a mapped_empty() tensor, and of its last view, after 256 MiB were freed below a live block (a free block of
#: the request's size).
CHILD_HEAP = """
import torch
from sdan_basicsr.utils.cpu_memory import mapped_empty, outside_heap, release_free_memory, retain_freed_memory
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
assert retain_freed_memory()
start = rss()
a = torch.ones(2**26)
del a
kept = rss() - start
before = rss()
release_free_memory()
trimmed = before - rss()
a = torch.ones(2**26)
del a
with outside_heap():
    b = torch.ones(2**28)
before = rss()
del b
given_outside = before - rss()
a, pin = torch.ones(2**26), torch.ones(2**10)
del a
b = mapped_empty(pin, 2**13, 2**13).fill_(1)
view = b[:2**12]
del b
before = rss()
del view
given_mapped = before - rss()
print(kept, trimmed, given_outside, given_mapped)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_outside_heap_and_release():
    env = dict(os.environ, **{ENV: '1'})
    out = subprocess.run([sys.executable, '-c', CHILD_HEAP], env=env, capture_output=True, text=True, check=True)
    resident = [int(v) for v in out.stdout.split()]
    names = ('kept', 'trimmed', 'given_outside', 'given_mapped')
    assert all(v > 200 * 2**20 for v in resident), dict(zip(names, resident))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.uint8])
def test_mapped_empty_is_new_empty(dtype):
    """Shape, dtype, device and contiguity of ``new_empty``, whether mapped (retain in force) or not; writable."""
    retain_freed_memory()
    like = torch.zeros(2, dtype=dtype)
    t = mapped_empty(like, 3, 0) if dtype == torch.uint8 else mapped_empty(like, 2, 3, 5)
    ref = like.new_empty(*t.shape)
    assert (t.shape, t.dtype, t.device, t.is_contiguous()) == (ref.shape, ref.dtype, ref.device, True)
    t.fill_(1)
    assert t.sum().item() == t.numel()
