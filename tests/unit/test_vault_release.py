"""The release, step by step on a real store: marking a fired switch's messages released,
handing them to delivery exactly once, reading them back, crypto-shredding, and the
KEK rotation."""

from __future__ import annotations

import os
from contextlib import nullcontext
from datetime import timedelta

import pytest

from jicm.cli import main as jicm
from services.vault.crypto import DecryptionFailed
from services.vault.erasure import erase_user
from services.vault.key_rotation import describe_rotation, keys_to_rotate, rotate
from services.vault.keys import Kek, Keyring, MissingDataKey
from services.vault.release import release_event_id
from services.vault.schemas import MessageChanges
from services.vault.sealed_fields import Sealer
from shared.errors import Conflict, Forbidden, NotFound, RateLimited
from shared.events import parse_event
from shared.events.schemas import CheckInMissed
from tests.unit.vault_fixtures import START, Vault, default_switch

TWO = [{"name": "Grace", "email": "grace@example.org"}, {"name": "Alan", "email": "alan@ex.org"}]


@pytest.fixture
def vault(tmp_path):
    vault = Vault(tmp_path)
    yield vault
    vault.close()


def missed(vault: Vault, user_id: str = "ada", cycle: int = 4) -> CheckInMissed:
    return CheckInMissed(user_id=user_id, switch_id=default_switch(user_id), cycle=cycle,
                         deadline=START, fired_at=vault.clock.now())


def released_events(vault: Vault) -> list:
    return [parse_event(envelope) for envelope in vault.published.envelopes]


# Marking -------------------------------------------------------------------------------


def test_a_fired_switch_releases_its_messages_and_only_its_own(vault):
    mine = [vault.write(), vault.write(recipients=TWO)]
    other_switch = vault.write(switch_id="extra-ada-2")
    someone_else = vault.write("eve")
    assert vault.release().release_switch(missed(vault)) == 2
    states = {doc["_id"]: doc["state"] for doc in vault.repo.messages.find({})}
    assert [states[m] for m in mine] == ["released", "released"]
    assert states[other_switch] == states[someone_else] == "sealed"


def test_a_switch_id_of_another_user_releases_nothing(vault):
    vault.write("ada")
    forged = CheckInMissed(user_id="eve", switch_id="default-ada", cycle=1, deadline=START,
                           fired_at=START)
    assert vault.release().release_switch(forged) == 0
    assert vault.repo.switch_counts("default-ada")["sealed"] == 1


def test_check_in_missed_twice_releases_once(vault):
    vault.write()
    assert vault.release().release_switch(missed(vault)) == 1
    assert vault.release().release_switch(missed(vault)) == 0
    vault.release().dispatch_due(vault.published)
    vault.release().release_switch(missed(vault))
    assert vault.release().dispatch_due(vault.published) == 0
    assert len(vault.published.envelopes) == 1


def test_two_workers_releasing_the_same_switch_at_once_release_each_message_once(vault):
    vault.write()
    real_mark = vault.repo.mark_released
    other_worker = []

    def the_other_worker_gets_there_first(message, release):
        if not other_worker:
            other_worker.append("running")
            vault.repo.mark_released = real_mark
            other_worker.append(vault.release().release_switch(missed(vault)))
        return real_mark(message, release)  # our read is stale now: this must not match

    vault.repo.mark_released = the_other_worker_gets_there_first
    assert vault.release().release_switch(missed(vault)) == 0
    assert other_worker == ["running", 1]
    vault.release().dispatch_due(vault.published)
    [event] = released_events(vault)
    token = event.data.recipients[0].read_token
    assert vault.release().read_released(token, None).subject == "For the family"
    assert vault.repo.read_tokens.count({}) == 1


def stand_alone_writes(vault: Vault) -> None:
    """Keep each write of a group as it lands, as MongoDB does (SQLite keeps none of a group
    that did not end): the harder case for what a crash leaves behind."""
    vault.repo.grouped_writes = nullcontext


