"""Synthesis chunks computed on several CPU threads at once, one intra-op thread each.

The convolutions of a small decoder parallelize poorly inside one operation: on 2 cores, two threads
decode a 10-s sound only ~10% faster than one. Splitting the sound into chunks (with their margins of
context, as `synth` already does for long inputs) and giving each thread its own chunk keeps both cores
busy: a 10-s generate at batch 1 ran 33% faster than with two intra-op threads on this project's
2-core machine (README, Benchmarks). Each worker sets its own OpenMP thread count to 1 (the count is per
thread), so the workers together run `count` threads; the caller's own count is left as it was.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


def _one_thread() -> None:
    torch.set_num_threads(1)


class Workers:
    """Run jobs on `count` threads (inline when count is 1), at most `count` in flight, results in order."""

    def __init__(self, count: int):
        self.count = max(1, count)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _submit(self, function: Callable[..., Any], args: tuple) -> Future:
        if self.count == 1:
            done: Future = Future()
            done.set_result(function(*args))
            return done
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="audiovae", initializer=_one_thread)
        return self._pool.submit(_without_grad, function, args)

    def in_order(self, jobs: Iterable[tuple[Callable[..., Any], tuple]]) -> Iterator[Any]:
        """Results of `function(*args)` for each job, in the jobs' order; holds `count` results at most."""
        pending: deque[Future] = deque()
        for function, args in jobs:
            pending.append(self._submit(function, args))
            if len(pending) >= self.count:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _without_grad(function: Callable[..., Any], args: tuple) -> Any:
    with torch.no_grad():  # grad mode is per thread: the caller's no_grad does not reach the workers
        return function(*args)
