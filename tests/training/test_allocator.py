"""audiovae.compute.allocator: freed tensors' memory stays with the process, so a step does not fault it in anew."""

import subprocess
import sys

import pytest

# eight 4-MB blocks (a music-frames batch is one) made and freed 30 times; prints the page faults it took
ROUNDS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from audiovae.compute.allocator import keep_freed_memory
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    blocks = [np.ones(1 << 20, np.float32) for _ in range(8)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_not_faulted_in_again():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    pages = 30 * 8 * (4 << 20) // 4096  # every round's blocks faulted in afresh: 245,760 pages
    default, kept = faults("default"), faults("keep")
    assert default > pages // 4  # glibc trims freed blocks off its heap and maps them again (122,000 measured)
    assert kept < pages // 20  # the first round's pages (8,192 at most), then none (4,100 measured)