def test_a_crash_in_the_middle_of_a_release_keeps_none_of_it_on_sqlite(vault):
    vault.write(), vault.write()
    real_mark = vault.repo.mark_released
    calls = []

    def crash_before_the_second(message, release):
        calls.append(message.id)
        if len(calls) == 2:
            raise RuntimeError("the process died here")
        return real_mark(message, release)

    vault.repo.mark_released = crash_before_the_second
    with pytest.raises(RuntimeError):
        vault.release().release_switch(missed(vault))
    assert vault.repo.switch_counts("default-ada") == {"sealed": 2, "released": 0, "waiting": 0}
    assert vault.repo.read_tokens.count({}) == 0
    assert vault.repo.release_of("default-ada") is None
    vault.repo.mark_released = real_mark
    assert vault.release().release_switch(missed(vault)) == 2


def test_a_crash_between_two_messages_is_finished_by_the_retry_exactly_once(vault):
    first, second = vault.write(), vault.write()
    real_mark = vault.repo.mark_released
    crashed = []

    def crash_before_the_second(message, release):
        if message.id == second and not crashed:
            crashed.append(True)
            raise RuntimeError("the process died here")
        return real_mark(message, release)

    vault.repo.mark_released = crash_before_the_second
    stand_alone_writes(vault)
    with pytest.raises(RuntimeError):
        vault.release().release_switch(missed(vault))
    assert vault.repo.switch_counts("default-ada") == {"sealed": 1, "released": 1, "waiting": 1}
    vault.release().dispatch_due(vault.published)  # the first leaves meanwhile
    assert vault.release().release_switch(missed(vault)) == 1  # the retry
    vault.release().dispatch_due(vault.published)
    assert sorted(e.data.message_id for e in released_events(vault)) == sorted([first, second])


def test_a_crash_after_minting_tokens_leaves_none_that_open_anything(vault):
    message_id = vault.write()
    real_mark = vault.repo.mark_released

    def die_before_marking(doc, release):
        raise RuntimeError("the process died here")

    vault.repo.mark_released = die_before_marking
    stand_alone_writes(vault)
    with pytest.raises(RuntimeError):
        vault.release().release_switch(missed(vault))
    [orphan] = vault.repo.read_tokens.find({})
    vault.repo.mark_released = real_mark
    vault.release().release_switch(missed(vault))
    assert vault.repo.read_token(orphan["_id"]) is None, "the retry cleans up after the crash"
    assert vault.repo.read_tokens.count({"message_id": message_id}) == 1


def test_an_edit_racing_the_release_is_released_at_its_new_revision(vault):
    message_id = vault.write()
    real_mark = vault.repo.mark_released
    raced = []
    # An edit that found the switch live just before it fired, and lands now.
    in_flight = vault.messages()
    in_flight._require_live_switch = lambda user_id, switch_id: None

    def edit_lands_first(message, release):
        if not raced:
            raced.append(True)
            in_flight.update("ada", "ada@example.org", message_id,
                             MessageChanges(body="the last word"))
        return real_mark(message, release)

    vault.repo.mark_released = edit_lands_first
    assert vault.release().release_switch(missed(vault)) == 1
    vault.release().dispatch_due(vault.published)
    [event] = released_events(vault)
    token = event.data.recipients[0].read_token
    assert vault.release().read_released(token, None).body == "the last word"


def test_an_edit_asked_for_once_the_release_began_is_refused_and_changes_nothing(vault):
    message_id = vault.write()
    real_mark = vault.repo.mark_released
    refused = []

    def edit_arrives(message, release):
        with pytest.raises(Conflict) as refusal:
            vault.messages().update("ada", "ada@example.org", message_id,
                                    MessageChanges(body="too late"))
        refused.append(refusal.value.code)
        return real_mark(message, release)

    vault.repo.mark_released = edit_arrives
    assert vault.release().release_switch(missed(vault)) == 1
    assert refused == ["switch_fired"]
    vault.release().dispatch_due(vault.published)
    [event] = released_events(vault)
    token = event.data.recipients[0].read_token
    assert vault.release().read_released(token, None).body == "The code of the safe is 4921."


