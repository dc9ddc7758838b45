"""A data subject request as a typed record: what is stored reads back as the same record,
and a record writes back the very document it was read from."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.privacy.records import PrivacyRequest, RequestPart
from services.privacy.schemas import ClientContext, NewPrivacyRequest
from shared.events.outbox import strip_outbox
from shared.events.schemas import ErasureCompleted
from tests.unit.privacy_fixtures import ALL, NOW, PASSWORD, PrivacyWorld

ADA = "user-ada"
ADA_EMAIL = "ada@example.org"
CLIENT = ClientContext(ip="203.0.113.9", user_agent="pytest")


@pytest.fixture
def world(tmp_path):
    world = PrivacyWorld(tmp_path)
    world.accounts.passwords[ADA] = PASSWORD
    world.accounts.users[ADA] = ADA_EMAIL
    yield world
    world.close()


def stored_document(world: PrivacyWorld, request_id: str) -> dict:
    return strip_outbox(world.repo.requests.get(request_id))


def test_a_finished_export_reads_back_as_the_record_it_was_written_from():
    export = PrivacyRequest(
        id="req-1", type="export", status="complete", subject="subject-hmac",
        reason="user", requested_by="user", created_at=NOW, due_at=NOW + timedelta(days=30),
        status_changed_at=NOW, user_id=ADA, completed_at=NOW, purge_at=NOW + timedelta(days=737),
        next_attempt_at=None, attempts=2, expires_at=NOW + timedelta(days=7), size_bytes=1234,
        sha256="ab" * 32,
        services={"vault": RequestPart(status="done", completed_at=NOW),
                  "delivery": RequestPart(status="error", detail="did not answer")},
    )
    assert PrivacyRequest.from_doc(export.to_doc()) == export
    assert export.download_open(NOW) and not export.download_open(NOW + timedelta(days=7))


def test_an_erasure_as_stored_round_trips_through_its_record(world):
    new = NewPrivacyRequest(type="erasure", password=PASSWORD)
    created = world.requests().create(ADA, ADA_EMAIL, new, CLIENT)
    world.saga().answered(ErasureCompleted(request_id=created.id, user_id=ADA,
                                           service="vault", summary={"messages": 3}))
    document = stored_document(world, created.id)
    request = PrivacyRequest.from_doc(document)

    assert request.to_doc() == document
    assert request.email == ADA_EMAIL and request.progress_token_hash
    assert request.services["vault"] == RequestPart(status="done", summary={"messages": 3},
                                                    completed_at=NOW)
    assert set(request.services) == set(ALL) and not request.every_part_done
    assert not request.overdue(NOW) and request.overdue(NOW + timedelta(days=31))


def test_an_export_as_stored_round_trips_through_its_record(world):
    created = world.requests().create(ADA, ADA_EMAIL, NewPrivacyRequest(type="export"), CLIENT)
    document = stored_document(world, created.id)

    request = PrivacyRequest.from_doc(document)

    assert request.to_doc() == document
    assert (request.next_attempt_at, request.attempts) == (NOW, 0)
    assert request.email is None, "an export keeps no address of its own"
