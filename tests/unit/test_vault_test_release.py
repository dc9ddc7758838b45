"""A test release on a real store: only the owner, only verified, three a day, nothing of
the switch changes, and its links never open a real release (nor a real link a test)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.vault import privacy
from services.vault import test_release as tr
from services.vault.erasure import erase_user
from services.vault.release import token_hash
from services.vault.schemas import TestReleaseOwner as Owner
from shared.errors import Conflict, Forbidden, NotFound, RateLimited, Unavailable
from shared.events.schemas import CheckInMissed
from tests.unit.vault_fixtures import START, Vault, default_switch

TWO = [{"name": "Grace", "email": "grace@example.org"}, {"name": "Alan", "email": "alan@ex.org"}]
ADA = Owner(email="ada@example.org", email_verified=True)
LINK = "http://127.0.0.1:8000/r/test/"


class Mailbox:
    """Delivery's `send`, as the vault calls it: keeps every mail; `down` refuses."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.down_after: int | None = None

    def send(self, kind, reference, to, context, to_name, user_id) -> None:
        if self.down_after is not None and len(self.sent) >= self.down_after:
            raise Unavailable("mail cannot be sent right now", code="delivery_unavailable")
        self.sent.append({"kind": kind, "reference": reference, "to": to,
                          "context": context, "to_name": to_name, "user_id": user_id})


@pytest.fixture
def vault(tmp_path):
    vault = Vault(tmp_path)
    yield vault
    vault.close()


@pytest.fixture
def mailbox():
    return Mailbox()


def releases_of(vault: Vault) -> tr.TestReleases:
    return tr.TestReleases(vault.repo, vault.keys, vault.switches, vault.clock.now(),
                           public_url="http://127.0.0.1:8000")


def start(vault: Vault, mailbox: Mailbox, user_id: str = "ada", owner: Owner = ADA,
          switch_id: str | None = None):
    return releases_of(vault).start(user_id, switch_id or default_switch(user_id), owner, mailbox)


def token_of(mail: dict) -> str:
    link = mail["context"]["link"]
    assert link.startswith(LINK)
    return link.removeprefix(LINK)


def snapshot(vault: Vault) -> dict:
    """Everything the real release reads and writes."""
    return {"messages": vault.repo.messages.find({}), "releases": vault.repo.releases.find({}),
            "read_tokens": vault.repo.read_tokens.find({})}


def test_every_message_goes_once_per_recipient_to_the_owner_alone(vault, mailbox):
    first = vault.write(recipients=TWO, sender_name="Ada")
    second = vault.write(subject="For Alan", inline=True)
    started = start(vault, mailbox)
    assert (started.messages, started.mails, started.sent_to) == (2, 3, "ada@example.org")
    assert started.expires_at == START + timedelta(hours=24)
    assert {mail["to"] for mail in mailbox.sent} == {"ada@example.org"}
    assert {mail["kind"] for mail in mailbox.sent} == {"test_release"}
    assert [m["context"]["recipient_name"] for m in mailbox.sent] == ["Grace", "Alan", "Grace"]
    link_mails = [m for m in mailbox.sent if m["context"]["variant"] == "link"]
    assert [m["reference"].split("/")[1] for m in link_mails] == [first, first]
    assert link_mails[0]["context"]["sender_name"] == "Ada (ada@example.org)"
    inline = next(m for m in mailbox.sent if m["context"]["variant"] == "inline")
    assert inline["context"]["message_id"] == second and "link" not in inline["context"]
    assert len({m["reference"] for m in mailbox.sent}) == 3


def test_a_test_release_changes_nothing_the_real_release_uses(vault, mailbox):
    vault.write(recipients=TWO)
    before = snapshot(vault)
    start(vault, mailbox)
    assert snapshot(vault) == before
    assert vault.repo.switch_counts(default_switch("ada")) == {"sealed": 1, "released": 0,
                                                              "waiting": 0}


def test_an_unverified_owner_is_refused_and_nothing_is_sent(vault, mailbox):
    vault.write()
    with pytest.raises(Forbidden) as refused:
        start(vault, mailbox, owner=Owner(email="ada@example.org", email_verified=False))
    assert refused.value.code == "email_not_verified"
    assert mailbox.sent == [] and vault.repo.test_releases.find({}) == []


def test_another_users_switch_is_the_same_404_as_none(vault, mailbox):
    vault.write("eve")
    with pytest.raises(NotFound):
        start(vault, mailbox, switch_id=default_switch("eve"))
    with pytest.raises(NotFound):
        start(vault, mailbox, switch_id="no-such-switch")
    assert mailbox.sent == []


def test_a_fired_or_released_switch_has_nothing_left_to_test(vault, mailbox):
    vault.write()
    for state in ("fired", "released"):
        vault.switches.fired[default_switch("ada")] = state
        with pytest.raises(Conflict) as refused:
            start(vault, mailbox)
        assert refused.value.code == "switch_fired"
    assert mailbox.sent == []