# Dispatching -----------------------------------------------------------------------------


def test_each_released_message_becomes_one_event_with_addresses_and_tokens_but_no_text(vault):
    message_id = vault.write(recipients=TWO, sender_name="Ada Lovelace", inline=True)
    vault.release().release_switch(missed(vault, cycle=4))
    assert vault.release().dispatch_due(vault.published) == 1
    [envelope] = vault.published.envelopes
    event = parse_event(envelope)
    assert event.event_id == release_event_id(message_id, 4)
    assert event.data.message_id == message_id
    assert event.data.switch_id == "default-ada"
    assert event.data.sender_name == "Ada Lovelace (ada@example.org)"
    assert event.data.inline is True
    assert [(r.name, r.email) for r in event.data.recipients] == [
        ("Grace", "grace@example.org"), ("Alan", "alan@ex.org")]
    tokens = [r.read_token for r in event.data.recipients]
    assert len(set(tokens)) == 2 and all(len(t) >= 40 for t in tokens)
    assert "4921" not in str(envelope) and "For the family" not in str(envelope)
    stored = str(vault.repo.messages.find({})) + str(vault.repo.read_tokens.find({}))
    assert not any(token in stored for token in tokens), "tokens rest only as hashes"


def test_a_crash_between_publishing_and_marking_publishes_the_same_event_again(vault):
    vault.write()
    vault.release().release_switch(missed(vault))
    vault.repo.finish_dispatch = lambda doc, now: None  # the process died after the publish
    vault.release().dispatch_due(vault.published)
    vault.clock.advance(31)  # its claim expires
    del vault.repo.finish_dispatch
    vault.release().dispatch_due(vault.published)
    first, again = released_events(vault)
    assert first.event_id == again.event_id, "consumers will recognise and skip the copy"
    assert first.data.recipients == again.data.recipients, "the same links, too"
    vault.clock.advance(60)
    assert vault.release().dispatch_due(vault.published) == 0


def test_a_failed_publish_is_retried_until_the_broker_takes_it(vault):
    vault.write()
    vault.release().release_switch(missed(vault))
    vault.published.fail = 1
    assert vault.release().dispatch_due(vault.published) == 0
    assert vault.release().dispatch_due(vault.published) == 0, "not before its retry time"
    vault.clock.advance(5)
    assert vault.release().dispatch_due(vault.published) == 1


def test_a_farewell_letter_waits_for_its_delay_after_the_fire(vault):
    at_once = vault.write()
    later = vault.write(release_delay_seconds=3600)
    vault.release().release_switch(missed(vault))
    vault.release().dispatch_due(vault.published)
    assert [e.data.message_id for e in released_events(vault)] == [at_once]
    status = vault.release().release_status("default-ada")
    assert status == {"switch_id": "default-ada", "sealed": 0, "released": 2, "waiting": 1,
                      "complete": False, "scheduler": "releasing"}
    vault.clock.advance(3599)
    assert vault.release().dispatch_due(vault.published) == 0
    vault.clock.advance(1)
    assert vault.release().dispatch_due(vault.published) == 1
    assert released_events(vault)[-1].data.message_id == later
    assert vault.release().release_status("default-ada")["complete"] is True


def test_the_delay_counts_from_the_fire_not_from_when_the_vault_heard_of_it(vault):
    vault.write(release_delay_seconds=600)
    fired = missed(vault)
    vault.clock.advance(900)  # the vault was down for a quarter of an hour
    vault.release().release_switch(fired)
    assert vault.release().dispatch_due(vault.published) == 1


def test_a_switch_without_messages_is_complete_at_once(vault):
    vault.release().release_switch(missed(vault))
    assert vault.release().release_status("default-ada")["complete"] is True


# Telling the scheduler ------------------------------------------------------------------


def notify(vault: Vault) -> int:
    return vault.release().notify_due(vault.scheduler)


