"""The REAL scheduler, plus the two questions the vault asks it, for tests only.

The vault asks `scheduler.default_switch_id(user_id)` and `scheduler.owns_switch(user_id,
switch_id)`; the scheduler itself gains both with issue 5's second part. Until then the
privacy end-to-end tests, which need messages written against real switches, run this
process in the scheduler's place: every real entrypoint of the scheduler, and the two
answers derived from its real switches. Once the scheduler answers them itself,
`needed()` is False and the tests run the scheduler as `make run` does.

    python -m tests.standins.scheduler_directory      (configured like any service)
"""

import eventlet

eventlet.monkey_patch()  # before anything imports socket or threading

import signal  # noqa: E402
import sys  # noqa: E402

from nameko.rpc import rpc  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

from services.scheduler.scheduler import DEFAULT_SLOT, switch_id_for  # noqa: E402
from services.scheduler.service import SchedulerService  # noqa: E402
from services.scheduler.switches import FINAL  # noqa: E402
from shared.config import ConfigError, load_settings  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.runner import nameko_config  # noqa: E402


def needed() -> bool:
    """Whether the scheduler still lacks the vault's two questions."""
    return not hasattr(SchedulerService, "default_switch_id")


class SchedulerWithDirectory(SchedulerService):
    name = "scheduler"

    @rpc
    def default_switch_id(self, user_id: str) -> str:
        return switch_id_for(user_id, DEFAULT_SLOT)

    @rpc
    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        doc = self.store.switch(switch_id)
        return doc is not None and doc["user_id"] == user_id and doc["state"] not in FINAL


def main() -> int:
    try:
        settings = load_settings(require=("JICM_SECRET_KEY",))
    except ConfigError as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 2
    configure_logging("scheduler", settings.log_level, settings.log_format)
    runner = ServiceRunner(nameko_config(settings))
    runner.add_service(SchedulerWithDirectory)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: eventlet.spawn_n(runner.stop))
    runner.start()
    print("scheduler started", file=sys.stderr, flush=True)
    runner.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
