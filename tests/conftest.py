"""Test-wide set-up: eventlet first, exactly as the services run.

nameko's pytest plugin no longer monkey-patches (since 2.13), so it is done here,
before anything imports socket or threading.
"""

import eventlet

eventlet.monkey_patch()
