"""A STAND-IN for the delivery service, for end-to-end tests only: `python -m
tests.e2e.standin_delivery`.

The scheduler never fires a switch before delivery says every reminder of the cycle has
left. Until the real delivery service (issue 3) is merged, this process plays its part
in the end-to-end tests that watch switches fire: a nameko service named `delivery` whose
`mail_status` says every mail was "sent". It sends no mail. Tests that check the reminder
mail itself need the real service and skip without it.

`STANDIN_MAIL_STATUS_DELAY` (seconds) makes every answer slow, so that a scheduler holds
its claims long enough for a fault test to kill it in the middle of one.
"""

import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.rpc import rpc  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

from shared.config import load_settings  # noqa: E402

DELAY = float(os.environ.get("STANDIN_MAIL_STATUS_DELAY", "0"))


class StandInDelivery:
    name = "delivery"

    @rpc
    def mail_status(self, kind: str, references: list[str]) -> dict[str, str]:
        eventlet.sleep(DELAY)
        return {reference: "sent" for reference in references}

    @rpc
    def health(self) -> dict:
        return {"service": self.name, "status": "ok", "stand_in": True}


def main() -> int:
    settings = load_settings()
    runner = ServiceRunner({"AMQP_URI": settings.amqp_uri})
    runner.add_service(StandInDelivery)

    def shutdown(signum, frame):
        eventlet.spawn_n(runner.stop)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    runner.start()
    print("stand-in delivery started (answers every mail_status with 'sent')", flush=True)
    runner.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