def test_the_switch_is_marked_released_once_every_message_was_handed_over(vault):
    vault.write()
    vault.write(release_delay_seconds=3600)  # a farewell letter
    vault.release().release_switch(missed(vault, cycle=4))
    assert notify(vault) == 0, "nothing handed over yet"
    vault.release().dispatch_due(vault.published)
    vault.clock.advance(5)
    assert notify(vault) == 0, "the farewell letter is still waiting"
    assert vault.scheduler.marked == []
    vault.clock.advance(3600)
    vault.release().dispatch_due(vault.published)
    assert notify(vault) == 1
    assert vault.scheduler.marked == [("default-ada", 4)]
    assert vault.release().release_status("default-ada")["scheduler"] == "released"
    vault.clock.advance(3600)
    assert notify(vault) == 0
    assert vault.scheduler.marked == [("default-ada", 4)], "told once"


def test_every_switch_a_look_finds_complete_is_told_in_one_question(vault):
    for cycle, user in enumerate(("ada", "bob", "cyd"), start=2):
        vault.release().release_switch(missed(vault, user_id=user, cycle=cycle))
    assert notify(vault) == 3
    assert vault.scheduler.questions == 1
    assert sorted(vault.scheduler.marked) == [("default-ada", 2), ("default-bob", 3),
                                              ("default-cyd", 4)]
    assert notify(vault) == 0 and vault.scheduler.questions == 1, "nothing more to tell"


def test_a_farewell_letter_is_looked_at_again_when_it_is_due_not_every_second(vault):
    vault.write(release_delay_seconds=3600)
    vault.release().release_switch(missed(vault))
    notify(vault)
    [due] = vault.repo.due_notifications(vault.clock.now() + timedelta(days=1), 10)
    assert due.notify_due_at == vault.clock.now() + timedelta(seconds=3600)


def test_a_switch_without_messages_is_marked_released_at_once(vault):
    vault.release().release_switch(missed(vault, cycle=2))
    assert notify(vault) == 1
    assert vault.scheduler.marked == [("default-ada", 2)]


def test_a_scheduler_that_cannot_be_reached_is_told_later_with_back_off(vault):
    vault.release().release_switch(missed(vault))
    vault.scheduler.down = True
    waits = []
    for _ in range(4):
        notify(vault)
        [due] = vault.repo.due_notifications(vault.clock.now() + timedelta(days=1), 10)
        waits.append((due.notify_due_at - vault.clock.now()).total_seconds())
        vault.clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8]
    assert "unavailable" in vault.repo.release_of("default-ada").last_error
    vault.scheduler.down = False
    assert notify(vault) == 1
    assert vault.scheduler.marked == [("default-ada", 4)]


def test_a_vault_that_dies_while_telling_the_scheduler_tells_it_after_the_lease(vault):
    vault.release().release_switch(missed(vault))
    [due] = vault.repo.due_notifications(vault.clock.now(), 10)
    vault.repo.claim_notification(due, vault.clock.now() + timedelta(seconds=30))
    # ...and the process died here, before the scheduler heard anything.
    assert notify(vault) == 0
    vault.clock.advance(30)
    assert notify(vault) == 1
    assert vault.scheduler.marked == [("default-ada", 4)]


def test_a_refusal_from_the_scheduler_is_kept_for_an_operator_not_retried(vault):
    vault.write()
    vault.release().release_switch(missed(vault))
    vault.release().dispatch_due(vault.published)
    vault.scheduler.refuse = True
    assert notify(vault) == 0
    release = vault.repo.release_of("default-ada")
    assert release.state == "refused" and "did not fire" in release.last_error
    assert release.notify_due_at is None
    assert len(vault.published.envelopes) == 1, "the message went out all the same"


def test_a_message_written_as_its_switch_fires_is_taken_back(vault):
    vault.release().release_switch(missed(vault))  # the scheduler said "armed" just before
    with pytest.raises(Conflict) as refused:
        vault.write()
    assert (refused.value.status, refused.value.code) == (409, "switch_fired")
    assert vault.repo.messages.count({}) == 0


