"""A stand-in part for the supervisor tests: `python -m tests.local.fake_child NAME PID_DIR ...`.

It records its pid (and its grandchild's) in PID_DIR, atomically, so a test can find its process
group, prints `NAME ready`, then sleeps until signalled.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> int:
    """Behave as the options say."""
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("pid_dir", type=Path)
    p.add_argument("--grandchild", action="store_true", help="spawn `sleep 300` in the group")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    p.add_argument("--exit", type=int, default=None, help="exit at once with this code")
    p.add_argument("--say", default=None, help="print this line first")
    args = p.parse_args()
    if args.say:
        print(args.say, flush=True)
    if args.exit is not None:
        return args.exit
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.grandchild:
        sleeper = subprocess.Popen(["sleep", "300"])
        _write(args.pid_dir / f"{args.name}.grandchild", str(sleeper.pid))
    _write(args.pid_dir / f"{args.name}.pid", str(os.getpid()))
    print(f"{args.name} ready", flush=True)
    time.sleep(300)
    return 0


if __name__ == "__main__":
    sys.exit(main())
