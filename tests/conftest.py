"""Test-wide set-up: eventlet first, exactly as the services run.

nameko's pytest plugin no longer monkey-patches (since 2.13), so it is done here,
before anything imports socket or threading.

The browser tests (tests/browser) are the exception: Playwright's sync API runs its own
greenlets and asyncio loop, which hang under eventlet's patches. They run in a pytest
process of their own with `JICM_TESTS_BROWSER=1` (`make test` runs both), which collects
only them and patches nothing; the eventlet process leaves them out.
"""

import os
from pathlib import Path

BROWSER_RUN = os.environ.get("JICM_TESTS_BROWSER") == "1"
_HERE = Path(__file__).parent
collect_ignore = (
    [path.name for path in _HERE.iterdir() if path.is_dir() and path.name != "browser"]
    if BROWSER_RUN else ["browser"]
)

if not BROWSER_RUN:
    import eventlet

    eventlet.monkey_patch()

    import socket

    _green_getaddrinfo = socket.getaddrinfo

    def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        # pika 1.4 calls getaddrinfo with keyword arguments, which eventlet 0.33's green
        # version does not take. Only this monkey-patched test process needs the shim: the
        # gateway, the one real user of pika, runs without eventlet.
        return _green_getaddrinfo(host, port, family, type, proto, flags)

    socket.getaddrinfo = _getaddrinfo


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per distinct skip reason, instead of one per skipped test."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"skipped {count}: {reason}")
