"""release_freed_memory gives freed heap pages back to the OS (glibc Linux)."""

import os
import sys

import numpy as np
import pytest

from dalle_jax.training.host_memory import release_freed_memory


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, trims glibc heaps")
def test_freed_heap_pages_return_to_the_os():
    blocks = [np.ones(8_000) for _ in range(4_000)]  # 64 KB each, below the mmap threshold: heap
    kept = blocks[::16]  # live blocks scattered through the heap keep it from shrinking by itself
    del blocks
    before = _rss_mib()
    assert release_freed_memory()
    after = _rss_mib()
    assert before - after > 100, (before, after)  # most of the ~240 MiB freed comes back
    assert all(b[0] == 1 for b in kept)
