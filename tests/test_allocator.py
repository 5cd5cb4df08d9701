"""glibc's malloc keeps large freed blocks for reuse in the harness's process and its children."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# In a fresh process: allocate and free 64 MiB twice; glibc's mallinfo2 counts the bytes held in
# mmapped blocks (hblkhd) while the block lives. Prints: applied, mmapped bytes, children's env.
PROBE = """
import ctypes, os, subprocess, sys
from harness.allocator import keep_large_blocks
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
applied = keep_large_blocks()
mapped = []
for _ in range(2):
    block = ctypes.create_string_buffer(64 << 20)
    mapped.append(libc.mallinfo2().hblkhd)
    del block
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MALLOC_MMAP_THRESHOLD_'))"],
                       capture_output=True, text=True).stdout.strip()
print(applied, min(mapped), child)
"""


def _probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout.split()
    return out


def test_large_blocks_come_from_the_heap_and_children_inherit_the_setting() -> None:
    applied, mapped, child = _probe()
    assert applied == "True" and int(mapped) < (64 << 20)  # glibc's default maps each such block
    assert child == str(1 << 30)


def test_a_users_own_malloc_settings_are_left_alone() -> None:
    applied, mapped, child = _probe(MALLOC_ARENA_MAX="2")
    assert applied == "False" and int(mapped) >= (64 << 20) and child == "None"


# In a fresh process with large blocks kept: the resident set (MiB) after a freed 256 MiB block,
# and after release_free_memory().
RELEASE_PROBE = """
import ctypes, os
from harness.allocator import keep_large_blocks, release_free_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
assert keep_large_blocks()
base = rss()
block = ctypes.create_string_buffer(256 << 20)  # zero-filled: every page resident
del block
kept = rss()
release_free_memory()
print(kept - base, rss() - base)
"""


def test_memory_a_stage_freed_goes_back_to_the_os_between_stages() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept, released = map(int, subprocess.run([sys.executable, "-c", RELEASE_PROBE], env=clean,
                                             capture_output=True, text=True, check=True).stdout.split())
    assert kept >= 200  # the heap keeps the freed block for reuse
    assert released <= 50  # until the stage ends
