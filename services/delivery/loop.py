"""The sending loop as a nameko entrypoint: `@sending_loop` runs a method over and over.

It is an entrypoint rather than a background thread of a dependency because nameko stops
entrypoints first and waits for their workers before it stops any dependency: a batch in
progress finishes the mail it is sending (and records the outcome in the database, which
is still open) instead of being cut off between the SMTP answer and the write that
records it.

The method runs as a normal worker (dependencies injected) every `JICM_DELIVERY_TICK`
seconds, at once again when it reports that more mail is due, and at once when
`SendingLoopWaker` is called by a worker that has just queued mail. It receives one
argument, `keep_going()`, which turns False when the service is stopping, so a batch ends
after the current mail. With several delivery processes every loop runs; claims decide
which one sends each mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import eventlet
from eventlet.event import Event as GreenEvent
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import DependencyProvider, Entrypoint

from shared.config import settings_of

log = logging.getLogger(__name__)


class SendingLoop(Entrypoint):
    """Entrypoint: run the decorated method every tick, or sooner when woken."""

    def setup(self) -> None:
        self.tick = settings_of(self.container).delivery_tick
        self._stopping = False
        self._wake = GreenEvent()
        self._thread = None

    def start(self) -> None:
        self._thread = self.container.spawn_managed_thread(self._run,
                                                           identifier="delivery.sending_loop")

    def stop(self) -> None:
        """Let the current batch finish its current mail, then return."""
        self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.wait()

    def kill(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.kill()

    def wake(self) -> None:
        if not self._wake.ready():
            self._wake.send(True)

    def keep_going(self) -> bool:
        return not self._stopping

    def _run(self) -> None:
        while not self._stopping:
            more_due = self._run_once()
            if more_due:
                continue
            with eventlet.Timeout(self.tick, False):
                self._wake.wait()
            self._wake = GreenEvent()

    def _run_once(self) -> bool:
        finished = GreenEvent()

        def handle_result(worker_ctx, result=None, exc_info=None):
            finished.send(bool(result) if exc_info is None else False)
            return result, exc_info

        try:
            self.container.spawn_worker(self, (self.keep_going,), {},
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            return False
        return finished.wait()


sending_loop = SendingLoop.decorator


class SendingLoopWaker(DependencyProvider):
    """Gives workers a `wake()` that makes the sending loop look for due mail now."""

    def get_dependency(self, worker_ctx) -> Callable[[], None]:
        return self.wake

    def wake(self) -> None:
        for entrypoint in self.container.entrypoints:
            if isinstance(entrypoint, SendingLoop):
                entrypoint.wake()
