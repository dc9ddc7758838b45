"""Small nameko dependencies that every service uses: settings, clock, log context."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from shared import logging as jicm_logging
from shared.clock import CLOCK_CONFIG_KEY, SystemClock
from shared.config import Settings, settings_of


class Config(DependencyProvider):
    """Gives workers the validated settings the container was started with."""

    def setup(self) -> None:
        self.settings = settings_of(self.container)

    def get_dependency(self, worker_ctx) -> Settings:
        return self.settings


class Clock(DependencyProvider):
    """Gives workers the container's clock (`JICM_CLOCK` in the config, else the system's)."""

    def setup(self) -> None:
        self.clock = self.container.config.get(CLOCK_CONFIG_KEY) or SystemClock()

    def get_dependency(self, worker_ctx):
        return self.clock


class LogContext(DependencyProvider):
    """Restores the caller's request id (and the event id) in each worker's log records."""

    def worker_setup(self, worker_ctx) -> None:
        jicm_logging.request_id.set(worker_ctx.data.get("request_id"))
        jicm_logging.event_id.set(worker_ctx.data.get("event_id"))

    def get_dependency(self, worker_ctx) -> None:
        return None
