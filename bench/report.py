"""What a benchmark hands back, and how it lands in `bench/results/` and on the terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bench.measure import Case

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUMMARY_FILE = "summary.json"


def now_iso() -> str:
    """The current UTC time, to the second, for file stamps."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class BenchResult:
    """The outcome of one benchmark: its cases, the sizes it ran with, and what to know."""

    name: str
    quick: bool
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, case: Case) -> Case:
        self.cases.append(case)
        return case

    def to_dict(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "quick": self.quick,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "machine": machine,
            "parameters": self.parameters,
            "notes": self.notes,
            "cases": [case.to_dict() for case in self.cases],
            "extra": self.extra,
        }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON, replacing the file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    partial.replace(path)  # a reader never sees half a file
    return path


def summary(results: list[BenchResult], machine: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The headline figures of this run's benchmarks (others' old files are left alone)."""
    return {
        "generated_at": now_iso(),
        "quick": quick,
        "machine": machine,
        "benchmarks": {
            result.name: {
                "error": result.error,
                "file": f"{result.name}.json",
                "cases": [_headline(case) for case in result.cases],
            }
            for result in results
        },
    }


def _headline(case: Case) -> dict[str, Any]:
    latency = case.latency()
    return {
        "case": case.name,
        "operations": case.operations,
        "errors": sum(case.errors.values()),
        "threads": case.threads,
        "seconds": round(case.seconds, 4),
        "ops_per_s": round(case.ops_per_s, 2),
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "p99_ms": latency["p99"],
        # A case judged against a target carries both, side by side.
        **({"target": case.extra["target"]} if "target" in case.extra else {}),
    }


def print_table(results: list[BenchResult], out: TextIO) -> None:
    """A short human table of every case, then any benchmark that failed."""
    header = ("benchmark", "case", "ops", "err", "thr", "s", "ops/s", "p50 ms", "p95 ms", "p99 ms")
    rows = [header]
    for result in results:
        for case in result.cases:
            h = _headline(case)
            rows.append(
                (
                    result.name,
                    case.name,
                    str(h["operations"]),
                    str(h["errors"]),
                    str(h["threads"]),
                    f"{h['seconds']:.2f}",
                    f"{h['ops_per_s']:,.1f}",
                    *(_ms(h[k]) for k in ("p50_ms", "p95_ms", "p99_ms")),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        # Text columns left-aligned, figures right-aligned.
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * w for w in widths), file=out)
    for result in results:
        if result.error:
            print(f"{result.name}: FAILED: {result.error}", file=out)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