def test_a_message_moved_into_a_switch_as_it_fires_goes_out_with_it(vault):
    message_id = vault.write(switch_id="extra-ada-2")
    vault.release().release_switch(missed(vault))
    vault.release().dispatch_due(vault.published)
    assert notify(vault) == 1
    moved = vault.messages().update("ada", "ada@example.org", message_id,
                                    MessageChanges(switch_id="default-ada"))
    assert moved.state == "released"
    vault.release().dispatch_due(vault.published)
    assert [e.data.message_id for e in released_events(vault)] == [message_id]
    assert notify(vault) == 1, "the scheduler hears again, and idempotently says released"


def test_a_message_that_reached_a_fired_switch_is_released_before_the_scheduler_hears(vault):
    vault.release().release_switch(missed(vault))
    late = vault.write(switch_id="extra-ada-3")
    vault.repo.messages.update_one({"_id": late}, {"$set": {"switch_id": "default-ada"}})
    assert notify(vault) == 0, "released now, handed over next"
    vault.release().dispatch_due(vault.published)
    vault.clock.advance(5)
    assert notify(vault) == 1
    assert [e.data.message_id for e in released_events(vault)] == [late]


def test_two_dispatchers_hand_each_message_over_once(vault, tmp_path):
    for _ in range(3):
        vault.write()
    vault.release().release_switch(missed(vault))
    other = Vault(tmp_path)  # a second vault process on the same file
    other.keyring, other.clock = vault.keyring, vault.clock
    due = vault.repo.due_dispatches(vault.clock.now(), 10)
    for message in due:  # both saw the same due messages; each claims only what it wins
        vault.repo.claim_dispatch(message, vault.clock.now() + timedelta(seconds=30))
        assert other.repo.claim_dispatch(message, vault.clock.now()) is None
    other.close()


# Reading released messages -------------------------------------------------------------------


def test_a_read_link_opens_its_message_for_its_recipient_again_and_again(vault):
    message_id = vault.write(recipients=TWO, subject="Für euch")
    vault.release().release_switch(missed(vault))
    vault.release().dispatch_due(vault.published)
    [event] = released_events(vault)
    alan = event.data.recipients[1]
    for _ in range(3):
        content = vault.release().read_released(alan.read_token, "203.0.113.9")
        assert (content.message_id, content.recipient_name) == (message_id, "Alan")
        assert (content.subject, content.body) == ("Für euch", "The code of the safe is 4921.")
        assert content.sender_name == "ada@example.org"


@pytest.mark.parametrize("token", ["made-up-token-that-is-long-enough", ""])
def test_an_unknown_read_link_is_a_404(vault, token):
    with pytest.raises(NotFound) as refused:
        vault.release().read_released(token, None)
    assert refused.value.code == "unknown_read_link"


def test_reading_is_rate_limited_per_client(vault):
    for _ in range(60):
        with pytest.raises(NotFound):
            vault.release().read_released("guess-guess-guess-guess", "198.51.100.7")
    with pytest.raises(RateLimited):
        vault.release().read_released("guess-guess-guess-guess", "198.51.100.7")
    with pytest.raises(NotFound):
        vault.release().read_released("guess-guess-guess-guess", "198.51.100.8")


def test_delivery_gets_content_only_of_a_released_message(vault):
    message_id = vault.write(recipients=TWO)
    grace = vault.messages().get("ada", message_id).recipients[0]
    with pytest.raises(Forbidden) as refused:
        vault.release().released_content(message_id, grace.id)
    assert refused.value.code == "message_not_released"
    with pytest.raises(NotFound):
        vault.release().released_content(message_id, "someone-else")
    vault.release().release_switch(missed(vault))
    content = vault.release().released_content(message_id, grace.id)
    assert (content.recipient_name, content.body) == ("Grace", "The code of the safe is 4921.")


def test_a_farewell_letter_stays_closed_until_its_time(vault):
    message_id = vault.write(release_delay_seconds=60)
    recipient = vault.messages().get("ada", message_id).recipients[0]
    vault.release().release_switch(missed(vault))
    with pytest.raises(Forbidden):
        vault.release().released_content(message_id, recipient.id)
    vault.clock.advance(60)
    assert vault.release().released_content(message_id, recipient.id).subject


