"""Delivery killed in the middle of a batch: every mail still arrives, and none twice.

The parts run as `make run` runs them (`default_specs`), except that the SMTP sink takes
its time over each message (`--slow-data`), like a real server busy with DATA, so that
the kill lands in the middle of an SMTP conversation. The sink, like a real server, stores
nothing of a conversation its client abandoned before the end.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.local.smtp_sink import mail_files, read_mail
from deploy.local.supervisor import Supervisor, default_specs
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcError
from tests.e2e.conftest import system_environment
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

MAILS = 12
SLOW_DATA = "1.0"
# A conversation begun this recently is still far from the sink's answer.
FRESH = timedelta(seconds=0.6)


@pytest.fixture
def parts(tmp_path, vhost) -> Iterator[tuple[Supervisor, dict, Path]]:
    env = system_environment(tmp_path, vhost, "delivery", JICM_DELIVERY_TICK="0.2",
                             SMTP_TIMEOUT="2.5", JICM_DELIVERY_LEASE="12")
    specs = {spec.name: spec for spec in default_specs(env)}
    sink = dataclasses.replace(specs["smtp"],
                               argv=[*specs["smtp"].argv, "--slow-data", SLOW_DATA])
    supervisor = Supervisor([sink, specs["delivery"]], env=env, log_dir=tmp_path / "logs")
    for name in ("smtp", "delivery"):
        supervisor.start(name)
        supervisor.wait_ready(name)
    yield supervisor, env, tmp_path / "logs"
    supervisor.stop_all()


def states(env: dict) -> dict[str, str]:
    return {record_id: state for record_id, (state, _) in attempts(env).items()}


def attempts(env: dict) -> dict[str, tuple[str, datetime | None]]:
    """Each record's state and when its latest attempt began."""
    path = Path(env["JICM_DATA_DIR"]) / "delivery.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, json_extract(doc, '$.state'), "
                          "json_extract(doc, '$.last_attempt_at.\"$date\"') "
                          "FROM deliveries").fetchall()
    return {record_id: (state, datetime.fromisoformat(at) if at else None)
            for record_id, state, at in rows}


def test_delivery_killed_mid_batch_and_restarted_delivers_every_mail_exactly_once(parts):
    supervisor, env, logs = parts
    rpc = RpcClientPool(env["AMQP_URI"], size=1, timeout=20)
    try:
        wait_for(lambda: _answers(rpc), timeout=30, what="delivery to answer RPC")
        ids = [rpc.call("delivery", "send", "verification", f"batch-{n}",
                        f"person{n}@example.org",
                        {"link": "http://127.0.0.1/verify?token=t", "expires_at": "soon"})["id"]
               for n in range(MAILS)]
    finally:
        rpc.close()
    maildir = Path(env["JICM_MAILDIR"])

    # Wait until a few mails are through and the next ones are in their SMTP conversations,
    # each begun so recently that the sink is still holding back its answer (it waits
    # SLOW_DATA before storing), and every mail it stored recorded as sent. Delivery talks
    # to the server over several connections at once; a kill right after the server's
    # yes and before the record is the other case: that mail is sent again, with the same
    # Message-ID, for the receiving side to recognise.
    def mid_conversation() -> bool:
        current = attempts(env)
        sent = sum(state == "sent" for state, _ in current.values())
        begun = [at for state, at in current.values() if state == "sending"]
        now = datetime.now(UTC)
        return (sent >= 3 and bool(begun) and all(now - at < FRESH for at in begun)
                and len(mail_files(maildir)) == sent)

    wait_for(mid_conversation, timeout=30, interval=0.01, what="a mail in mid-conversation")
    supervisor.kill("delivery")
    interrupted = [i for i, s in states(env).items() if s == "sending"]
    assert interrupted, "the kill landed between two mails; the test wants it mid-conversation"
    assert len(read_mail(maildir)) < MAILS

    supervisor.start("delivery")
    wait_for(lambda: len(read_mail(maildir)) >= MAILS, timeout=60, interval=0.1,
             what="every mail to arrive")
    wait_for(lambda: set(states(env).values()) == {"sent"}, timeout=30)
    message_ids = Counter(mail["Message-ID"] for mail in read_mail(maildir))
    assert message_ids == Counter({f"<{i}@justincase.example>": 1 for i in ids})
    log = (logs / "delivery.log").read_text()
    assert "interrupted mid-attempt" in log
    assert interrupted[0] in log


def _answers(rpc: RpcClientPool) -> bool:
    try:
        rpc.call("delivery", "health", timeout=2)
    except RpcError:
        return False
    return True
