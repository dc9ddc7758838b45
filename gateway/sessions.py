"""Resolving a request's session: from a short-lived cache in this worker, or from accounts.

Asking accounts on every request doubles the RPCs of every authenticated call. Each
gunicorn worker therefore keeps a small cache of the sessions it resolved:

- keyed by the session's id (`services.accounts.sessions.session_id`, the SHA-256 of the
  token, the key accounts stores the session under): the token itself is never kept;
- an entry lives `JICM_SESSION_CACHE_SECONDS` at most, and never past the session's own
  expiry; at most `JICM_SESSION_CACHE_SIZE` entries, the least recently used go first;
- only what accounts answered for a live session is cached: a refusal or a failed RPC
  caches nothing.

Revocation is pushed, not waited for: accounts announces `AccountChanged` (a broadcast,
shared/events/broadcast.py) in the same write that ends a session or changes a profile,
and a daemon thread in every worker (`RevocationListener`) hears it through a queue of
its own and forgets that user's entries. Every worker of every replica hears every
broadcast, so a log-out, a password change or reset, or a closed account stops working
everywhere within moments. The cache is trusted only while that thread is connected:

- until it has bound its queue, and whenever the connection drops, the cache answers
  nothing and stores nothing (every request asks accounts, as if there were no cache);
- each time it (re)connects, the cache starts empty, so nothing missed while it was
  away can be served;
- an answer that was on its way while an entry was forgotten is not stored (a
  generation count taken before the RPC must still match), so a revocation that crosses
  a request in flight cannot be undone by it.

The thread is started lazily in the process that serves requests (gunicorn's worker,
after the fork), and again should that process be a fork of the one that started it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kombu import Connection, Consumer, Message
from prometheus_client import Gauge

from gateway.remote import call
from services.accounts.sessions import session_id
from shared.config import Settings
from shared.events.broadcast import BROADCAST_EXCHANGE, listener_queue
from shared.events.envelope import MalformedEvent, parse_event

log = logging.getLogger(__name__)

HEARD = ("AccountChanged",)
CONNECTION_NAME = "gateway-sessions"  # shown in RabbitMQ's management UI
HEARTBEAT_SECONDS = 10
POLL_SECONDS = 1.0
RECONNECT_SECONDS = (0.5, 30.0)  # first and longest wait between attempts

# One value per live worker (`pid` label): an operator sees each worker's cache.
CACHED = Gauge("jicm_gateway_sessions_cached", "sessions this gateway worker holds resolved",
               multiprocess_mode="liveall")
LISTENING = Gauge("jicm_gateway_session_revocations_listening",
                  "1 while this gateway worker hears session revocations (its cache is in use)",
                  multiprocess_mode="liveall")


@dataclass(frozen=True)
class CachedSession:
    profile: dict[str, Any]
    user_id: str
    good_until: float  # on the monotonic clock


class SessionCache:
    """Resolved sessions of one worker: thread-safe, bounded, short-lived, off until told
    that revocations are heard (`listening`)."""

    def __init__(self, ttl: float, max_entries: int, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, CachedSession] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._generation = 0
        self._in_use = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_use(self) -> bool:
        return self._in_use

    def generation(self) -> int:
        """Take before asking accounts; `put` stores the answer only if nothing was forgotten
        in between."""
        return self._generation

    def get(self, key: str) -> dict[str, Any] | None:
        """The profile cached for session `key`, or None (also whenever the cache is off)."""
        with self._lock:
            if not self._in_use:
                return None
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.good_until <= self._monotonic():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return dict(entry.profile)  # each request its own copy

    def put(self, key: str, profile: dict[str, Any], expires_at: datetime,
            generation: int) -> bool:
        """Cache what accounts answered for session `key`, for the TTL or until the session
        ends, whichever is sooner. False if not stored."""
        with self._lock:
            life = min(self.ttl, expires_at.timestamp() - self._wall())
            if not self._in_use or generation != self._generation or life <= 0:
                return False
            self._drop(key)
            self._entries[key] = CachedSession(profile, profile["id"], self._monotonic() + life)
            self._by_user.setdefault(profile["id"], set()).add(key)
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))
            self._count()
            return True

    def forget(self, user_id: str, sessions: list[str] | None = None) -> int:
        """Forget the listed sessions of `user_id` (None: all of them). Returns how many."""
        with self._lock:
            self._generation += 1
            keys = self._by_user.get(user_id, set())
            doomed = [key for key in keys if sessions is None or key in sessions]
            for key in doomed:
                self._drop(key)
            self._count()
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._by_user.clear()
            self._count()

    def listening(self) -> None:
        """Revocations are heard from now on: start empty, then trust the cache."""
        self.clear()
        self._in_use = True
        LISTENING.set(1)

    def deaf(self) -> None:
        """Revocations may be missed: stop using the cache and empty it."""
        self._in_use = False
        LISTENING.set(0)
        self.clear()

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        keys = self._by_user.get(entry.user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[entry.user_id]

    def _count(self) -> None:
        CACHED.set(len(self._entries))


class RevocationListener:
    """A daemon thread that hears `AccountChanged` broadcasts and forgets cached sessions;
    reconnects for ever, with back-off, and keeps the cache off while it is not connected."""

    def __init__(self, amqp_uri: str, cache: SessionCache) -> None:
        self.amqp_uri = amqp_uri
        self.cache = cache
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound = False

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="session-revocations",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        wait = RECONNECT_SECONDS[0]
        while not self._stopping.is_set():
            self._bound = False
            try:
                self._listen()
            except Exception as exc:  # any broker trouble: the cache goes off, then retry
                log.warning("session revocations: not connected to the broker (%s); "
                            "resolving every session with accounts until reconnected", exc)
            finally:
                self.cache.deaf()
            # A connection that worked was lost: try again soon. Failing to connect: back off.
            wait = RECONNECT_SECONDS[0] if self._bound else min(wait * 2, RECONNECT_SECONDS[1])
            self._stopping.wait(wait)

    def _listen(self) -> None:
        with Connection(self.amqp_uri, heartbeat=HEARTBEAT_SECONDS, connect_timeout=5,
                        transport_options={"client_properties":
                                           {"connection_name": CONNECTION_NAME}}) as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            BROADCAST_EXCHANGE(channel).declare()
            queue = listener_queue(HEARD)(channel)
            queue.declare()
            # Declared once above: the broker named it, and a second declaration of an
            # `amq.gen-` name would be refused.
            with Consumer(channel, queues=[queue], callbacks=[self._on_message], no_ack=True,
                          accept=["json"], auto_declare=False):
                # Bound first, trusted after: whatever ends from now on is heard, and
                # whatever ended before is not in the (emptied) cache.
                self.cache.listening()
                self._bound = True
                log.info("session revocations: listening on %s", queue.name)
                while not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):  # idle: nothing to forget
                        conn.drain_events(timeout=POLL_SECONDS)
                    # Every turn, busy or idle: this connection sends nothing else, and a
                    # broker that hears no heartbeat from it would close it.
                    conn.heartbeat_check()

    def _on_message(self, body: Any, message: Message) -> None:
        try:
            event = parse_event(body)
        except MalformedEvent as exc:
            # Whatever it meant to revoke, forgetting everything is the safe reading.
            log.warning("session revocations: malformed broadcast (%s); cache emptied", exc)
            self.cache.clear()
            return
        data = event.data
        forgotten = self.cache.forget(data.user_id, data.sessions)
        log.debug("session revocations: %s (%s) forgot %d session(s)", event.type,
                  data.reason, forgotten)


class Sessions:
    """What the gateway's authentication asks: the profile behind a token."""

    def __init__(self, cache: SessionCache | None = None,
                 listener: RevocationListener | None = None) -> None:
        self.cache = cache
        self.listener = listener
        self._started_in: int | None = None
        self._start_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Sessions:
        """Cached as the settings say (`JICM_SESSION_CACHE_SECONDS` 0: no cache)."""
        if settings.session_cache_seconds <= 0:
            return cls()
        cache = SessionCache(settings.session_cache_seconds, settings.session_cache_size)
        return cls(cache, RevocationListener(settings.amqp_uri, cache))

    def resolve(self, token: str) -> dict[str, Any]:
        """The signed-in user's profile for `token`; AuthenticationFailed from accounts
        when it is not a live session."""
        if self.cache is None:
            return call("accounts", "resolve_session", token)["profile"]
        self._listen_in_this_process()
        key = session_id(token)
        profile = self.cache.get(key)
        if profile is not None:
            return profile
        generation = self.cache.generation()
        resolved = call("accounts", "resolve_session", token)
        self.cache.put(key, resolved["profile"], datetime.fromisoformat(resolved["expires_at"]),
                       generation)
        return resolved["profile"]

    def forget_user(self, user_id: str) -> None:
        """This worker forgets the user's sessions at once, without waiting for the
        broadcast (which tells every other worker): for the requests that end them."""
        if self.cache is not None:
            self.cache.forget(user_id)

    def _listen_in_this_process(self) -> None:
        # A thread does not survive fork(): a worker forked from the process that started
        # the listener (gunicorn --preload) starts its own.
        if self.listener is None or self._started_in == os.getpid():
            return
        with self._start_lock:
            if self._started_in != os.getpid():
                self.cache.deaf()
                self.listener.start()
                self._started_in = os.getpid()
