"""The benchmarks' load generator (bench/load.py, wrk with bench/load.lua) sends each
request as the next of many users, each with its own token and address, so a per-user
rate limit is never what a benchmark measures; and what the server refused is counted
as an error, not as throughput."""

from __future__ import annotations

import shutil
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import STATUS_ERRORS, User, drive

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make wrk)"),
]


class Recorder(ThreadingHTTPServer):
    """An HTTP server that answers 200 (or 429 to `refused`) and remembers who asked."""

    daemon_threads = True

    def __init__(self, refused: str = "") -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.refused = refused
        self.lock = threading.Lock()
        self.seen: Counter[tuple[str, str]] = Counter()
        self.bodies: set[bytes] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1/checkins"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects

    def do_POST(self) -> None:
        server = self.server
        assert isinstance(server, Recorder)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        who = (self.headers.get("Authorization", ""), self.headers.get("X-Forwarded-For", ""))
        with server.lock:
            server.seen[who] += 1
            server.bodies.add(body)
        status = 429 if server.refused and who[0].endswith(server.refused) else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@pytest.fixture
def server() -> Iterator[Recorder]:
    yield from _serve(Recorder())


@pytest.fixture
def refusing_server() -> Iterator[Recorder]:
    yield from _serve(Recorder(refused="token-0"))


def _serve(recorder: Recorder) -> Iterator[Recorder]:
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.shutdown()
        recorder.server_close()


def users(count: int) -> list[User]:
    return [User(token=f"token-{n}", address=f"10.0.0.{n + 1}") for n in range(count)]


def test_each_request_goes_as_the_next_user_with_their_own_token_and_address(server):
    senders = users(12)
    case = drive("spread", server.url, connections=4, seconds=1, method="POST", body="{}",
                 users=senders)

    expected = {(f"Bearer {u.token}", u.address) for u in senders}
    assert set(server.seen) == expected, "every user sent, each always from their own address"
    per_thread: dict[int, list[int]] = defaultdict(list)
    for n, user in enumerate(senders):
        per_thread[n % 2].append(server.seen[(f"Bearer {user.token}", user.address)])
    for counts in per_thread.values():  # in turn within a thread's share: evenly spread
        assert max(counts) - min(counts) <= 4
    assert server.bodies == {b"{}"}
    assert case.operations > 0 and not case.errors
    assert case.operations <= sum(server.seen.values())
    assert case.latency()["p99"] is not None and case.ops_per_s > 0


def test_what_the_server_refused_counts_as_errors_not_as_throughput(refusing_server):
    case = drive("refused", refusing_server.url, connections=2, seconds=1, method="POST",
                 body="{}", users=users(2))

    assert case.errors[STATUS_ERRORS] > 0
    assert case.succeeded == case.operations - case.errors[STATUS_ERRORS]
