"""Test releases: the mail a recipient would receive, marked "[Test]", sent to its author.

The vault asks for each mail over RPC (`delivery.send`), kind `test_release`, one per
(test release, message, recipient), to the author's own address. The templates are the
real release's (`released_message_*`) with a test banner above and the reason below, so
what the author sees is what a recipient would get. Records of this kind never answer a
question about a real release, whose kind is `released_message`.

An inline test carries the message's text like an inline release: never stored here,
asked of the vault (`test_release_content`) when the mail is built.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.delivery import release_mail
from services.delivery.pipeline import ValuesGone, ValuesUnavailable
from shared.rpc.bounded import BoundedClient
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable

KIND = "test_release"


class TestReleaseContent:
    """Fetches an inline test's subject and body from the vault, at send time."""

    def __init__(self, vault: BoundedClient) -> None:
        self.vault = vault

    def __call__(self, kind: str, context: Mapping[str, str]) -> dict[str, str]:
        if kind != KIND:
            raise ValuesGone(f"{kind} mail has no test values to fetch")
        try:
            content = self.vault.call("test_release_content", context["test_release_id"],
                                      context["message_id"], context["recipient_id"])
        except (RpcTimeout, ServiceUnavailable) as exc:
            raise ValuesUnavailable(f"the vault cannot be asked for the message now ({exc})") \
                from None
        except RemoteError as exc:
            if exc.exc_type == "NotFound":
                raise ValuesGone("the test release no longer opens this message (expired, "
                                 "fired or erased)") from None
            raise ValuesUnavailable(f"the vault did not give the message: {exc.exc_type}") \
                from None
        return {"message_subject": content["subject"], "message_body": content["body"]}


class FetchedValues:
    """The values fetched at send time, for the kind being sent: a release's text or a
    test release's."""

    def __init__(self, vault: BoundedClient) -> None:
        self.released = release_mail.ReleasedContent(vault)
        self.test = TestReleaseContent(vault)

    def __call__(self, kind: str, context: Mapping[str, str]) -> dict[str, str]:
        fetch = self.test if kind == KIND else self.released
        return fetch(kind, context)
