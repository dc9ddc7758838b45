"""Data subject requests: asked, owned, due in 30 days, in the ledger; the erasure saga
completes once every service answered, and never twice; exports are gathered whole or not
at all, sealed, downloadable by their owner until they expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nameko.testing.services import worker_factory

from services.privacy.exports import PartAnswer
from services.privacy.saga import erase_privacy_part
from services.privacy.schemas import ClientContext, NewPrivacyRequest
from services.privacy.service import PrivacyService
from shared.config import load_settings
from shared.errors import Conflict, Forbidden, Gone, NotFound, RateLimited
from shared.events import new_event, parse_event
from shared.events.schemas import ErasureCompleted
from shared.privacy import SUBJECT_KEY_PURPOSE, subject_of
from tests.unit.privacy_fixtures import ALL, NOW, PASSWORD, PrivacyWorld

ADA, BOB = "user-ada", "user-bob"
ADA_EMAIL = "ada@example.org"
CLIENT = ClientContext(ip="203.0.113.9", user_agent="pytest")


@pytest.fixture
def world(tmp_path):
    world = PrivacyWorld(tmp_path)
    yield world
    world.close()


@pytest.fixture(autouse=True)
def _passwords(world):
    world.accounts.passwords.update({ADA: PASSWORD, BOB: PASSWORD})
    world.accounts.users.update({ADA: ADA_EMAIL, BOB: "bob@example.org"})


def ask(world, user_id=ADA, **body):
    new = NewPrivacyRequest.model_validate({"type": "export", **body})
    return world.requests().create(user_id, ADA_EMAIL, new, CLIENT)


def ask_erasure(world, user_id=ADA, password=PASSWORD):
    return ask(world, user_id, type="erasure", password=password)


def answer(world, request_id, service, user_id=ADA, **summary):
    return world.saga().answered(ErasureCompleted(request_id=request_id, user_id=user_id,
                                                  service=service, summary=summary))


# Asking ---------------------------------------------------------------------------------------


def test_a_request_is_due_in_30_days_and_written_to_the_ledger(world):
    created = ask(world)
    assert created.type == "export" and created.status == "pending"
    assert created.due_at == NOW + timedelta(days=30)
    entry = world.repo.ledger.get(created.id)
    assert entry["subject"] == subject_of(world.key, ADA) != ADA
    assert (entry["type"], entry["requested_by"], entry["status"]) == ("export", "user", "pending")
    assert entry["expires_at"] == NOW + timedelta(days=730)
    assert ADA not in repr(entry) and ADA_EMAIL not in repr(entry)


def test_asking_again_answers_the_open_request_of_that_type(world):
    first = ask(world)
    assert ask(world).id == first.id
    assert ask_erasure(world).id != first.id


def test_an_erasure_needs_the_right_password(world):
    with pytest.raises(Forbidden) as refused:
        ask_erasure(world, password="not the password")
    assert refused.value.code == "password_incorrect"
    assert world.repo.requests.count({}) == 0 and world.accounts.closed == []


def test_an_erasure_is_stored_with_its_event_and_its_receipt_and_closes_the_account(world):
    created = ask_erasure(world)
    events = world.outbox("requests", created.id)
    assert [e.type for e in events] == ["ErasureRequested", "MailRequested"]
    asked, receipt = events
    assert (asked.data.user_id, asked.data.reason, asked.data.email) == (ADA, "user", ADA_EMAIL)
    assert receipt.data.kind == "privacy_erasure_received" and receipt.data.to == ADA_EMAIL
    assert receipt.data.user_id is None, "delivery's own erasure must not cancel it"
    assert "2030" in receipt.data.context["due_at"]
    assert world.accounts.closed == [ADA]
    stored = world.repo.request(created.id)
    assert set(stored.services) == set(ALL)
    assert all(part.status == "pending" for part in stored.services.values())


def test_an_erasure_goes_on_when_accounts_cannot_close_the_account_at_once(world):
    world.accounts.down = True
    assert ask_erasure(world).status == "pending"


def test_requests_are_rate_limited(world):
    for _ in range(10):
        ask(world)
    with pytest.raises(RateLimited):
        ask(world)


@pytest.mark.parametrize("body", [
    {"type": "erasure"},
    {"type": "export", "password": PASSWORD},
    {"type": "access"},
    {"type": "export", "reason": "curious"},
])
def test_a_malformed_request_is_refused(body):
    with pytest.raises(ValueError):
        NewPrivacyRequest.model_validate(body)


def test_another_users_request_is_answered_like_none(world):
    created = ask(world)
    with pytest.raises(NotFound):
        world.requests().get(BOB, created.id)
    assert world.requests().list(BOB).requests == []
    assert [r.id for r in world.requests().list(ADA).requests] == [created.id]


def test_an_operator_erases_a_childs_account_by_address(world):
    created = world.requests().erase_child(ADA_EMAIL)
    stored = world.repo.request(created.id)
    assert (stored.reason, stored.requested_by) == ("child", "operator")
    assert "email" not in world.repo.requests.get(created.id), "no receipts are mailed to a child"
    assert [e.type for e in world.outbox("requests", created.id)] == ["ErasureRequested"]
    with pytest.raises(NotFound):
        world.requests().erase_child("nobody@example.org")


# The saga -------------------------------------------------------------------------------------


def test_the_erasure_completes_when_every_service_has_answered(world):
    created = ask_erasure(world, user_id=ADA)
    for service in ALL[:-1]:
        assert answer(world, created.id, service, documents=1) == "in_progress"
    view = world.requests().get(ADA, created.id)
    assert view.services["vault"].status == "pending" and view.services["accounts"].status == "done"
    assert answer(world, created.id, "vault", data_keys=1) == "complete"

    kept = world.repo.requests.get(created.id)
    assert "user_id" not in kept and "email" not in kept, "pseudonymised when done"
    stored = world.repo.request(created.id)
    assert stored.subject == subject_of(world.key, ADA)
    assert stored.purge_at == NOW + timedelta(days=30)
    mail = world.outbox("requests", created.id)[-1]
    assert mail.data.kind == "privacy_erasure_completed" and mail.data.to == ADA_EMAIL
    entry = world.repo.ledger.get(created.id)
    assert entry["status"] == "complete" and entry["services"]["vault"]["summary"] == {
        "data_keys": 1}


def test_an_answer_given_twice_changes_nothing_and_mails_once(world):
    created = ask_erasure(world)
    for service in ALL:
        answer(world, created.id, service)
    mails = len(world.outbox("requests", created.id))
    assert answer(world, created.id, "vault") == "complete"
    assert len(world.outbox("requests", created.id)) == mails


def test_an_answer_for_an_unknown_request_is_ignored(world):
    assert answer(world, "no-such-request", "vault") is None


def test_privacys_own_part_erases_consent_and_other_requests_but_not_the_ledger(world):
    world.consents().signed_up(ADA, "2024-04-29", None, None, "e1", NOW)
    export = ask(world)
    erasure = ask_erasure(world)
    summary = erase_privacy_part(world.repo, ADA, erasure.id)
    assert summary["consents"] == 1 and summary["consent_receipts"] == 1
    assert summary["requests"] == 1
    assert world.repo.request(export.id) is None and world.repo.request(erasure.id)
    assert world.repo.ledger.get(export.id) is not None, "the ledger outlives the erasure"
    assert erase_privacy_part(world.repo, ADA, erasure.id)["consents"] == 0


# Exports ----------------------------------------------------------------------------------------


def test_an_export_holds_every_services_part_sealed_and_mails_its_link(world):
    world.parts.parts["accounts"] = {"account": {"email": ADA_EMAIL}}
    world.parts.parts["vault"] = {"messages": [{"content": {"body": "the code is 4921"}}]}
    created = ask(world)
    assert world.exports().gather_due() == 1
    stored = world.repo.request(created.id)
    assert stored.status == "complete" and stored.expires_at == NOW + timedelta(days=7)
    assert set(world.parts.asked[0][1]) == set(ALL) - {"privacy"}
    chunks = world.repo.chunks_of(created.id)
    assert chunks and b"4921" not in b"".join(chunk["data"] for chunk in chunks)
    mail = world.outbox("requests", created.id)[-1]
    assert mail.data.kind == "privacy_export_ready" and mail.data.to == ADA_EMAIL
    assert mail.data.context["link"] == "https://jic.example/app/privacy", "the site's page"

    document = world.exports().download(world.requests().owned(ADA, created.id))
    assert set(document["services"]) == set(ALL)
    assert document["services"]["vault"]["messages"][0]["content"]["body"] == "the code is 4921"
    assert document["user_id"] == ADA and document["format"] == "jicm-export/1"
    view = world.requests().get(ADA, created.id)
    assert view.download.url.endswith(f"/api/v1/privacy/requests/{created.id}/download")


def test_a_silent_service_keeps_the_export_open_and_it_is_asked_again(world):
    world.parts.problems["billing"] = PartAnswer(problem="no answer within 30 s")
    created = ask(world)
    assert world.exports().gather_due() == 0
    view = world.requests().get(ADA, created.id)
    assert view.status == "in_progress"
    assert view.services["billing"].status == "waiting"
    assert view.services["billing"].detail == "no answer within 30 s"
    assert world.repo.chunks_of(created.id) == [], "never an export with a hole"
    with pytest.raises(Conflict):
        world.exports().download(world.requests().owned(ADA, created.id))

    world.clock.advance(4)
    assert world.exports().gather_due() == 0, "not due again yet (back-off)"
    del world.parts.problems["billing"]
    world.clock.advance(2)
    assert world.exports().gather_due() == 1
    assert world.requests().get(ADA, created.id).status == "complete"


def test_a_failing_service_puts_the_export_in_error_and_it_is_still_retried(world):
    world.parts.problems["vault"] = PartAnswer(problem="the vault service failed", failed=True)
    created = ask(world)
    world.exports().gather_due()
    view = world.requests().get(ADA, created.id)
    assert view.status == "error" and view.services["vault"].status == "error"
    world.parts.problems.clear()
    world.clock.advance(10)
    world.exports().gather_due()
    assert world.requests().get(ADA, created.id).status == "complete"


def test_a_finished_export_expires_410_and_its_chunks_go_with_it(world):
    created = ask(world)
    world.exports().gather_due()
    world.clock.advance(days=7, seconds=1)
    with pytest.raises(Gone):
        world.exports().download(world.requests().owned(ADA, created.id))
    assert world.requests().get(ADA, created.id).download is None
    assert world.repo.export_chunks.purge_expired(world.clock.now()) >= 1
    assert world.repo.chunks_of(created.id) == []


def test_an_altered_chunk_does_not_open(world):
    created = ask(world)
    world.exports().gather_due()
    [chunk] = world.repo.chunks_of(created.id)
    forged = bytearray(chunk["data"])
    forged[-1] ^= 1
    world.repo.export_chunks.update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(forged)}})
    with pytest.raises(Gone):
        world.exports().download(world.requests().owned(ADA, created.id))


def test_an_erasure_has_nothing_to_download(world):
    created = ask_erasure(world)
    with pytest.raises(NotFound):
        world.exports().download(world.requests().owned(ADA, created.id))


def test_an_export_whose_owner_was_erased_meanwhile_leaves_no_chunks(world):
    created = ask(world)
    doc = world.repo.due_exports(world.clock.now(), 5)[0]
    claimed = world.repo.claim_export(doc, world.clock.now() + timedelta(seconds=60),
                                      world.clock.now())
    world.repo.requests.delete_one({"_id": created.id})  # privacy's part of an erasure
    assert world.exports().gather(claimed) is False
    assert world.repo.chunks_of(created.id) == []


def test_a_late_event_never_brings_back_the_consent_of_an_erased_person(world, tmp_path):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data")})
    world.key = settings.derived_key(SUBJECT_KEY_PURPOSE)
    created = ask_erasure(world)
    erase_privacy_part(world.repo, ADA, created.id)
    service = worker_factory(PrivacyService, store=world.repo, settings=settings,
                             clock=world.clock)
    late = parse_event(new_event("Unsubscribed", {"user_id": ADA, "source": "one_click"},
                                 producer="delivery", now=NOW))
    service.on_unsubscribed(late)
    assert world.repo.consent(ADA) is None
    bob_unsubscribed = parse_event(new_event("Unsubscribed", {"user_id": BOB,
                                                              "source": "one_click"},
                                             producer="delivery", now=NOW))
    service.on_unsubscribed(bob_unsubscribed)
    assert world.repo.consent(BOB)["marketing"]["email"] is False
