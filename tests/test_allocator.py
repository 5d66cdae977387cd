"""After `keep_freed_memory`, big allocations come from malloc's heap (reused when freed), not fresh mappings."""

import os
import subprocess
import sys

import pytest

# Prints whether the setting took effect, then whether a 64 MB malloc landed below the program break (in the
# heap, where freed memory stays for the next allocation) rather than in a separate mmap far above it.
PROBE = """
import ctypes
from rlhfkit.allocator import keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_long]
print(keep_freed_memory())
block = libc.malloc(64 << 20)
print(block < libc.sbrk(0))
"""


def _probe(env_extra: dict) -> list[str]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_big_allocations_come_from_the_heap_unless_opted_out():
    assert _probe({}) == ["True", "True"]
    assert _probe({"RLHFKIT_SYSTEM_MALLOC": "1"}) == ["False", "False"]
