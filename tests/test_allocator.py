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


# Runs the command line's preload step with a fake "installed" tcmalloc (glibc itself, which every Linux
# process has loaded anyway), then prints what the re-run process sees: its preload and the mark.
RERUN = """
import os, sys
from rlhfkit import allocator
if os.environ.get(allocator.PRELOADED):
    print("rerun", os.environ["LD_PRELOAD"], os.environ[allocator.PRELOADED], *sys.argv[1:])
    sys.exit(0)
allocator.ctypes.util.find_library = lambda name: "libc.so.6" if name == "tcmalloc_minimal" else None
allocator.preload_tcmalloc()
print("not rerun", *sys.argv[1:])
"""


def _rerun(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "RLHFKIT_SYSTEM_MALLOC")}
    out = subprocess.run(
        [sys.executable, "-c", RERUN, "a", "b c"], capture_output=True, text=True, env={**env, **env_extra}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_the_command_reruns_itself_with_tcmalloc_preloaded_where_installed_and_wanted():
    assert _rerun({}) == "rerun libc.so.6 libc.so.6 a b c"  # same interpreter, same arguments
    assert _rerun({"RLHFKIT_SYSTEM_MALLOC": "1"}) == "not rerun a b c"
    assert _rerun({"LD_PRELOAD": "libc.so.6"}) == "not rerun a b c"  # the user's own preload wins