def test_a_switch_without_messages_is_refused_without_using_the_limit(vault, mailbox):
    for _ in range(4):
        with pytest.raises(Conflict) as refused:
            start(vault, mailbox)
        assert refused.value.code == "no_messages"
    vault.write()
    assert start(vault, mailbox).mails == 1


def test_three_a_day_per_owner_across_switches_then_429_until_the_next_day(vault, mailbox):
    vault.write()
    vault.write(switch_id="extra-ada-2")
    start(vault, mailbox)
    start(vault, mailbox, switch_id="extra-ada-2")
    start(vault, mailbox)
    with pytest.raises(RateLimited) as limited:
        start(vault, mailbox, switch_id="extra-ada-2")
    assert limited.value.code == "test_release_limit"
    # START is 09:00 UTC: the window is the UTC day.
    assert limited.value.details["retry_after_seconds"] == 15 * 3600
    vault.write("eve")
    start(vault, mailbox, "eve", Owner(email="eve@example.org", email_verified=True))
    vault.clock.advance(hours=15)
    start(vault, mailbox)
    assert len(mailbox.sent) == 5


def test_a_test_larger_than_the_most_one_inbox_takes_is_refused(vault, mailbox, monkeypatch):
    monkeypatch.setattr(tr, "MAX_TEST_MAILS", 2)
    vault.write(recipients=TWO)
    vault.write()
    with pytest.raises(Conflict) as refused:
        start(vault, mailbox)
    assert refused.value.details == {"mails": 3, "maximum": 2}
    assert mailbox.sent == []


def test_a_test_link_opens_the_page_marked_as_a_test_until_it_expires(vault, mailbox):
    vault.write(recipients=TWO, body="The key is under the mat.")
    start(vault, mailbox)
    opened = releases_of(vault).read(token_of(mailbox.sent[1]), "10.0.0.1")
    assert opened.test is True and opened.recipient_name == "Alan"
    assert opened.body == "The key is under the mat."
    assert opened.expires_at == START + timedelta(hours=24)
    vault.clock.advance(hours=24)
    with pytest.raises(NotFound):
        releases_of(vault).read(token_of(mailbox.sent[1]), "10.0.0.1")


def test_a_test_link_never_opens_the_real_page_nor_a_real_link_the_test_page(vault, mailbox):
    vault.write()
    start(vault, mailbox)
    test_token = token_of(mailbox.sent[0])
    with pytest.raises(NotFound):
        vault.release().read_released(test_token, "10.0.0.1")
    assert vault.repo.read_token(token_hash(test_token)) is None

    vault.release().release_switch(CheckInMissed(
        user_id="ada", switch_id=default_switch("ada"), cycle=1, deadline=START,
        fired_at=START))
    vault.release().dispatch_due(vault.published)
    real_token = vault.published.envelopes[0]["data"]["recipients"][0]["read_token"]
    assert vault.release().read_released(real_token, "10.0.0.1").subject == "For the family"
    with pytest.raises(NotFound):
        releases_of(vault).read(real_token, "10.0.0.1")
    # Once the switch fired for real, its test links open nothing any more.
    with pytest.raises(NotFound):
        releases_of(vault).read(test_token, "10.0.0.1")


def test_an_inline_tests_text_is_given_to_delivery_only_for_its_own_test(vault, mailbox):
    message_id = vault.write(inline=True, body="Inline words.")
    start(vault, mailbox)
    context = mailbox.sent[0]["context"]
    content = releases_of(vault).content(context["test_release_id"], message_id,
                                      context["recipient_id"])
    assert content.body == "Inline words."
    with pytest.raises(NotFound):
        releases_of(vault).content("another-test", message_id, context["recipient_id"])
    with pytest.raises(Forbidden):  # the real release's question: still sealed
        vault.release().released_content(message_id, context["recipient_id"])


def test_delivery_down_half_way_says_so_and_the_record_says_how_far_it_got(vault, mailbox):
    vault.write(recipients=TWO)
    mailbox.down_after = 1
    with pytest.raises(Unavailable):
        start(vault, mailbox)
    [record] = vault.repo.test_releases.find({})
    assert (record["mails"], record["accepted"], record["state"]) == (2, 1, "incomplete")


def test_the_export_lists_the_test_releases_and_the_erasure_removes_them_and_their_links(
        vault, mailbox):
    vault.write()
    started = start(vault, mailbox)
    exported = privacy.export_user(vault.repo, vault.keys, "ada")["test_releases"]
    assert exported == [{"id": started.id, "switch_id": default_switch("ada"),
                         "created_at": START, "expires_at": START + timedelta(hours=24),
                         "messages": 1, "mails": 1, "mails_accepted": 1, "state": "sent"}]
    erase_user(vault.repo, vault.keys, "ada")
    assert vault.repo.test_releases.find({}) == []
    assert vault.repo.test_read_tokens.find({}) == []
