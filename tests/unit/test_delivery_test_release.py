"""A test release's mail is the real release's mail, marked as a test: the subject starts
with "[Test]", a banner says who would receive it, the body is the real one, and its
records are of a kind of their own."""

from __future__ import annotations

import pytest

from services.delivery.kinds import KINDS
from services.delivery.pipeline import ValuesGone, ValuesUnavailable
from services.delivery.render import render
from services.delivery.test_release_mail import FetchedValues
from shared.rpc.errors import RemoteError, RpcTimeout
from tests.unit.test_delivery_mail import FETCHED, PUBLIC, SAMPLES


def rendered(variant: str):
    return render(KINDS["test_release"], SAMPLES[("test_release", variant)],
                  public_url=PUBLIC, fetched=FETCHED.get(("test_release", variant)))


def real(variant: str):
    context = {**SAMPLES[("released_message", variant)]}
    return render(KINDS["released_message"], context, public_url=PUBLIC, to_name="Bob",
                  fetched=FETCHED.get(("released_message", variant)))


@pytest.mark.parametrize("variant", ["link", "inline"])
def test_the_test_mail_is_the_real_mail_marked_test_and_addressed_as_the_recipient(variant):
    test, original = rendered(variant), real(variant)
    assert test.subject == "[Test] " + original.subject
    for part in ("text", "html"):
        body = " ".join(getattr(test, part).split())
        assert "This is a test release you asked for" in body
        assert "Bob received nothing" in body
        assert "Hello Bob," in body
        # The real mail's own words, untouched.
        assert "as they asked" in body and "as they asked" in getattr(original, part)
    if variant == "link":
        assert f"{PUBLIC}/r/test/tok" in test.text
        assert "The link works until Saturday 4 May 2030 at 10:00 UTC" in " ".join(
            test.text.split())
    else:
        assert "The key is under the mat." in test.text


def test_test_mail_is_a_kind_of_its_own_that_never_holds_or_counts_as_a_release():
    kind = KINDS["test_release"]
    assert not kind.marketing and not kind.holds_release
    assert kind.name != "released_message"


class Vault:
    def __init__(self, answer=None, error=None) -> None:
        self.answer, self.error, self.asked = answer, error, []

    def call(self, method, *args):
        self.asked.append((method, *args))
        if self.error:
            raise self.error
        return self.answer


INLINE = SAMPLES[("test_release", "inline")]


def test_an_inline_tests_text_is_asked_of_the_vault_by_its_own_question():
    vault = Vault({"subject": "For Byron", "body": "words"})
    values = FetchedValues(vault)("test_release", INLINE)
    assert values == {"message_subject": "For Byron", "message_body": "words"}
    assert vault.asked == [("test_release_content", "t-1", "m-1", "r-1")]
    FetchedValues(vault)("released_message", SAMPLES[("released_message", "inline")])
    assert vault.asked[-1] == ("released_content", "m-1", "r-1")


def test_an_expired_test_fails_its_inline_mail_and_a_slow_vault_is_retried():
    with pytest.raises(ValuesGone):
        FetchedValues(Vault(error=RemoteError("NotFound")))("test_release", INLINE)
    with pytest.raises(ValuesUnavailable):
        FetchedValues(Vault(error=RpcTimeout("slow")))("test_release", INLINE)
