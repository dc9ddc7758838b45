"""`python -m bench [--quick] [--only NAME ...]`: run benchmarks, write their figures.

Writes `bench/results/<name>.json` for each benchmark run, then
`bench/results/summary.json` (machine facts and every case's headline figures) and
prints a short table. Progress goes to stderr, the table to stdout.

A benchmark that fails keeps the cases it measured and records its error; the others
still run, and the exit status is 1. Ctrl-C (or SIGTERM) stops the run: the system under
measurement is torn down, what was measured so far is written, and the status is 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType

from bench import checkin, footprint, http_api, idle, release, rpc, storage
from bench.machine import machine_facts
from bench.report import (
    RESULTS_DIR,
    SUMMARY_FILE,
    BenchResult,
    now_iso,
    print_table,
    summary,
    write_json,
)
from deploy.local.supervisor import NotReadyError

BENCHMARKS: dict[str, Callable[[BenchResult], None]] = {
    "storage": storage.run,
    "rpc": rpc.run,
    "http": http_api.run,
    "checkin": checkin.run,
    "footprint": footprint.run,
    "idle": idle.run,
    "release": release.run,
}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="shrink every size: a smoke run of the harness"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these benchmarks ({', '.join(BENCHMARKS)}); default: all",
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C, so every teardown runs.
    raise KeyboardInterrupt


def run_one(result: BenchResult) -> bool:
    """Run one benchmark into `result`; False if Ctrl-C stopped it.

    Errors and interruptions are recorded in the result, which keeps the cases measured
    before them; the benchmark's own teardown has already run when they arrive here.
    """
    print(f"== {result.name}{' (quick)' if result.quick else ''}", file=sys.stderr, flush=True)
    began = time.monotonic()
    try:
        BENCHMARKS[result.name](result)
    except KeyboardInterrupt:
        result.error = "interrupted"
        return False
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        _explain(exc)
    finally:
        result.finished_at = now_iso()
        result.extra["wall_seconds"] = round(time.monotonic() - began, 2)
    return True


def _explain(exc: Exception) -> None:
    traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, NotReadyError) and exc.tail:
        print(f"last lines from {exc.name}:", file=sys.stderr)
        for line in exc.tail:
            print(f"    {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks; 0 if all went through, 1 if one failed, 130 if stopped."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    machine = machine_facts()
    results: list[BenchResult] = []
    interrupted = False
    for name in args.only or list(BENCHMARKS):
        result = BenchResult(name, quick=args.quick)
        results.append(result)
        interrupted = not run_one(result)
        write_json(RESULTS_DIR / f"{name}.json", result.to_dict(machine))
        if interrupted:
            print(f"\n{name}: interrupted; nothing more is run", file=sys.stderr)
            break
    write_json(RESULTS_DIR / SUMMARY_FILE, summary(results, machine, args.quick))
    print_table(results, sys.stdout)
    written = [f"{r.name}.json" for r in results] + [SUMMARY_FILE]
    print(f"\nwritten to {RESULTS_DIR}: {', '.join(written)}")
    if interrupted:
        return 130
    return 1 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
