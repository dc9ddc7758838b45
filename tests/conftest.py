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
