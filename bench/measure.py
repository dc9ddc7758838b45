"""Timing primitives: run an operation over a list of inputs, on one or more threads.

Every operation is timed on its own with `perf_counter_ns`, so a case yields both a
throughput (successful operations over wall-clock seconds) and a latency distribution.
A failing operation is counted, by the kind of failure, and left out of the latencies:
the harness records what happened, it never asserts.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# A worker is built once per thread (so it can hold a thread's own session or
# connection) and then called once per input.
Operation = Callable[[T], object]
WorkerFactory = Callable[[int], Operation[T]]

JOIN_POLL_SECONDS = 0.2  # joins wake up this often so that Ctrl-C is noticed promptly
MAX_ERROR_KINDS = 20


@dataclass
class Case:
    """The figures of one measured case."""

    name: str
    operations: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    threads: int = 1
    errors: dict[str, int] = field(default_factory=dict)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.operations - sum(self.errors.values())

    @property
    def ops_per_s(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    def latency(self) -> dict[str, float | None]:
        """p50/p95/p99, mean and max in milliseconds (None when nothing succeeded)."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return dict.fromkeys(("p50", "p95", "p99", "mean", "max"))
        return {
            "p50": round(percentile(ordered, 50), 4),
            "p95": round(percentile(ordered, 95), 4),
            "p99": round(percentile(ordered, 99), 4),
            "mean": round(sum(ordered) / len(ordered), 4),
            "max": round(ordered[-1], 4),
        }

    def to_dict(self) -> dict[str, Any]:
        """The case as it is written to JSON (raw latencies are summarized, not dumped)."""
        return {
            "case": self.name,
            "operations": self.operations,
            "errors": self.errors,
            "threads": self.threads,
            "seconds": round(self.seconds, 6),
            "ops_per_s": round(self.ops_per_s, 2),
            "latency_ms": self.latency(),
            "notes": self.notes,
            **({"extra": self.extra} if self.extra else {}),
        }


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile of sorted values, interpolating between closest ranks."""
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class _Tally(Generic[T]):
    """What one thread saw: its latencies and its failures."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def run(self, operation: Operation[T], items: Sequence[T]) -> None:
        for item in items:
            start = time.perf_counter_ns()
            try:
                operation(item)
            except Exception as exc:  # not BaseException: Ctrl-C must still stop the run
                self.errors[_error_kind(exc)] += 1
                continue
            self.latencies_ms.append((time.perf_counter_ns() - start) / 1e6)


def _error_kind(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:120] if text else type(exc).__name__


def measure(
    name: str,
    worker: WorkerFactory[T],
    items: Sequence[T],
    *,
    threads: int = 1,
    notes: str = "",
) -> Case:
    """Run each input through a worker's operation; `threads` workers share the inputs."""
    print(f"  {name} ({len(items)} ops, {threads} thread(s))", file=sys.stderr, flush=True)
    if threads == 1:
        # In the main thread: nothing to coordinate, and Ctrl-C lands right where we are.
        operation = worker(0)
        tally: _Tally[T] = _Tally()
        start = time.perf_counter()
        tally.run(operation, items)
        seconds = time.perf_counter() - start
        tallies = [tally]
    else:
        seconds, tallies = _run_threads(worker, items, threads)
    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
    return Case(
        name=name,
        operations=len(items),
        seconds=seconds,
        latencies_ms=[ms for tally in tallies for ms in tally.latencies_ms],
        threads=threads,
        errors=dict(errors.most_common(MAX_ERROR_KINDS)),
        notes=notes,
    )


def _run_threads(
    worker: WorkerFactory[T], items: Sequence[T], threads: int
) -> tuple[float, list[_Tally[T]]]:
    # Round-robin shares, so every thread has work until close to the end.
    shares = [items[i::threads] for i in range(threads)]
    tallies: list[_Tally[T]] = [_Tally() for _ in range(threads)]
    # Workers are built (sessions opened) before the clock starts; the barrier then
    # releases every thread at once so the wall clock covers only the measured work.
    operations = [worker(i) for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def body(index: int) -> None:
        barrier.wait()
        tallies[index].run(operations[index], shares[index])

    pool = [
        # Daemon threads: after Ctrl-C the process may exit while a thread is mid-call.
        threading.Thread(target=body, args=(i,), name=f"bench-{i}", daemon=True)
        for i in range(threads)
    ]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        while thread.is_alive():
            thread.join(JOIN_POLL_SECONDS)
    return time.perf_counter() - start, tallies
