"""Test-wide set-up: eventlet first, exactly as the services run.

nameko's pytest plugin no longer monkey-patches (since 2.13), so it is done here,
before anything imports socket or threading.
"""

import eventlet

eventlet.monkey_patch()

import socket  # noqa: E402

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
