"""Run one service: `python -m shared.runner accounts`.

Validates the configuration before anything else (a bad environment stops the process
with one line per problem), configures structured logging, announces local mode, then
hosts the service in a nameko ServiceRunner until SIGTERM or Ctrl-C, which stop it
gracefully: running workers finish, unacknowledged messages return to their queues.
"""

import eventlet

eventlet.monkey_patch()  # before anything imports socket, threading or time

import importlib  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402

from shared.config import SETTINGS_CONFIG_KEY, ConfigError, Settings, load_settings  # noqa: E402
from shared.logging import configure_logging  # noqa: E402

log = logging.getLogger("shared.runner")

GRACEFUL_STOP_SECONDS = 10.0
SERVICES = ("accounts", "vault", "scheduler", "delivery", "billing", "privacy")


def service_class(name: str) -> type:
    """The nameko service class of `services/<name>/service.py` (its `name` attribute matches)."""
    module = importlib.import_module(f"services.{name}.service")
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "name", None) == name:
            return value
    raise SystemExit(f"services/{name}/service.py defines no service named {name!r}")


def nameko_config(settings: Settings) -> dict:
    """The nameko container config for a service process."""
    return {
        "AMQP_URI": settings.amqp_uri,
        "HEARTBEAT": 30,
        "max_workers": 10,
        SETTINGS_CONFIG_KEY: settings,
    }


def required_settings(name: str) -> tuple[str, ...]:
    """Secrets a service cannot start without (the module may declare REQUIRED_SETTINGS)."""
    module = importlib.import_module(f"services.{name}.service")
    return tuple(getattr(module, "REQUIRED_SETTINGS", ()))


def _stop_within(runner: ServiceRunner, seconds: float) -> None:
    try:
        with eventlet.Timeout(seconds):
            runner.stop()
    except eventlet.Timeout:
        log.warning("graceful stop took over %ss; killing", seconds)
        runner.kill()


def check_settings(name: str, settings: Settings) -> None:
    """Deeper checks a service module may declare as `check_settings(settings)` (reading a
    key file, say); they raise ConfigError before anything starts."""
    module = importlib.import_module(f"services.{name}.service")
    check = getattr(module, "check_settings", None)
    if check is not None:
        check(settings)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in SERVICES:
        print(f"usage: python -m shared.runner {{{','.join(SERVICES)}}}", file=sys.stderr)
        return 2
    name = argv[1]
    try:
        settings = load_settings(require=required_settings(name))
        check_settings(name, settings)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(name, settings.log_level, settings.log_format)
    if settings.is_local:
        log.warning("%s mode: throw-away secrets from var/secrets.env; never for real users",
                    settings.env.value)
    runner = ServiceRunner(nameko_config(settings))
    runner.add_service(service_class(name))

    stopping = []

    def shutdown(signum, frame):
        # Stop from a fresh greenthread: the signal handler must not block the hub. A
        # second signal, or a graceful stop that outlasts its deadline (a broker that is
        # gone, a worker stuck), kills instead: a supervisor's SIGTERM must end us.
        if stopping:
            eventlet.spawn_n(runner.kill)
            return
        stopping.append(signum)
        eventlet.spawn_n(_stop_within, runner, GRACEFUL_STOP_SECONDS)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        runner.start()
    except ConfigError as exc:
        # A dependency found a setting it cannot use (a key file, say): one clear message.
        print(f"{name}: {exc}", file=sys.stderr)
        runner.kill()
        return 2
    log.info("%s started", name)
    runner.wait()
    log.info("%s stopped", name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
