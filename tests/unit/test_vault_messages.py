"""The author's side of the vault: writing, reading, changing and deleting messages,
owner-only access, plan limits, and what the API refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.vault.schemas import MessageChanges, NewMessage
from shared.errors import Conflict, NotFound, PaymentRequired
from shared.events.schemas import CheckInMissed
from tests.unit.vault_fixtures import START, Vault, default_switch


@pytest.fixture
def vault(tmp_path):
    vault = Vault(tmp_path)
    yield vault
    vault.close()


def fire(vault: Vault, user_id: str = "ada") -> None:
    vault.release().release_switch(CheckInMissed(
        user_id=user_id, switch_id=default_switch(user_id), cycle=1, deadline=START,
        fired_at=vault.clock.now()))


# Writing and reading -----------------------------------------------------------------------


def test_it_writes_a_message_to_the_default_switch_and_reads_it_back(vault):
    message_id = vault.write(
        subject="Passwords ✉", body="Bank: hunter2\nMail: ☂ correct horse",
        recipients=[{"name": "Grace Hopper", "email": "grace@example.org"},
                    {"name": "Émile", "email": "emile@example.fr"}],
        sender_name="Ada Lovelace", inline=True, release_delay_seconds=3600,
    )
    message = vault.messages().get("ada", message_id)
    assert message.switch_id == "default-ada"
    assert message.subject == "Passwords ✉"
    assert message.body == "Bank: hunter2\nMail: ☂ correct horse"
    assert [(r.name, r.email) for r in message.recipients] == [
        ("Grace Hopper", "grace@example.org"), ("Émile", "emile@example.fr")]
    assert message.sender_name == "Ada Lovelace"
    assert (message.inline, message.release_delay_seconds, message.state) == (True, 3600, "sealed")


def test_nothing_readable_is_stored(vault):
    vault.write(subject="Open the blue box", sender_name="Ada Lovelace",
                recipients=[{"name": "Grace Hopper", "email": "grace@example.org"}])
    stored = str(vault.repo.messages.find({}))
    for plaintext in ("Open the blue box", "4921", "Grace Hopper", "grace@example.org",
                      "Ada Lovelace", "ada@example.org"):
        assert plaintext not in stored


def test_the_list_shows_subjects_but_never_bodies(vault):
    first = vault.write(subject="First")
    vault.clock.advance(1)
    second = vault.write(subject="Second")
    listed = vault.messages().list("ada").messages
    assert [(m.id, m.subject, m.recipient_count) for m in listed] == [
        (first, "First", 1), (second, "Second", 1)]
    assert "4921" not in str(listed)
    assert vault.messages().list("nobody").messages == []


def test_a_message_goes_to_a_named_switch_of_its_author(vault):
    message_id = vault.write(switch_id="extra-ada-2")
    assert vault.messages().get("ada", message_id).switch_id == "extra-ada-2"


def test_another_users_switch_is_refused_like_a_missing_one(vault):
    with pytest.raises(NotFound) as refused:
        vault.write(switch_id="default-grace")
    assert refused.value.code == "switch_not_found"
    assert vault.repo.messages.count({}) == 0


@pytest.mark.parametrize("state", ["fired", "released"])
def test_a_switch_that_fired_takes_no_new_message_and_the_refusal_names_its_state(vault, state):
    vault.switches.fired["extra-ada-2"] = state
    vault.switches.fired["default-ada"] = state
    for switch_id in ("extra-ada-2", None):
        with pytest.raises(Conflict) as refused:
            vault.write(switch_id=switch_id)
        assert refused.value.status == 409
        assert refused.value.code == "switch_fired"
        assert refused.value.details["state"] == state
        assert f"state: {state}" in refused.value.message
    assert vault.repo.messages.count({}) == 0


def test_a_message_cannot_move_to_a_switch_that_fired(vault):
    message_id = vault.write()
    vault.switches.fired["extra-ada-2"] = "fired"
    with pytest.raises(Conflict) as refused:
        vault.messages().update("ada", "ada@example.org", message_id,
                                MessageChanges(switch_id="extra-ada-2"))
    assert refused.value.code == "switch_fired"
    assert vault.messages().get("ada", message_id).switch_id == "default-ada"


def test_another_users_message_is_a_404_like_a_message_that_does_not_exist(vault):
    message_id = vault.write("ada")
    vault.write("eve")
    for attempt in (
        lambda: vault.messages().get("eve", message_id),
        lambda: vault.messages().update("eve", "eve@example.org", message_id,
                                        MessageChanges(subject="mine now")),
        lambda: vault.messages().delete("eve", message_id),
    ):
        with pytest.raises(NotFound) as refused:
            attempt()
        with pytest.raises(NotFound) as missing:
            vault.messages().get("eve", "no-such-message")
        assert refused.value.code == missing.value.code == "message_not_found"
    assert vault.messages().get("ada", message_id).subject == "For the family"


# Changing and deleting -----------------------------------------------------------------------


def test_an_edit_seals_every_field_again_under_the_next_revision(vault):
    message_id = vault.write(recipients=[{"name": "Grace", "email": "grace@example.org"},
                                         {"name": "Alan", "email": "alan@example.org"}])
    before = vault.repo.message(message_id)
    grace_id = vault.messages().get("ada", message_id).recipients[0].id
    vault.clock.advance(60)
    changed = vault.messages().update(
        "ada", "ada@example.org", message_id,
        MessageChanges(body="New code: 7734", recipients=[
            {"name": "Grace H.", "email": "GRACE@example.org"},
            {"name": "Kurt", "email": "kurt@example.org"}]),
    )
    after = vault.repo.message(message_id)
    assert after.rev == before.rev + 1
    assert after.subject != before.subject  # re-sealed, though unchanged
    assert (changed.subject, changed.body) == ("For the family", "New code: 7734")
    assert [r.name for r in changed.recipients] == ["Grace H.", "Kurt"]
    assert changed.recipients[0].id == grace_id  # the same address keeps its recipient id
    assert changed.updated_at > changed.created_at


def test_sender_name_null_goes_back_to_the_address(vault):
    message_id = vault.write(sender_name="Ada")
    changed = vault.messages().update("ada", "ada@example.org", message_id,
                                      MessageChanges.model_validate({"sender_name": None}))
    assert changed.sender_name is None


def test_an_edit_that_loses_a_race_is_retried_on_the_fresh_revision(vault):
    message_id = vault.write()
    real = vault.repo.replace_sealed
    raced = []

    def another_edit_lands_first(doc, changes):
        if not raced:
            raced.append(True)
            vault.messages().update("ada", "ada@example.org", message_id,
                                    MessageChanges(inline=True))
        return real(doc, changes)  # the first time, our revision no longer matches

    vault.repo.replace_sealed = another_edit_lands_first
    changed = vault.messages().update("ada", "ada@example.org", message_id,
                                      MessageChanges(subject="Mine"))
    assert (changed.subject, changed.inline) == ("Mine", True)
    assert vault.repo.message(message_id).rev == 2


def test_a_released_message_can_no_longer_be_changed_or_deleted(vault):
    message_id = vault.write()
    fire(vault)
    with pytest.raises(Conflict) as refused:
        vault.messages().update("ada", "ada@example.org", message_id, MessageChanges(body="x"))
    assert refused.value.code == "message_released"
    with pytest.raises(Conflict):
        vault.messages().delete("ada", message_id)
    assert vault.messages().get("ada", message_id).body == "The code of the safe is 4921."


# Between the firing and the vault hearing of it (unbounded while the vault or the broker is
# down), the scheduler knows the switch fired: every message on it is frozen already.


@pytest.mark.parametrize("state", ["fired", "released"])
def test_a_message_on_a_switch_the_scheduler_says_fired_can_no_longer_change(vault, state):
    message_id = vault.write(recipients=[{"name": "Grace", "email": "grace@example.org"},
                                         {"name": "Alan", "email": "alan@example.org"}])
    vault.switches.fired["default-ada"] = state
    edits = [MessageChanges(body="something else"),
             MessageChanges(recipients=[{"name": "Eve", "email": "eve@example.org"}]),
             MessageChanges(switch_id="extra-ada-2")]
    for changes in edits:
        with pytest.raises(Conflict) as refused:
            vault.messages().update("ada", "ada@example.org", message_id, changes)
        assert refused.value.code == "switch_fired"
        assert refused.value.details["state"] == state
    with pytest.raises(Conflict) as refused:
        vault.messages().delete("ada", message_id)
    assert refused.value.code == "switch_fired"
    kept = vault.messages().get("ada", message_id)
    assert kept.body == "The code of the safe is 4921."
    assert [r.email for r in kept.recipients] == ["grace@example.org", "alan@example.org"]
    assert kept.switch_id == "default-ada"


def test_a_message_on_a_switch_the_vault_heard_fired_is_frozen_without_asking(vault):
    message_id = vault.write(switch_id="extra-ada-3")
    vault.release().repo.record_release({
        "_id": "extra-ada-3", "user_id": "ada", "cycle": 1, "deadline": START,
        "fired_at": START, "heard_at": START, "state": "releasing", "notify_due_at": START,
        "attempts": 0})
    vault.repo.messages.update_one({"_id": message_id}, {"$set": {"state": "sealed"}})
    vault.switches.asked.clear()
    with pytest.raises(Conflict) as refused:
        vault.messages().delete("ada", message_id)
    assert refused.value.code == "switch_fired"
    assert vault.switches.asked == []
    assert vault.repo.message(message_id) is not None


def test_a_message_on_a_live_switch_is_still_changed_and_deleted(vault):
    message_id = vault.write()
    vault.messages().update("ada", "ada@example.org", message_id, MessageChanges(body="new"))
    assert vault.messages().get("ada", message_id).body == "new"
    vault.messages().delete("ada", message_id)
    assert vault.repo.message(message_id) is None


def test_deleting_a_sealed_message_deletes_it(vault):
    message_id = vault.write()
    vault.messages().delete("ada", message_id)
    assert vault.repo.messages.count({}) == 0
    with pytest.raises(NotFound):
        vault.messages().delete("ada", message_id)


# Plan limits ----------------------------------------------------------------------------------


def test_over_the_message_limit_is_a_402_naming_it(vault):
    for _ in range(3):
        vault.write()
    with pytest.raises(PaymentRequired) as refused:
        vault.write()
    assert refused.value.code == "plan_limit_reached"
    assert refused.value.details == {"limit": "messages_per_switch", "allowed": 3, "wanted": 4,
                                     "plan": "free"}
    assert "3 messages per switch" in refused.value.message
    vault.write(switch_id="extra-ada-2")  # the limit is per switch


def test_over_the_recipient_limit_is_a_402_naming_it(vault):
    four = [{"name": f"R{n}", "email": f"r{n}@example.org"} for n in range(4)]
    with pytest.raises(PaymentRequired) as refused:
        vault.write(recipients=four)
    assert refused.value.details == {"limit": "recipients_per_message", "allowed": 3,
                                     "wanted": 4, "plan": "free"}


def test_the_body_limit_counts_utf8_bytes(vault):
    vault.write(body="é" * 5120)  # 10240 bytes: exactly the limit
    with pytest.raises(PaymentRequired) as refused:
        vault.write(body="é" * 5121)
    assert refused.value.details == {"limit": "body_bytes", "allowed": 10_240, "wanted": 10_242,
                                     "plan": "free"}


def test_two_writes_racing_past_the_check_never_exceed_the_limit(vault):
    for _ in range(2):
        vault.write()
    real_add = vault.repo.add_message

    def another_writer_stores_the_third_meanwhile(doc):
        vault.repo.messages.insert({**doc, "_id": "the-other-writers-message"})
        real_add(doc)

    vault.repo.add_message = another_writer_stores_the_third_meanwhile
    with pytest.raises(PaymentRequired):
        vault.write()
    assert vault.repo.count_in_switch("default-ada") == 3
    assert vault.repo.message("the-other-writers-message") is not None


def test_a_plan_change_moves_the_limits_and_a_stale_one_is_ignored(vault):
    assert vault.plan("ada", revision=2, messages_per_switch=1)
    assert not vault.plan("ada", revision=1, messages_per_switch=9)
    vault.write()
    with pytest.raises(PaymentRequired):
        vault.write()
    assert vault.plan("ada", revision=3, messages_per_switch=5)
    vault.write()


def test_after_a_downgrade_a_message_may_shrink_or_stay_but_not_grow(vault):
    vault.plan("ada", revision=1, recipients_per_message=5, body_bytes=100)
    five = [{"name": f"R{n}", "email": f"r{n}@example.org"} for n in range(5)]
    message_id = vault.write(recipients=five, body="x" * 100)
    # The plan lapsed: billing announces the free plan (here with a small body limit).
    vault.plan("ada", revision=2, plan="free", status="canceled", body_bytes=10)
    messages = vault.messages()
    messages.update("ada", "a@example.org", message_id, MessageChanges(subject="still fine"))
    messages.update("ada", "a@example.org", message_id, MessageChanges(recipients=five[:4]))
    with pytest.raises(PaymentRequired) as refused:
        messages.update("ada", "a@example.org", message_id, MessageChanges(recipients=five))
    assert refused.value.details["limit"] == "recipients_per_message"
    with pytest.raises(PaymentRequired):
        messages.update("ada", "a@example.org", message_id, MessageChanges(body="x" * 101))
    assert len(messages.get("ada", message_id).recipients) == 4


# What the API refuses ---------------------------------------------------------------------------

VALID = {"subject": "Hi", "body": "text", "recipients": [{"name": "G", "email": "g@example.org"}]}


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"recipients": []}, "recipients"),
        ({"recipients": [{"name": "G", "email": "not an address"}]}, "recipients.0.email"),
        ({"recipients": [{"name": "  ", "email": "g@example.org"}]}, "recipients.0.name"),
        ({"recipients": [{"name": "G", "email": "g@example.org"},
                         {"name": "H", "email": "G@EXAMPLE.org"}]}, "recipients"),
        ({"subject": "line\r\nBcc: evil@example.org"}, "subject"),
        ({"subject": ""}, "subject"),
        ({"body": "a\x00b"}, "body"),
        ({"body": "\ud800"}, "body"),
        ({"switch_id": "a b"}, "switch_id"),
        ({"release_delay_seconds": -1}, "release_delay_seconds"),
        ({"inline": "yes please"}, "inline"),
        ({"inline": 1}, "inline"),
        ({"release_delay_seconds": False}, "release_delay_seconds"),
        ({"release_delay_seconds": "60"}, "release_delay_seconds"),
        ({"subject": 42}, "subject"),
        ({"admin": True}, "admin"),
        ({"recipients": [{"name": "x" * 101, "email": "g@example.org"}]}, "recipients.0.name"),
    ],
)
def test_bad_input_is_refused_naming_the_field(changes, field):
    with pytest.raises(ValidationError) as refused:
        NewMessage.model_validate({**VALID, **changes})
    assert field in {".".join(str(p) for p in error["loc"]) for error in refused.value.errors()}


def test_text_may_be_any_unicode_with_line_breaks_in_the_body():
    message = NewMessage.model_validate({**VALID, "subject": "Für dich 💌",
                                         "body": "Zeile 1\r\n\tZeile 2 — 日本語"})
    assert message.body == "Zeile 1\r\n\tZeile 2 — 日本語"


def test_a_change_must_name_something_and_null_is_no_value():
    with pytest.raises(ValidationError, match="at least one field"):
        MessageChanges.model_validate({})
    with pytest.raises(ValidationError):
        MessageChanges.model_validate({"body": None})
    assert MessageChanges.model_validate({"body": "x"}).given("body")
