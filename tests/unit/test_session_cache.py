"""The gateway's per-worker cache of resolved sessions (gateway/sessions.py): an entry lives
its TTL and never past the session's end, the least recently used go first, an ended
session is forgotten, and nothing is served or stored while revocations may be missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.sessions import SessionCache, Sessions


class Clocks:
    """A monotonic and a wall clock that move together, by hand."""

    def __init__(self) -> None:
        self.seconds = 1_000.0
        self.epoch = datetime(2030, 6, 15, 12, 0, tzinfo=UTC).timestamp()

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> float:
        return self.epoch + self.seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


def profile(user_id: str = "user-1") -> dict:
    return {"id": user_id, "email": f"{user_id}@example.org"}


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def cache(clocks) -> SessionCache:
    made = SessionCache(10, 3, monotonic=clocks.monotonic, wall=clocks.wall)
    made.listening()
    return made


def put(cache: SessionCache, clocks: Clocks, key: str, user_id: str = "user-1",
        lasts: float = 3600) -> bool:
    return cache.put(key, profile(user_id), clocks.now() + timedelta(seconds=lasts),
                     cache.generation())


def test_a_cached_session_is_answered_until_its_ttl_ends(cache, clocks):
    assert put(cache, clocks, "s1")
    clocks.advance(9.9)
    assert cache.get("s1") == profile()
    clocks.advance(0.2)
    assert cache.get("s1") is None
    assert len(cache) == 0


def test_a_session_is_never_cached_past_its_own_expiry(cache, clocks):
    assert put(cache, clocks, "s1", lasts=3)
    clocks.advance(3)
    assert cache.get("s1") is None


def test_a_session_already_expired_is_not_cached(cache, clocks):
    assert not put(cache, clocks, "s1", lasts=0)
    assert cache.get("s1") is None


def test_the_least_recently_used_session_goes_first_when_full(cache, clocks):
    for key in ("s1", "s2", "s3"):
        put(cache, clocks, key, user_id=key)
    assert cache.get("s1")  # s1 used again: s2 is now the oldest
    put(cache, clocks, "s4", user_id="s4")
    assert len(cache) == 3
    assert cache.get("s2") is None
    assert all(cache.get(key) for key in ("s1", "s3", "s4"))


def test_a_log_out_forgets_that_session_only(cache, clocks):
    put(cache, clocks, "laptop"), put(cache, clocks, "phone"), put(cache, clocks, "x", "user-2")
    assert cache.forget("user-1", ["laptop"]) == 1
    assert cache.get("laptop") is None
    assert cache.get("phone") and cache.get("x")


def test_ending_every_session_forgets_all_of_the_users_and_nobody_elses(cache, clocks):
    put(cache, clocks, "laptop"), put(cache, clocks, "phone"), put(cache, clocks, "x", "user-2")
    assert cache.forget("user-1") == 2
    assert cache.get("laptop") is None and cache.get("phone") is None
    assert cache.get("x") == profile("user-2")


def test_an_answer_in_flight_while_a_session_was_forgotten_is_not_stored(cache, clocks):
    before = cache.generation()  # the request asks accounts...
    cache.forget("user-1")  # ...a log-out is heard meanwhile...
    stored = cache.put("s1", profile(), clocks.now() + timedelta(hours=1), before)
    assert not stored  # ...so the answer, maybe older than the log-out, is not kept
    assert cache.get("s1") is None


def test_while_revocations_may_be_missed_nothing_is_served_or_stored(cache, clocks):
    put(cache, clocks, "s1")
    cache.deaf()  # the listener lost the broker
    assert cache.get("s1") is None
    assert not put(cache, clocks, "s2")
    assert len(cache) == 0


def test_a_reconnected_listener_starts_from_an_empty_cache(cache, clocks):
    put(cache, clocks, "s1")
    cache.listening()  # (re)connected: whatever ended meanwhile must not be served
    assert cache.get("s1") is None
    assert put(cache, clocks, "s1") and cache.get("s1")


def test_a_cache_not_yet_listening_is_not_used(clocks):
    fresh = SessionCache(10, 3, monotonic=clocks.monotonic, wall=clocks.wall)
    assert not put(fresh, clocks, "s1")
    assert fresh.get("s1") is None


class Accounts:
    """Answers `resolve_session` like accounts, or refuses; counts the calls."""

    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks
        self.calls = 0
        self.refuse: Exception | None = None

    def __call__(self, service: str, method: str, token: str) -> dict:
        assert (service, method) == ("accounts", "resolve_session")
        self.calls += 1
        if self.refuse is not None:
            raise self.refuse
        return {"profile": profile(),
                "expires_at": (self.clocks.now() + timedelta(hours=1)).isoformat()}


@pytest.fixture
def asked(monkeypatch, clocks) -> Accounts:
    accounts = Accounts(clocks)
    monkeypatch.setattr("gateway.sessions.call", accounts)
    return accounts


def test_a_cached_session_asks_accounts_once(cache, asked):
    sessions = Sessions(cache)
    for _ in range(3):
        assert sessions.resolve("t" * 43) == profile()
    assert asked.calls == 1


def test_a_refused_or_failed_resolution_caches_nothing(cache, asked):
    sessions = Sessions(cache)
    asked.refuse = TimeoutError("accounts did not answer")
    with pytest.raises(TimeoutError):
        sessions.resolve("t" * 43)
    assert len(cache) == 0
    asked.refuse = None
    sessions.resolve("t" * 43)
    assert asked.calls == 2


def test_the_token_itself_is_never_kept(cache, asked):
    Sessions(cache).resolve("t" * 43)
    assert "t" * 43 not in repr(cache._entries)


def test_without_a_cache_every_request_asks_accounts(asked):
    sessions = Sessions()
    sessions.resolve("t" * 43), sessions.resolve("t" * 43)
    assert asked.calls == 2
