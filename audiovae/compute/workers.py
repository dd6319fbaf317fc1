"""Synthesis chunks computed on several CPU threads at once.

The convolutions of a small decoder parallelize poorly inside one operation: on 2 cores, two threads
decode a 10-s sound only ~10% faster than one. Splitting the sound into chunks (with their margins of
context, as `synth` already does for long inputs) and giving each worker thread its own chunk keeps the
cores busy: a 10-s generate at batch 1 ran 33% faster than with two intra-op threads on this project's
2-core machine (README, Benchmarks). At most MAX_WORKERS work at once (each holds a chunk in memory);
each gets an equal share of the caller's intra-op threads, set in its own thread (OpenMP's count is per
thread), and the caller's count and torch's default for new threads are restored afterwards. A sound
of one chunk is computed on the caller's thread, with all of its threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

MAX_WORKERS = 4  # chunks in flight at most: memory stays a few chunks whatever the core count


class Workers:
    """Run jobs on up to `count` threads sharing `threads` intra-op threads, results in order."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.count = min(self.threads, MAX_WORKERS)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                caller, each = torch.get_num_threads(), self.threads // self.count
                ready = threading.Barrier(self.count + 1)

                def set_up() -> None:
                    torch.set_num_threads(each)
                    torch.get_num_threads()  # fixes this thread's own count before the default is restored
                    ready.wait()

                pool = ThreadPoolExecutor(self.count, thread_name_prefix="audiovae", initializer=set_up)
                for _ in range(self.count):  # each submit starts a thread while the others wait in set_up
                    pool.submit(int)
                ready.wait()
                torch.set_num_threads(caller)  # torch's default for new threads, and the caller's own
                self._pool = pool
        return self._pool

    def in_order(self, jobs: Iterable[tuple[Callable[..., Any], tuple]], parallel: bool = True) -> Iterator[Any]:
        """Results of `function(*args)` for each job, in the jobs' order, at most `count` in flight.
        parallel=False (or one worker) runs them on the caller's thread, one by one."""
        if not parallel or self.count == 1:
            for function, args in jobs:
                yield function(*args)
            return
        pool, pending = self._start(), deque()
        try:
            for function, args in jobs:
                pending.append(pool.submit(_without_grad, function, args))
                if len(pending) >= self.count:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a consumer that stops early (an error, a closed generator) leaves nothing running
            for future in pending:
                future.cancel()


def _without_grad(function: Callable[..., Any], args: tuple) -> Any:
    with torch.no_grad():  # grad mode is per thread: the caller's no_grad does not reach the workers
        return function(*args)
