"""How many CPU threads torch uses: the cores that are free when training starts, never more.

Why not simply all cores: torch's OpenMP threads wait for each other at the end of every parallel
region, so when another process holds one of two cores, a 2-thread step waits for the descheduled
thread again and again (measured on quickstart: ~7 steps/s idle fell to 0.7-1.5 under one busy
process), while a single thread keeps most of its speed. Counting the cores other processes keep busy
and leaving them alone degrades gracefully instead.
"""

from __future__ import annotations

import os
import time

from audiovae.errors import UserError

# Environment variables read by the thread pools of child processes (prepare's workers, DataLoader workers).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
BUSY_SAMPLE_SECONDS = 0.3  # how long `busy_cpus` watches /proc/stat
BUSY_THRESHOLD = 0.5  # a core counts as taken when others use more than half of it


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def busy_cpus(sample_seconds: float = BUSY_SAMPLE_SECONDS) -> float:
    """How many cores other processes keep busy right now, in cores (0.0 .. cpu count).

    Linux: the machine's busy time over `sample_seconds` minus this process's own CPU time.
    Elsewhere: the 1-minute load average (which lags). 0.0 when neither can be read.
    """
    cores = os.cpu_count() or 1
    before, own_before = _cpu_ticks(), time.process_time()
    if before is None:
        try:
            return max(0.0, min(float(cores), os.getloadavg()[0]))
        except (AttributeError, OSError):
            return 0.0
    start = time.perf_counter()
    time.sleep(sample_seconds)
    after, own = _cpu_ticks(), time.process_time() - own_before
    elapsed = time.perf_counter() - start
    if after is None or after[1] <= before[1]:
        return 0.0
    busy_share = (after[0] - before[0]) / (after[1] - before[1])  # of all cores
    others = busy_share * cores - own / max(elapsed, 1e-9)
    return max(0.0, min(float(cores), others))


def choose_threads(requested: int | None) -> int:
    """The number of torch threads to train with.

    requested: a positive count from the recipe (used as given, also above the core count: the user
    asked), or None for the default: the cores of this process's affinity mask minus those that other
    processes keep more than half busy, at least 1.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UserError(f"train.num_threads: must be a positive integer or null (got {requested!r})")
        return requested
    cores = available_cpus()
    taken = int(busy_cpus() + (1.0 - BUSY_THRESHOLD))  # round busy cores, counting a core from half use
    return max(1, cores - taken)


def apply_threads(count: int) -> None:
    """Use `count` threads in torch (intra-op, and inter-op where torch still allows it) and in children.

    Children (prepare's pool, DataLoader workers) read OMP_NUM_THREADS and friends when they start;
    values the user set are kept.
    """
    import torch

    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # only allowed before the first parallel work; the intra-op count is what matters
        pass
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(count))

