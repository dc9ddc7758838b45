"""Trusted contacts over a real embedded store: consent first, asked only when the switch
becomes overdue, a hold that moves the end of grace (at most 3 times a cycle) and can never
race a firing, the confirmation gate, the plan's limits, export and erasure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler import privacy
from services.scheduler.contacts import TrustedContacts
from services.scheduler.loop import DueSwitches
from services.scheduler.schemas import ClientContext, TrustedContactRequest
from services.scheduler.switches import (
    ARMED,
    FIRED,
    OVERDUE,
    ContactRules,
    Fire,
    Schedule,
    Switch,
    Wait,
    next_action,
)
from services.scheduler.trusted_contacts import (
    ROLE_NOTICE_SHA256,
    RequestClaim,
    issue_request,
    request_key,
)
from shared.errors import Conflict, Gone, InvalidInput, NotFound, PaymentRequired
from tests.unit.scheduler_world import World

MINUTE, HOUR, DAY = 60, 3600, 86_400
PUBLIC = "https://jic.example"
CONTACT_CLIENT = ClientContext(ip="198.51.100.23", user_agent="Contact's browser")


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def contacts(world: World) -> TrustedContacts:
    return TrustedContacts(world.scheduler(), PUBLIC)


def mails(world: World, kind: str, to: str | None = None) -> list[dict]:
    """Every MailRequested of `kind` written so far (switches' and contacts' outboxes)."""
    found = []
    for collection in (world.repo.switches, world.repo.contacts):
        for doc in collection.find({}):
            found += [e for e in doc.get("outbox", []) if e["type"] == "MailRequested"]
    found.sort(key=lambda e: e["occurred_at"])
    return [e["data"] for e in found
            if e["data"]["kind"] == kind and (to is None or e["data"]["to"] == to)]


def token_of(mail: dict) -> str:
    return mail["context"]["link"].rsplit("/", 1)[1]


def owner_with_switch(world: World, **settings) -> tuple[str, str]:
    chosen = {"interval_seconds": DAY, "grace_seconds": DAY, "reminders_seconds": [HOUR],
              "hold_seconds": DAY, **settings}
    return world.verified_user(**chosen)


def invite(world: World, user_id: str, switch_id: str, email: str = "sam@example.org",
           name: str = "Sam Rivera"):
    return contacts(world).add(user_id, switch_id, TrustedContactRequest(name=name, email=email))


def accepted_contact(world: World, user_id: str, switch_id: str,
                     email: str = "sam@example.org") -> str:
    contact = invite(world, user_id, switch_id, email)
    invitation = mails(world, "trusted_contact_invitation", email)[-1]
    contacts(world).decide_invitation(token_of(invitation), "accepted", CONTACT_CLIENT)
    return contact.id


def run_until(world: World, moment, every: float = 600) -> None:
    while world.now < moment:
        world.advance(min(every, (moment - world.now).total_seconds()))
        world.tick()


def overdue(world: World, switch_id: str) -> None:
    """Let the deadline pass: the switch becomes overdue, its notice leaves at once."""
    run_until(world, world.switch(switch_id)["deadline"])
    assert world.switch(switch_id)["state"] == OVERDUE
    world.settle(switch_id, step=1)


def request_to(world: World, email: str) -> str:
    return token_of(mails(world, "trusted_contact_request", email)[-1])


# --- consent first ---------------------------------------------------------------------------


def test_a_named_contact_is_invited_once_with_a_link_naming_the_owner(world):
    user_id, switch_id = owner_with_switch(world)
    added = invite(world, user_id, switch_id)
    assert (added.name, added.email, added.status) == ("Sam Rivera", "sam@example.org", "invited")
    [invitation] = mails(world, "trusted_contact_invitation")
    assert invitation["to"] == "sam@example.org"
    assert invitation["context"]["owner_email"] == world.switch(switch_id)["email"]
    assert invitation["context"]["link"].startswith(f"{PUBLIC}/i/")
    # Only the token's hash is stored.
    stored = world.repo.contact(added.id)
    assert token_of(invitation) not in str(stored)


def test_accepting_records_a_consent_receipt_and_the_invitation_works_once(world):
    user_id, switch_id = owner_with_switch(world)
    contact = invite(world, user_id, switch_id)
    token = token_of(mails(world, "trusted_contact_invitation")[0])
    shown = contacts(world).inspect_invitation(token, CONTACT_CLIENT)
    assert shown.status == "invited" and "never see their messages" in shown.notice

    decided = contacts(world).decide_invitation(token, "accepted", CONTACT_CLIENT)

    assert decided.status == "accepted"
    receipt = world.repo.contact(contact.id)["consent"]
    assert receipt["choice"] == "accepted"
    assert receipt["notice_sha256"] == ROLE_NOTICE_SHA256
    assert receipt["ip_truncated"] == "198.51.100.0/24"
    assert receipt["user_agent"] == "Contact's browser"
    with pytest.raises(Gone) as used:
        contacts(world).decide_invitation(token, "declined", CONTACT_CLIENT)
    assert used.value.code == "link_used"
    assert world.repo.contact(contact.id)["status"] == "accepted"


def test_an_invitation_link_expires_after_thirty_days(world):
    user_id, switch_id = owner_with_switch(world, interval_seconds=60 * DAY)
    invite(world, user_id, switch_id)
    token = token_of(mails(world, "trusted_contact_invitation")[0])
    world.advance(31 * DAY)
    with pytest.raises(Gone) as expired:
        contacts(world).decide_invitation(token, "accepted", CONTACT_CLIENT)
    assert expired.value.code == "link_expired"


def test_a_contact_who_declined_or_never_answered_is_never_asked_anything(world):
    user_id, switch_id = owner_with_switch(world)
    invite(world, user_id, switch_id, "never@example.org")
    invite(world, user_id, switch_id, "no@example.org")
    token = token_of(mails(world, "trusted_contact_invitation", "no@example.org")[0])
    contacts(world).decide_invitation(token, "declined", CONTACT_CLIENT)
    accepted_contact(world, user_id, switch_id, "yes@example.org")

    overdue(world, switch_id)

    asked = {mail["to"] for mail in mails(world, "trusted_contact_request")}
    assert asked == {"yes@example.org"}
    for silent in ("never@example.org", "no@example.org"):
        assert [m["kind"] for m in mails(world, "trusted_contact_invitation", silent)] == [
            "trusted_contact_invitation"]


# --- holding the release -------------------------------------------------------------------


def test_a_hold_moves_the_end_of_grace_tells_the_owner_and_the_switch_fires_only_after_it(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    grace_ends_at = world.switch(switch_id)["grace_ends_at"]
    token = request_to(world, "sam@example.org")
    shown = contacts(world).inspect_request(token, CONTACT_CLIENT)
    assert (shown.can_hold, shown.can_confirm, shown.holds_left) == (True, False, 3)

    world.advance(HOUR)
    held = contacts(world).hold(token, CONTACT_CLIENT)

    assert held.status == "held"
    assert held.grace_ends_at == grace_ends_at + timedelta(days=1)
    [told] = mails(world, "trusted_contact_hold")
    assert told["to"] == world.switch(switch_id)["email"]
    assert told["context"]["contact_name"] == "Sam Rivera"
    run_until(world, grace_ends_at + timedelta(hours=2))
    assert world.switch(switch_id)["state"] == OVERDUE
    assert world.events("CheckInMissed", switch_id) == []
    run_until(world, held.grace_ends_at + timedelta(minutes=10))
    assert world.switch(switch_id)["state"] == FIRED


def test_a_request_link_works_once_and_a_new_one_is_mailed_after_a_hold(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    first = request_to(world, "sam@example.org")
    contacts(world).hold(first, CONTACT_CLIENT)
    with pytest.raises(Gone) as used:
        contacts(world).hold(first, CONTACT_CLIENT)
    assert used.value.code == "link_used"
    second = request_to(world, "sam@example.org")
    assert second != first
    assert mails(world, "trusted_contact_request")[-1]["context"]["held_before"] == "yes"
    assert contacts(world).inspect_request(second, CONTACT_CLIENT).holds_left == 2


def test_the_release_can_be_held_at_most_three_times_per_cycle(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    for _ in range(3):
        contacts(world).hold(request_to(world, "sam@example.org"), CONTACT_CLIENT)
    assert world.switch(switch_id)["holds_used"] == 3
    # No fourth link is mailed: there is nothing left to ask.
    assert len(mails(world, "trusted_contact_request")) == 3
    last = request_to(world, "sam@example.org")
    with pytest.raises(Gone):
        contacts(world).hold(last, CONTACT_CLIENT)
    # A forged fourth-round link is refused by the rule itself.
    forged = issue_request(request_key(world.key), RequestClaim(
        switch_id=switch_id, contact_id=world.repo.contacts_of(switch_id)[0]["_id"],
        cycle=world.switch(switch_id)["cycle"], round=3,
        expires_at=world.now + timedelta(days=30)))
    with pytest.raises(Conflict) as refused:
        contacts(world).hold(forged, CONTACT_CLIENT)
    assert refused.value.code == "holds_used_up"


def test_a_hold_after_the_switch_fired_does_nothing_and_says_it_is_too_late(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    token = request_to(world, "sam@example.org")
    run_until(world, world.switch(switch_id)["grace_ends_at"] + timedelta(minutes=10))
    assert world.switch(switch_id)["state"] == FIRED
    fired = world.switch(switch_id)

    with pytest.raises(Conflict) as too_late:
        contacts(world).hold(token, CONTACT_CLIENT)

    assert too_late.value.code == "switch_fired"
    assert world.switch(switch_id)["grace_ends_at"] == fired["grace_ends_at"]
    assert mails(world, "trusted_contact_hold") == []


def test_a_hold_landing_while_the_loop_decides_to_fire_makes_the_firing_miss(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    token = request_to(world, "sam@example.org")
    world.clock.set(world.switch(switch_id)["grace_ends_at"] + timedelta(seconds=1))
    # The loop claims the switch and decides to fire it...
    [claimed] = world.repo.claim_due(world.now, "racing-instance", 10, timedelta(seconds=30))
    assert isinstance(next_action(Switch.from_doc(claimed), world.now), Fire)
    # ...a contact's hold lands first...
    contacts(world).hold(token, CONTACT_CLIENT)
    # ...and the firing, named by the claim the hold took away, misses.
    loop = DueSwitches(world.repo, world.now, world.loop_settings(), world.mail_status)
    assert world.repo.fire(claimed, loop._missed(claimed), world.now) is None
    assert world.switch(switch_id)["state"] == OVERDUE
    assert world.events("CheckInMissed", switch_id) == []


def test_a_new_cycle_starts_with_no_holds_and_old_links_are_no_longer_needed(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    first = request_to(world, "sam@example.org")
    contacts(world).hold(first, CONTACT_CLIENT)
    later = request_to(world, "sam@example.org")
    world.check_in(user_id, switch_id)
    assert world.switch(switch_id)["state"] == ARMED
    with pytest.raises(Gone) as not_needed:
        contacts(world).hold(later, CONTACT_CLIENT)
    assert not_needed.value.code == "no_longer_needed"

    overdue(world, switch_id)

    assert world.switch(switch_id)["holds_used"] == 0
    assert contacts(world).inspect_request(request_to(world, "sam@example.org"),
                                           CONTACT_CLIENT).holds_left == 3


def test_a_removed_contacts_link_holds_nothing(world):
    user_id, switch_id = owner_with_switch(world)
    contact_id = accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    token = request_to(world, "sam@example.org")
    contacts(world).remove(user_id, switch_id, contact_id)
    with pytest.raises(NotFound):
        contacts(world).hold(token, CONTACT_CLIENT)


def test_a_check_in_link_and_a_contacts_link_cannot_stand_in_for_each_other(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    token = request_to(world, "sam@example.org")
    checkin_token = world.events("ReminderDue", switch_id)[-1]["data"]["checkin_token"]
    with pytest.raises(NotFound):
        world.scheduler().check_in_by_link(token, CONTACT_CLIENT)
    with pytest.raises(NotFound):
        contacts(world).hold(checkin_token, CONTACT_CLIENT)


# --- the confirmation gate -------------------------------------------------------------------


def test_with_confirmation_required_it_fires_only_after_the_wait_when_nobody_confirms(world):
    user_id, switch_id = owner_with_switch(world, confirmation="required",
                                           confirmation_wait_seconds=2 * DAY)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    grace_ends_at = world.switch(switch_id)["grace_ends_at"]
    run_until(world, grace_ends_at + timedelta(days=1))
    assert world.switch(switch_id)["state"] == OVERDUE
    run_until(world, grace_ends_at + timedelta(days=2, minutes=10))
    assert world.switch(switch_id)["state"] == FIRED


def test_a_contacts_confirmation_lets_it_fire_at_the_end_of_grace(world):
    user_id, switch_id = owner_with_switch(world, confirmation="required",
                                           confirmation_wait_seconds=2 * DAY)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    grace_ends_at = world.switch(switch_id)["grace_ends_at"]
    token = request_to(world, "sam@example.org")
    assert contacts(world).inspect_request(token, CONTACT_CLIENT).can_confirm

    confirmed = contacts(world).confirm(token, CONTACT_CLIENT)

    assert confirmed.status == "confirmed" and not confirmed.can_confirm
    assert world.switch(switch_id)["confirmed"]["at"] == world.now
    run_until(world, grace_ends_at + timedelta(minutes=10))
    assert world.switch(switch_id)["state"] == FIRED


def test_confirming_is_refused_when_the_switch_does_not_wait_for_it(world):
    user_id, switch_id = owner_with_switch(world)
    accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    with pytest.raises(Conflict) as refused:
        contacts(world).confirm(request_to(world, "sam@example.org"), CONTACT_CLIENT)
    assert refused.value.code == "confirmation_not_asked"


def test_the_gate_waits_from_the_end_of_grace_a_hold_moved():
    ends = datetime(2030, 1, 1, tzinfo=UTC)
    switch = Switch(id="s", user_id="u", state=OVERDUE, cycle=1,
                    schedule=Schedule(DAY, DAY, (HOUR,)), deadline=ends - timedelta(days=1),
                    grace_ends_at=ends,
                    contact_rules=ContactRules(DAY, "required", 3 * DAY))
    assert next_action(switch, ends + timedelta(days=1)) == Wait(ends + timedelta(days=3))


# --- settings, limits, owners ----------------------------------------------------------------


def test_the_switch_shows_its_contact_settings_with_their_defaults(world):
    user_id, switch_id = world.verified_user()
    shown = world.scheduler().get(user_id, switch_id)
    assert (shown.hold_seconds, shown.confirmation, shown.confirmation_wait_seconds) == (
        7 * DAY, "none", 14 * DAY)
    assert shown.holds_used == 0 and shown.confirmed_at is None


@pytest.mark.parametrize("changes, field", [
    ({"hold_seconds": 10}, "hold_seconds"),
    ({"hold_seconds": 31 * DAY}, "hold_seconds"),
    ({"confirmation_wait_seconds": 91 * DAY}, "confirmation_wait_seconds"),
])
def test_contact_settings_out_of_bounds_are_refused_naming_the_field(world, changes, field):
    user_id, switch_id = world.verified_user()
    with pytest.raises(InvalidInput) as refused:
        world.update(user_id, switch_id, **changes)
    assert refused.value.details["field"] == field


def test_a_switch_takes_three_contacts_on_the_free_plan_and_five_on_premium(world):
    user_id, switch_id = owner_with_switch(world)
    for n in range(3):
        invite(world, user_id, switch_id, f"c{n}@example.org")
    with pytest.raises(PaymentRequired):
        invite(world, user_id, switch_id, "c3@example.org")
    world.plan(user_id)
    for n in range(3, 5):
        invite(world, user_id, switch_id, f"c{n}@example.org")
    with pytest.raises(PaymentRequired):
        invite(world, user_id, switch_id, "c5@example.org")
    listed = contacts(world).list(user_id, switch_id)
    assert listed.limit == 5 and len(listed.trusted_contacts) == 5


def test_the_same_person_cannot_be_named_twice_on_one_switch(world):
    user_id, switch_id = owner_with_switch(world)
    invite(world, user_id, switch_id, "sam@example.org")
    with pytest.raises(Conflict) as twice:
        invite(world, user_id, switch_id, "SAM@example.org")
    assert twice.value.code == "trusted_contact_exists"


def test_another_users_switch_and_contact_are_not_found(world):
    user_id, switch_id = owner_with_switch(world)
    other_id, other_switch = world.verified_user()
    contact = invite(world, user_id, switch_id)
    with pytest.raises(NotFound):
        contacts(world).list(other_id, switch_id)
    with pytest.raises(NotFound):
        invite(world, other_id, switch_id, "x@example.org")
    with pytest.raises(NotFound):
        contacts(world).remove(other_id, switch_id, contact.id)
    with pytest.raises(NotFound):
        contacts(world).remove(other_id, other_switch, contact.id)
    assert world.repo.contact(contact.id) is not None


def test_a_contact_needs_a_name_and_an_address(world):
    user_id, switch_id = owner_with_switch(world)
    with pytest.raises(InvalidInput) as refused:
        invite(world, user_id, switch_id, email="not an address")
    assert refused.value.details["field"] == "email"
    with pytest.raises(InvalidInput) as refused:
        invite(world, user_id, switch_id, name="Sam\r\nBcc: everyone@example.org")
    assert refused.value.details["field"] == "name"


# --- export and erasure ------------------------------------------------------------------------


def test_the_owners_export_holds_their_contacts_and_holds_and_the_erasure_removes_them(world):
    user_id, switch_id = owner_with_switch(world)
    contact_id = accepted_contact(world, user_id, switch_id)
    overdue(world, switch_id)
    contacts(world).hold(request_to(world, "sam@example.org"), CONTACT_CLIENT)

    exported = privacy.export_user(world.repo, user_id)

    [contact] = exported["trusted_contacts"]
    assert (contact["id"], contact["email"], contact["status"]) == (
        contact_id, "sam@example.org", "accepted")
    assert contact["consent"]["choice"] == "accepted"
    assert "invitation" not in contact
    [switch] = exported["switches"]
    assert [hold["contact_id"] for hold in switch["holds"]] == [contact_id]

    summary = privacy.erase_user(world.repo, user_id, "user")

    assert summary["trusted_contacts"] == 1
    assert world.repo.contacts.find({}) == []
