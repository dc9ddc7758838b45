"""A STAND-IN for the scheduler service (issue 4, not merged yet), for tests only.

It answers the two questions the vault asks, by a fixed rule instead of real switches:
a user's default switch is `default-<user id>`, and a user also owns every switch named
`extra-<user id>-<anything>`. The real scheduler replaces it once merged.

In-process: `container_factory(StandInScheduler, config)`. As a process (end-to-end
tests): `python -m tests.standins.scheduler`, configured like any service.
"""

import eventlet

eventlet.monkey_patch()  # before anything imports socket or threading

import signal  # noqa: E402
import sys  # noqa: E402

from nameko.rpc import rpc  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

from shared.config import ConfigError, load_settings  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.runner import nameko_config  # noqa: E402


def default_switch_id(user_id: str) -> str:
    return f"default-{user_id}"


class StandInScheduler:
    name = "scheduler"

    @rpc
    def default_switch_id(self, user_id: str) -> str:
        return default_switch_id(user_id)

    @rpc
    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        return switch_id == default_switch_id(user_id) or switch_id.startswith(
            f"extra-{user_id}-"
        )

    @rpc
    def health(self) -> dict:
        return {"service": self.name, "status": "ok", "stand_in": True}


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"scheduler stand-in: {exc}", file=sys.stderr)
        return 2
    configure_logging("scheduler-stand-in", settings.log_level, settings.log_format)
    runner = ServiceRunner(nameko_config(settings))
    runner.add_service(StandInScheduler)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: eventlet.spawn_n(runner.stop))
    runner.start()
    print("scheduler stand-in started", file=sys.stderr, flush=True)
    runner.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
