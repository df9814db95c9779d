"""Freed memory kept for reuse on CPU: a large block freed and allocated again costs no page faults."""
import os
import subprocess
import sys

import pytest

from sdan_basicsr.utils.cpu_memory import ENV

#: A 64 MiB tensor: over glibc's largest mmap threshold (32 MiB), so by default it is mmap'd and given back on free.
CHILD = """
import resource, torch
from sdan_basicsr.utils.cpu_memory import retain_freed_memory
on = retain_freed_memory()
t = torch.ones(2**24)
del t
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = torch.ones(2**24)
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 2**26 // 4096


def _second_allocation(retain: str):
    env = dict(os.environ, **{ENV: retain})
    out = subprocess.run([sys.executable, '-c', CHILD], env=env, capture_output=True, text=True, check=True).stdout
    on, faults = out.split()
    return on == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_freed_memory_is_reused_without_page_faults():
    on, faults = _second_allocation('1')
    assert on
    assert faults < PAGES // 100, f'{faults} page faults for a 64 MiB block allocated again'


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_env_turns_it_off():
    on, faults = _second_allocation('0')
    assert not on
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
        huge_pages_always = '[always]' in f.read()
    if not huge_pages_always:  # glibc's default: the block comes back from the kernel, one fault per 4 KiB page
        assert faults > PAGES // 2