def minted_token(vault, message_id: str, recipient_id: str) -> str:
    """A read token as the release minted it (sealed in the message), before any mail."""
    message = vault.repo.message(message_id)
    sealer = Sealer.of(vault.keys.get(message.user_id), message)
    return sealer.open(f"recipient.{recipient_id}.read_token",
                       message.read_tokens[recipient_id].sealed)


def test_a_farewell_letters_own_link_says_when_it_opens_and_nothing_more(vault):
    message_id = vault.write(release_delay_seconds=3600)
    recipient = vault.messages().get("ada", message_id).recipients[0]
    vault.release().release_switch(missed(vault))
    token = minted_token(vault, message_id, recipient.id)
    with pytest.raises(Conflict) as early:
        vault.release().read_released(token, None)
    assert early.value.code == "not_yet_released"
    assert early.value.details == {"opens_at": vault.repo.message(message_id).release_at
                                   .isoformat().replace("+00:00", "Z")}
    assert "4921" not in str(early.value.args)
    vault.clock.advance(3600)
    assert vault.release().read_released(token, None).body == "The code of the safe is 4921."


def test_a_read_link_says_when_its_message_was_written(vault):
    message_id = vault.write()
    written = vault.repo.message(message_id).updated_at
    vault.clock.advance(600)
    vault.release().release_switch(missed(vault))
    recipient = vault.messages().get("ada", message_id).recipients[0]
    content = vault.release().read_released(minted_token(vault, message_id, recipient.id), None)
    assert content.written_at == written < content.released_at


# Erasure -------------------------------------------------------------------------------------


def test_erasure_shreds_the_data_key_first_then_deletes_everything(vault):
    message_id = vault.write()
    vault.write("eve")
    backup = vault.repo.message(message_id)
    order = []
    real_shred, real_delete = vault.keys.shred, vault.repo.delete_everything_of
    keys = vault.keys
    keys.shred = lambda user_id: order.append("key") or real_shred(user_id)
    vault.repo.delete_everything_of = lambda user_id: order.append("docs") or real_delete(user_id)
    summary = erase_user(vault.repo, keys, "ada")
    assert order == ["key", "docs"]
    assert summary == {"data_keys": 1, "messages": 1, "read_tokens": 0, "releases": 0,
                       "entitlements": 0, "test_releases": 0, "test_read_tokens": 0}
    assert vault.repo.messages.count({"user_id": "ada"}) == 0
    assert vault.repo.messages.count({"user_id": "eve"}) == 1
    with pytest.raises(MissingDataKey):
        vault.keys.get("ada")  # a backup of the message can no longer be opened
    assert backup.body not in (None, b"")
    assert erase_user(vault.repo, vault.keys, "ada") == {
        "data_keys": 0, "messages": 0, "read_tokens": 0, "releases": 0, "entitlements": 0,
        "test_releases": 0, "test_read_tokens": 0}


def test_a_crash_right_after_shredding_leaves_nothing_readable(vault):
    message_id = vault.write()
    vault.keys.shred("ada")  # erasure died before deleting the documents
    with pytest.raises(NotFound):
        vault.messages().get("ada", message_id)
    assert vault.messages().list("ada").messages == []


# KEK rotation -----------------------------------------------------------------------------------


def rotated_keyring(vault: Vault) -> Keyring:
    return Keyring(Kek("2", os.urandom(32)), [vault.keyring.current])


def test_rotation_rewraps_every_key_and_the_old_kek_can_then_go(vault):
    ids = {user: vault.write(user) for user in ("ada", "eve", "kurt")}
    vault.keyring = rotated_keyring(vault)
    vault.cache.forget("ada")
    assert vault.messages().get("ada", ids["ada"]).body, "old-version keys still open"
    report = rotate(vault.repo.data_keys, vault.keyring)
    assert report.rewrapped == 3 and report.complete
    assert vault.repo.data_keys.count({"kek_id": "2"}) == 3
    vault.keyring = Keyring(vault.keyring.current)  # the old KEK removed
    vault.cache = type(vault.cache)()
    for user, message_id in ids.items():
        assert vault.messages().get(user, message_id).body == "The code of the safe is 4921."


