"""One attempt never outlives the claim it holds: against a server that answers every
command just inside SMTP_TIMEOUT (so that the whole conversation takes longer than the
claim), the attempt is cut off before its claim ends, and no second sender that takes the
mail over after the claim can get the same mail accepted twice."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from services.delivery.pipeline import Pipeline, attempt_budget
from services.delivery.smtp import SmtpSession, SmtpTransport
from shared.clock import SystemClock
from tests.unit.delivery_fixtures import Mailer

pytestmark = pytest.mark.fault

TIMEOUT = 1.0
LEASE = 4 * TIMEOUT  # the shortest lease the configuration allows
PAUSE = 0.8 * TIMEOUT  # every reply comes just inside the timeout


class DrippingServer:
    """An SMTP server that waits PAUSE before each reply, and counts the mail it accepted
    (the final 250 after the data written out in full)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _reply(self, conn: socket.socket, line: bytes) -> None:
        time.sleep(PAUSE)
        conn.sendall(line + b"\r\n")

    def _talk(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            try:
                self._reply(conn, b"220 drip.example ESMTP")
                for raw in lines:
                    command = raw.strip().upper()
                    if command.startswith((b"EHLO", b"HELO")):
                        self._reply(conn, b"250 drip.example")
                    elif command == b"DATA":
                        self._reply(conn, b"354 go ahead")
                        for data in lines:
                            if data in (b".\r\n", b".\n"):
                                break
                        self._reply(conn, b"250 accepted")
                        self.accepted += 1
                    elif command == b"QUIT":
                        self._reply(conn, b"221 bye")
                        return
                    else:
                        self._reply(conn, b"250 ok")
            except OSError:
                return  # the client hung up: nothing after this point was accepted

    def stop(self) -> None:
        self._stopping = True
        self.sock.close()


@pytest.fixture
def server():
    s = DrippingServer()
    yield s
    s.stop()


def test_an_attempt_longer_than_its_claim_is_cut_off_and_never_sent_twice(repo, tmp_path,
                                                                         server):
    m = Mailer(repo, SystemClock(), tmp_path, server.port, SMTP_TIMEOUT=str(TIMEOUT),
               JICM_DELIVERY_LEASE=str(LEASE), JICM_DELIVERY_RETRY_BASE="600",
               JICM_DELIVERY_RETRY_CAP="600")
    m.request()

    def send_due():
        transport = SmtpTransport.from_settings(m.settings)
        Pipeline(repo, m.settings, m.seal, m.clock, lambda: SmtpSession(transport)).send_due()

    # Greeting, EHLO, MAIL, RCPT, DATA, end of data: six replies of PAUSE each outlast LEASE.
    assert 6 * PAUSE > LEASE > attempt_budget(LEASE)
    first = threading.Thread(target=send_due)
    first.start()
    # A second sender looks for due mail all along, as another delivery process would: it
    # could only take the mail over if the first attempt outlived its claim.
    while first.is_alive():
        send_due()
        time.sleep(0.05)
    first.join()
    # Cut off before the server's final reply (which would come after 6 x PAUSE): nothing
    # was accepted, and the mail waits for its next attempt, sent by one sender only.
    assert server.accepted == 0
    record = repo.deliveries.find_one({})
    assert (record["state"], record["attempts"]) == ("retrying", 1)
    assert "deadline" in record["last_error"]


def test_the_budget_leaves_room_to_record_the_outcome_within_the_claim():
    for lease in (4.0, 30.0, 150.0, 600.0):
        assert 0 < attempt_budget(lease) < lease
    assert attempt_budget(150.0) == 140.0
