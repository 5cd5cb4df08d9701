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