def test_an_interrupted_rotation_resumes_where_it_stopped(vault):
    for user in ("u1", "u2", "u3", "u4", "u5"):
        vault.write(user)
    vault.keyring = rotated_keyring(vault)
    seen = []

    def interrupt_after_two():
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rotate(vault.repo.data_keys, vault.keyring, batch=2, on_key=interrupt_after_two)
    assert keys_to_rotate(vault.repo.data_keys, vault.keyring) == 3
    report = rotate(vault.repo.data_keys, vault.keyring)
    assert report.rewrapped == 3
    assert keys_to_rotate(vault.repo.data_keys, vault.keyring) == 0


def test_keys_under_an_unconfigured_kek_are_reported_not_lost(vault):
    vault.write("ada")
    vault.keyring = Keyring(Kek("3", os.urandom(32)))  # the operator forgot the old KEK
    report = rotate(vault.repo.data_keys, vault.keyring)
    assert not report.complete
    assert "wrapped by KEK '1', which is not configured" in "\n".join(describe_rotation(report,
                                                                              vault.keyring))
    assert vault.repo.data_keys.count({"kek_id": "1"}) == 1


def test_a_key_erased_during_the_rotation_is_left_alone(vault):
    vault.write("ada")
    vault.keyring = rotated_keyring(vault)
    real_update = vault.repo.data_keys.update_one

    def erased_meanwhile(filter, update, **kwargs):
        vault.repo.data_keys.delete_one({"_id": filter["_id"]})
        return real_update(filter, update, **kwargs)

    vault.repo.data_keys.update_one = erased_meanwhile
    report = rotate(vault.repo.data_keys, vault.keyring)
    assert (report.rewrapped, report.changed_meanwhile) == (0, 1)
    assert vault.repo.data_keys.count({}) == 0


@pytest.mark.parametrize("owner", ["eve", "ada"])
def test_a_ciphertext_copied_into_another_message_fails_to_open(vault, owner):
    source, target = vault.write("ada"), vault.write(owner, body="my own words")
    stolen = vault.repo.message(source).body
    vault.repo.messages.update_one({"_id": target}, {"$set": {"body": stolen}})
    with pytest.raises(DecryptionFailed):
        vault.messages().get(owner, target)
    assert vault.messages().get("ada", source).body == "The code of the safe is 4921."


# The operator's view ------------------------------------------------------------------------


def test_the_operator_sees_each_release_under_way_and_why_it_waits(vault, tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("JICM_ENV", "test")
    monkeypatch.setenv("JICM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MONGO_URI", raising=False)
    vault.write(subject="Never printed")
    vault.write(release_delay_seconds=3600)
    vault.release().release_switch(missed(vault))
    vault.release().dispatch_due(vault.published)
    assert jicm(["releases"]) == 0
    out = capsys.readouterr().out
    assert "switch default-ada (user ada, cycle 4)" in out
    assert "1 handed to delivery, 1 waiting, 0 sealed" in out
    assert "next hand-over: 2030-01-01 10:00:00 UTC" in out
    assert "Never printed" not in out and "grace@example.org" not in out

    vault.clock.advance(3600)
    vault.release().dispatch_due(vault.published)
    vault.scheduler.down = True
    notify(vault)
    assert jicm(["releases"]) == 0
    assert "scheduler not told yet (1 failed attempt(s))" in capsys.readouterr().out
    vault.scheduler.down = False
    vault.clock.advance(5)
    notify(vault)
    assert jicm(["releases"]) == 0
    assert "no release is under way" in capsys.readouterr().out
    assert jicm(["releases", "--all"]) == 0
    assert "scheduler told: 2030-01-01 10:00:05 UTC" in capsys.readouterr().out
