"""The operator command: list mail that failed for good, and send it again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jicm.cli import main
from services.delivery.storage import INDEXES, DeliveryRepository
from shared.storage.provider import open_store

WHEN = datetime(2020, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("JICM_ENV", "test")
    monkeypatch.setenv("JICM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MONGO_URI", raising=False)
    db = open_store("delivery", INDEXES, data_dir=tmp_path / "data")
    repo = DeliveryRepository(db)
    yield repo
    db.close()


def record(repo, record_id: str, state: str, **extra) -> None:
    repo.deliveries.insert({
        "_id": record_id, "kind": "reminder", "reference": f"switch:1:{record_id}",
        "recipient": "ada@example.org", "recipient_key": "ada@example.org", "state": state,
        "attempts": 3, "created_at": WHEN, "queued_at": WHEN, "context_sealed": b"x",
        "resends": 0, **extra,
    })


def test_failed_lists_each_failed_mail_with_its_reason(repo, capsys):
    record(repo, "a" * 32, "failed", failed_at=WHEN, last_error="RCPT: 550 mailbox unavailable")
    record(repo, "b" * 32, "sent")
    assert main(["mail", "failed"]) == 0
    out = capsys.readouterr().out
    assert "a" * 32 in out and "b" * 32 not in out
    assert "RCPT: 550 mailbox unavailable" in out
    assert "ada@example.org" in out


def test_resend_queues_a_failed_mail_afresh_and_only_once(repo, capsys):
    record(repo, "a" * 32, "failed", failed_at=WHEN)
    assert main(["mail", "resend", "a" * 32]) == 0
    again = repo.get("a" * 32)
    assert again["state"] == "queued"
    assert again["attempts"] == 0
    assert again["resends"] == 1
    assert again["next_attempt_at"] > WHEN
    assert main(["mail", "resend", "a" * 32]) == 1
    assert "has not failed" in capsys.readouterr().err
    assert repo.get("a" * 32)["resends"] == 1


def test_resend_all_queues_every_failed_mail_and_nothing_else(repo):
    record(repo, "a" * 32, "failed")
    record(repo, "b" * 32, "failed")
    record(repo, "c" * 32, "sent")
    assert main(["mail", "resend", "--all"]) == 0
    assert [repo.get(i)["state"] for i in ("a" * 32, "b" * 32, "c" * 32)] == [
        "queued", "queued", "sent"]


def test_resend_needs_ids_or_all(repo):
    with pytest.raises(SystemExit):
        main(["mail", "resend"])


def test_pending_lists_mail_still_waiting_with_its_last_error_by_kind(repo, capsys):
    record(repo, "a" * 32, "retrying", kind="released_message", reference="message-1",
           next_attempt_at=WHEN, last_error="MAIL: 451 try again later")
    record(repo, "b" * 32, "queued", next_attempt_at=WHEN)
    record(repo, "c" * 32, "sent", kind="released_message")
    assert main(["mail", "pending", "--kind", "released_message"]) == 0
    out = capsys.readouterr().out
    assert "a" * 32 in out and "b" * 32 not in out and "c" * 32 not in out
    assert "reference message-1, retrying" in out
    assert "451 try again later" in out
    assert main(["mail", "pending"]) == 0
    out = capsys.readouterr().out
    assert "a" * 32 in out and "b" * 32 in out
    repo.deliveries.update_many({}, {"$set": {"state": "sent"}})
    assert main(["mail", "pending"]) == 0
    assert "no mail is waiting" in capsys.readouterr().out
