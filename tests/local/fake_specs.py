"""Fake parts for `python -m deploy.local.supervisor --specs-module tests.local.fake_specs`.

`FAKE_SCENARIO` picks the set, `FAKE_PID_DIR` is where the children record their pids and
`FAKE_PORT` the port the `port` scenario claims.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from deploy.local.supervisor import ProcessSpec

BANNER = "fake system is running"


def child(name: str, pid_dir: Path, *flags: str, **kw: object) -> ProcessSpec:
    """A `tests.local.fake_child` part, ready once it has written its pid file."""
    pid_file = pid_dir / f"{name}.pid"
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", "tests.local.fake_child", name, str(pid_dir), *flags],
        ready=pid_file.exists,
        **kw,  # type: ignore[arg-type]
    )


def specs(environ: Mapping[str, str]) -> list[ProcessSpec]:
    """The parts of the scenario named by FAKE_SCENARIO."""
    pid_dir = Path(environ["FAKE_PID_DIR"])
    scenario = environ["FAKE_SCENARIO"]
    if scenario == "two":
        return [child("sink", pid_dir), child("web", pid_dir, "--grandchild")]
    if scenario == "notready":
        never = ProcessSpec(
            name="slow",
            argv=[
                sys.executable,
                "-m",
                "tests.local.fake_child",
                "slow",
                str(pid_dir),
                "--say",
                "slow: still warming up",
            ],
            ready=lambda: False,
            ready_timeout=1.0,
        )
        return [child("sink", pid_dir), never]
    if scenario == "dies":
        return [
            child("sink", pid_dir),
            child("broken", pid_dir, "--say", "fatal: no configuration", "--exit", "3"),
        ]
    if scenario == "crashy":
        crashy = ProcessSpec(
            name="crashy",
            argv=[
                sys.executable,
                "-m",
                "tests.local.fake_child",
                "crashy",
                str(pid_dir),
                "--exit",
                "3",
            ],
        )
        return [child("sink", pid_dir), crashy]
    if scenario == "stubborn":
        return [child("sink", pid_dir), child("stubborn", pid_dir, "--ignore-term")]
    if scenario == "port":
        port = int(environ["FAKE_PORT"])
        return [child("sink", pid_dir), child("web", pid_dir, ports=(("127.0.0.1", port),))]
    raise ValueError(f"unknown FAKE_SCENARIO {scenario!r}")
