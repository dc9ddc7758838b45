"""HTTP load from outside, with `wrk`: a fixed number of connections for a fixed time.

`drive()` runs wrk (installed by `deploy/local/ensure_wrk.sh`, `make bench` calls it) with
the script `bench/load.lua`, which sends one request shape, optionally as many users in
turn: each user a bearer token and a client address of its own (`X-Forwarded-For`, which
a gateway started with `JICM_TRUSTED_PROXIES=1` believes). Spreading the requests so keeps
the per-user and per-client rate limits out of what is measured.

wrk is a closed loop written in C: each connection sends its next request when the last
answer arrived, so a figure is the server's, not a Python client's. Its latencies come
from wrk's own histogram (microseconds); the case carries their summary, not raw values.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import Case

SCRIPT = Path(__file__).resolve().parent / "load.lua"
MAX_WRK_THREADS = 2  # the machine's cores: more threads only contend with the server
REQUEST_TIMEOUT = "10s"
STATUS_ERRORS = "HTTP status >= 400"


class LoadError(Exception):
    """wrk is missing, failed, or said nothing we could read."""


@dataclass(frozen=True)
class User:
    """Who a request is sent as: a session token and the client address it comes from."""

    token: str
    address: str


@dataclass
class LoadCase(Case):
    """A case measured by wrk: the latency summary comes from wrk's histogram."""

    latency_summary: dict[str, float | None] = field(default_factory=dict)

    def latency(self) -> dict[str, float | None]:
        return self.latency_summary


def wrk_path() -> str:
    """The wrk to run; LoadError naming the installer if there is none."""
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed: run deploy/local/ensure_wrk.sh (make bench does)")
    return found


def drive(
    name: str,
    url: str,
    *,
    connections: int,
    seconds: float,
    method: str = "GET",
    body: str = "",
    users: Sequence[User] = (),
    notes: str = "",
) -> LoadCase:
    """Send `method url` on `connections` connections for `seconds`, as `users` in turn."""
    threads = min(connections, MAX_WRK_THREADS)
    print(f"  {name} ({connections} connection(s), {seconds:g} s)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="jicm-load-") as tmp:
        users_file = _write_users(Path(tmp), users) if users else ""
        argv = [
            wrk_path(), "--threads", str(threads), "--connections", str(connections),
            "--duration", f"{seconds:g}s", "--timeout", REQUEST_TIMEOUT, "--script", str(SCRIPT),
            url, "--", method, _path_of(url), body, str(threads), users_file,
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=seconds + 60, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LoadError(f"wrk did not finish within {seconds + 60:g} s") from exc
    figures = _figures(done)
    return _case(name, figures, connections, notes, users)


def _write_users(directory: Path, users: Sequence[User]) -> str:
    # Tokens go through a file in a private temporary directory, not the command line,
    # where every local user could read them in the process list.
    path = directory / "users"
    path.write_text("".join(f"{user.token} {user.address}\n" for user in users))
    path.chmod(0o600)
    return str(path)


def _path_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def _figures(done: subprocess.CompletedProcess[str]) -> dict[str, float]:
    if done.returncode != 0:
        raise LoadError(f"wrk exited with {done.returncode}: {done.stderr.strip()[:300]}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise LoadError(f"wrk printed no figures: {done.stdout.strip()[-300:]}")


def _case(
    name: str, figures: dict[str, float], connections: int, notes: str, users: Sequence[User]
) -> LoadCase:
    status_errors = int(figures["status_errors"])
    socket_errors = {
        kind: int(figures[key])
        for kind, key in (("connect", "connect_errors"), ("read", "read_errors"),
                          ("write", "write_errors"), ("timeout", "timeouts"))
        if figures[key]
    }
    extra: dict[str, object] = {"tool": "wrk"}
    if socket_errors:
        extra["socket_errors"] = socket_errors
    if users:
        extra["users"] = len(users)
        # Each wrk thread sends as its share of the users in turn: every user sent about this
        # many (the per-user check-in limit is 120 an hour).
        extra["requests_per_user"] = round(figures["requests"] / len(users), 1)
    return LoadCase(
        name=name,
        operations=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        latencies_ms=[],
        threads=connections,
        errors={STATUS_ERRORS: status_errors} if status_errors else {},
        notes=notes,
        extra=extra,
        latency_summary={
            "p50": figures["p50_us"] / 1000,
            "p95": figures["p95_us"] / 1000,
            "p99": figures["p99_us"] / 1000,
            "mean": round(figures["mean_us"] / 1000, 4),
            "max": figures["max_us"] / 1000,
        },
    )
