"""Keep freed memory in the process for the next step, instead of giving it back to the system.

A training step allocates the same large buffers at every call: XLA's temporaries of a JAX
gradient (73 MB for an LSTM of 64 x 100 x 128 -> 256), PyTorch's and TensorFlow's activations.
glibc's `malloc` serves a block over 32 MB with a fresh `mmap` and returns it on `free`, so each
step touches new pages, one page fault per 4 KB (6,400 faults, about 9 ms, for a 26 MB output on
the 2-core build machine), and each allocating thread keeps an arena of its own that `free` trims
back to the system the same way. `reuse_freed_memory` turns both off with `mallopt`: blocks come
from the main heap, which keeps what is freed, so the next step reuses pages already mapped. The
cost is that the process keeps its peak memory until it exits. A JAX LSTM's gradient: 1.14x
faster (`benchmarks/RESULTS.md`, session 24).

Written here because it is glibc's own documented call (`man 3 mallopt`); an allocator such as
jemalloc would need `LD_PRELOAD` before the process starts. Elsewhere (macOS, musl) it does nothing.
`RNN_SUITE_KEEP_FREED_MEMORY=0` leaves `malloc` as it is (to compare, or to return memory early).
"""

import ctypes
import os
import platform

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory():
    """Make glibc's `malloc` keep and reuse freed memory (see the module docstring); returns whether
    it did. Call it first thing in a process, before the backend starts its threads."""
    if os.environ.get("RNN_SUITE_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_MAX, 0),  # no block of its own per large allocation: the heap serves them
        (_M_TRIM_THRESHOLD, 2**31 - 1),  # the heap's free top is never given back
        (_M_ARENA_MAX, 1),  # every thread allocates from that heap (threads' arenas are mmap-ed)
    ))
