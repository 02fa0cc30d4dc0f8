"""`trainers.allocator`: with it, a process that allocates, touches and frees the same large block
again and again stops taking a page fault per page each time; without it (or turned off by
`RNN_SUITE_KEEP_FREED_MEMORY=0`) it does not. Each case runs in a process of its own, since the
setting is the whole process'."""

import os
import platform
import subprocess
import sys

import pytest

# 64 MB blocks through glibc's malloc, over its largest mmap threshold (32 MB): by default each is a
# fresh mapping (numpy's own allocations would use huge pages, hiding the count).
PROBE = """
import ctypes, resource, sys
from trainers import allocator
applied = allocator.reuse_freed_memory() if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
size = 64 * 2**20

def use_a_block():  # as a step's buffer: allocated, written, freed
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)

use_a_block()  # the first use maps the pages in either case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    use_a_block()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

def faults_per_block(mode, **env):
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                            env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(__file__)))
    applied, faults = result.stdout.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    applied, tuned = faults_per_block("tuned")
    assert applied
    assert tuned < 0.05 * pages
    _, untuned = faults_per_block("untuned")
    assert untuned > 0.5 * pages  # the probe measures what it claims: the default faults the block in
    applied, off = faults_per_block("tuned", RNN_SUITE_KEEP_FREED_MEMORY="0")
    assert not applied and off > 0.5 * pages
