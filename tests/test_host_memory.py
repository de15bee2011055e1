"""retain_freed_memory: a freed large tensor's pages are reused, not faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Minor page faults of 20 allocations of a fresh 64 MiB tensor, after 10 to warm up.
_PROBE = """
import resource, sys, torch
from dha_train.engine.host_memory import retain_freed_memory
took = retain_freed_memory() if sys.argv[1] == "retain" else None
for _ in range(10):
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 << 20)
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    took, faults = done.stdout.split()
    return took, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_large_tensors_reuse_freed_memory():
    took, retained = _faults("retain")
    _, default = _faults("default")
    pages = (64 << 20) // 4096
    assert took == "True"
    assert default >= 20 * pages // 2  # glibc maps and unmaps each 64 MiB block
    assert retained < pages  # one block's pages serve all 20
