"""The site's part 2 with the services played by a fake (tests/unit/site_fakes.py): the
cookie question and its cookie, every cookie listed, privacy signals, the privacy centre,
exports and the erasure that is followed after the account closed, billing and its return
pages, the recipient's page and its downloads, CSRF and the policies of the new pages."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from http.cookies import SimpleCookie

import pytest

from gateway.site.cookies import CookieChoice, cookie_policy, listed_cookies
from gateway.site.pages import local_path
from shared.errors import Conflict, Forbidden, NotFound
from tests.unit.site_fakes import NOW, TOKEN, FakeServices, csrf_token, iso, refuse, site_app

VISITOR = "v" * 32
READ_TOKEN = "r" * 43
EXPORT_ID = "55555555-5555-4555-8555-555555555555"
ERASURE_ID = "66666666-6666-4666-8666-666666666666"
GPC = {"Sec-GPC": "1"}


@pytest.fixture
def world():
    return FakeServices()


@pytest.fixture
def client(tmp_path, world):
    return site_app(tmp_path, world).test_client()


@pytest.fixture
def signed_in(client):
    client.set_cookie("jicm_session", TOKEN)
    return client


def form_token(client, path: str = "/cookies") -> str:
    return csrf_token(client.get(path).get_data(as_text=True))


def set_cookies(answer) -> dict[str, str]:
    """Name -> the whole Set-Cookie line, for every cookie an answer sets."""
    found = {}
    for line in answer.headers.getlist("Set-Cookie"):
        found[next(iter(SimpleCookie(line).keys()))] = line
    return found


def choose(client, choice: str, headers: dict | None = None, **fields) -> object:
    token = form_token(client)
    return client.post("/cookies", data={"csrf_token": token, "choice": choice, **fields},
                       headers=headers or {})


# The cookie question ---------------------------------------------------------------------------


def test_until_answered_every_page_asks_with_three_answers_of_equal_weight(client):
    page = client.get("/").get_data(as_text=True)
    assert "Cookies on this site" in page
    answers = re.findall(r'<(?:button|a)[^>]*class="banner-choice"[^>]*>([^<]+)<', page)
    assert answers == ["Accept all", "Reject all", "Choose"]
    assert "checked" not in page


def test_a_visitors_refusal_is_recorded_as_consent_on_the_web_and_remembered(client, world):
    answer = choose(client, "reject", next="/privacy")
    assert answer.status_code == 303 and answer.location == "/privacy"
    [(token, choices, context)] = world.asked("privacy", "choose_visitor_cookies")
    assert choices == {"analytics": False, "marketing": False}
    assert context["via"] == "web" and context["gpc"] is False
    line = set_cookies(answer)["jicm_cookies"]
    assert line.startswith(f"jicm_cookies={token}.00;")
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/", "Expires="):
        assert flag in line
    page = client.get("/privacy").get_data(as_text=True)
    assert "Cookies on this site" not in page
    assert "only the cookies the site needs to work" in page


def test_a_signed_in_choice_is_recorded_on_the_account(signed_in, world):
    choose(signed_in, "accept")
    [(_, changes, context)] = world.asked("privacy", "update_consent")
    assert changes == {"cookies": {"analytics": True, "marketing": True}}
    assert context["via"] == "web"
    assert world.asked("privacy", "choose_visitor_cookies") == []


def test_the_settings_page_takes_a_choice_box_by_box_none_ticked_beforehand(client, world):
    page = client.get("/cookies").get_data(as_text=True)
    assert 'name="analytics" value="yes">' in page and " checked" not in page
    choose(client, "save", analytics="yes")
    [(_, choices, _)] = world.asked("privacy", "choose_visitor_cookies")
    assert choices == {"analytics": True, "marketing": False}
    assert 'name="analytics" value="yes" checked>' in client.get("/cookies").get_data(
        as_text=True)


def test_with_a_privacy_signal_the_banner_does_not_ask_and_says_it_is_honoured(client, world):
    page = client.get("/", headers=GPC).get_data(as_text=True)
    assert "Global Privacy Control" in page and "honoured" in page
    assert "Accept all" not in page and "Reject all" not in page
    dnt = client.get("/", headers={"DNT": "1"}).get_data(as_text=True)
    assert "Do Not Track" in dnt and "Accept all" not in dnt
    settings = client.get("/cookies", headers=GPC).get_data(as_text=True)
    assert settings.count(" disabled>") == 2
    answer = choose(client, "accept", headers=GPC)
    [(_, _, context)] = world.asked("privacy", "choose_visitor_cookies")
    assert context["gpc"] is True
    assert ".00;" in set_cookies(answer)["jicm_cookies"], "the signal kept them off"


def test_an_answer_never_sends_the_browser_to_another_site(client):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:1"):
        assert choose(client, "reject", next=target).location == "/cookies", target
    assert local_path("/app/privacy#marketing", "/") == "/app/privacy#marketing"


def test_an_unknown_answer_changes_nothing(client, world):
    answer = choose(client, "maybe")
    assert answer.status_code == 303
    assert world.asked("privacy", "choose_visitor_cookies") == []
    assert "jicm_cookies" not in set_cookies(answer)


def test_a_cookie_choice_cookie_that_was_tampered_with_counts_as_no_answer():
    assert CookieChoice.parse(f"{VISITOR}.10") == CookieChoice(VISITOR, True, False)
    for value in ("", "short.10", f"{VISITOR}.2", f"{VISITOR}", f"{VISITOR}.101"):
        assert CookieChoice.parse(value) is None


def test_signing_up_hands_accounts_the_visitors_choice_so_it_joins_the_account(client,
                                                                               world):
    world.answer("accounts", "sign_up", lambda body, client_info: {
        "id": "u", "email": body["email"], "email_verified": False})
    choose(client, "reject")
    [(token, _, _)] = world.asked("privacy", "choose_visitor_cookies")
    csrf = form_token(client, "/signup")
    client.post("/signup", data={
        "csrf_token": csrf, "email": "ada@example.org", "password": "long enough words",
        "dob_day": "1", "dob_month": "1", "dob_year": "1990", "accept_policy": "2024-04-29"})
    [(_, client_info)] = world.asked("accounts", "sign_up")
    assert client_info["visitor"] == token


def test_every_cookie_the_site_sets_is_listed_and_strictly_necessary(client, world):
    world.answer("accounts", "log_in", lambda body, info: {
        "token": TOKEN, "expires_at": iso(NOW)})
    world.answer("accounts", "update_profile", lambda user_id, changes: world.profile)
    world.answer("accounts", "log_out", lambda token: None)
    seen: set[str] = set()
    for path in ("/", "/privacy", "/signup", "/login", "/forgot", "/cookies"):
        seen |= set(set_cookies(client.get(path)))
    seen |= set(set_cookies(choose(client, "reject")))
    seen |= set(set_cookies(client.post("/login", data={
        "csrf_token": form_token(client, "/login"), "email": "ada@example.org",
        "password": "whatever it is"})))
    for path in ("/app", "/app/privacy", "/app/billing", "/app/account"):
        seen |= set(set_cookies(client.get(path)))
    seen |= set(set_cookies(client.post("/logout", data={"csrf_token": form_token(client)})))
    listed = {cookie.name for cookie in listed_cookies(cookie_policy("http://127.0.0.1:8000"),
                                                        "14 days")}
    assert seen == listed, f"set but not listed: {seen - listed}"
    page = client.get("/cookies").get_data(as_text=True)
    for name in listed:
        assert f"<code>{name}</code>" in page
    assert page.count("Strictly necessary") == len(listed)


def test_the_footer_of_every_page_reopens_the_cookie_settings(client, signed_in):
    for path in ("/", "/privacy", "/app", "/app/privacy", "/verify?token=x", "/c/" + "x" * 40):
        assert 'href="/cookies">Cookie settings</a>' in signed_in.get(path).get_data(
            as_text=True), path


# The privacy centre -------------------------------------------------------------------------


def test_a_marketing_switch_takes_effect_at_once_with_a_receipt(signed_in, world):
    page = signed_in.get("/app/privacy").get_data(as_text=True)
    assert page.count('role="switch" aria-checked="false"') == 4
    token = csrf_token(page)
    answer = signed_in.post("/app/privacy/marketing/email", data={"csrf_token": token,
                                                                 "on": "yes"})
    assert answer.status_code == 303
    [(_, changes, context)] = world.asked("privacy", "update_consent")
    assert changes == {"marketing": {"email": True}} and context["via"] == "web"
    page = signed_in.get("/app/privacy").get_data(as_text=True)
    assert "News by email is on, from now on." in page
    assert 'role="switch" aria-checked="true" aria-labelledby="channel-email"' in page
    assert "News by email: on" in page and "on this site" in page


def test_a_privacy_signal_keeps_the_switches_off_and_says_so(signed_in, world):
    page = signed_in.get("/app/privacy", headers=GPC).get_data(as_text=True)
    assert "news stays off while it does" in page
    assert page.count("disabled>") >= 4
    signed_in.post("/app/privacy/marketing/sms", headers=GPC, data={
        "csrf_token": csrf_token(page), "on": "yes"})
    assert "privacy signal keeps news by text message off" in signed_in.get(
        "/app/privacy").get_data(as_text=True)


def test_there_is_no_switch_for_a_channel_that_does_not_exist(signed_in, world):
    token = form_token(signed_in, "/app/privacy")
    answer = signed_in.post("/app/privacy/marketing/pigeon", data={"csrf_token": token})
    assert answer.status_code == 404 and world.asked("privacy", "update_consent") == []


def test_an_export_is_started_followed_and_downloaded_with_the_session(signed_in, world):
    views = [{"id": EXPORT_ID, "type": "export", "status": "in_progress",
              "created_at": iso(NOW), "due_at": iso(NOW), "overdue": False,
              "completed_at": None, "download": None,
              "services": {"vault": {"status": "waiting", "detail": "no answer within 30 s"},
                           "accounts": {"status": "done"}}}]
    world.answer("privacy", "create_request", lambda *args: {"id": EXPORT_ID})
    world.answer("privacy", "get_request", lambda user_id, request_id: views[-1])
    world.answer("privacy", "download_export", lambda user_id, request_id: {
        "format": "jicm-export/1", "services": {"vault": {"messages": ["the keys"]}}})
    token = form_token(signed_in, "/app/privacy")
    started = signed_in.post("/app/privacy/export", data={"csrf_token": token})
    assert started.location == f"/app/privacy/requests/{EXPORT_ID}"
    page = signed_in.get(started.location).get_data(as_text=True)
    assert 'data-poll="3"' in page and "Check again" in page
    assert "Your messages and their recipients: <strong>waiting for its answer</strong>" in page
    views.append({**views[0], "status": "complete", "completed_at": iso(NOW),
                  "download": {"url": "https://x/api", "expires_at": iso(NOW)}})
    page = signed_in.get(started.location).get_data(as_text=True)
    assert "data-poll" not in page and "Download my data (JSON)" in page
    download = signed_in.get(f"/app/privacy/requests/{EXPORT_ID}/download")
    assert download.mimetype == "application/json"
    assert "attachment" in download.headers["Content-Disposition"]
    assert json.loads(download.get_data())["services"]["vault"]["messages"] == ["the keys"]


def test_another_persons_request_is_a_404_page(signed_in, world):
    world.answer("privacy", "get_request", refuse(NotFound("you have no privacy request x",
                                                           code="request_not_found")))
    world.answer("privacy", "download_export", refuse(NotFound("no", code="request_not_found")))
    for path in (f"/app/privacy/requests/{EXPORT_ID}",
                 f"/app/privacy/requests/{EXPORT_ID}/download", "/app/privacy/requests/%3Cx%3E"):
        answer = signed_in.get(path)
        assert answer.status_code == 404 and answer.mimetype == "text/html", path


def erasure_view(status: str) -> dict:
    part = "done" if status == "complete" else "pending"
    return {"id": ERASURE_ID, "type": "erasure", "status": status, "created_at": iso(NOW),
            "due_at": iso(NOW), "overdue": False, "completed_at": None, "download": None,
            "services": {name: {"status": part} for name in ("accounts", "vault", "billing")}}


def test_an_erasure_is_followed_after_the_account_closes(signed_in, world):
    statuses = ["in_progress"]
    world.answer("privacy", "create_request", lambda *args: {
        "id": ERASURE_ID, "type": "erasure", "status": "pending", "due_at": iso(NOW),
        "progress_token": "p" * 43})
    world.answer("privacy", "erasure_progress",
                 lambda request_id, token, client: erasure_view(statuses[-1]))
    token = form_token(signed_in, "/app/account/close")
    closed = signed_in.post("/app/account/close", data={"csrf_token": token,
                                                        "password": "my password"})
    assert closed.status_code == 303 and closed.location == "/erasure"
    assert set_cookies(closed)["jicm_session"].startswith("jicm_session=;")
    [(_, _, asked, context)] = world.asked("privacy", "create_request")
    assert asked == {"type": "erasure", "password": "my password"} and context["via"] == "web"
    signed_in.delete_cookie("jicm_session")
    page = signed_in.get("/erasure").get_data(as_text=True)
    assert "Your account is being erased" in page and 'data-poll="3"' in page
    assert world.asked("privacy", "erasure_progress")[0][:2] == (ERASURE_ID, "p" * 43)
    statuses.append("complete")
    page = signed_in.get("/erasure").get_data(as_text=True)
    assert "Your account is erased" in page and "data-poll" not in page
    assert "can no longer be used to log in" in page


def test_the_erasure_page_shows_nothing_to_a_browser_that_did_not_ask(client, world):
    assert client.get("/erasure").status_code == 404
    assert world.asked("privacy", "erasure_progress") == []


def test_a_wrong_password_for_an_erasure_is_said_beside_the_field(signed_in, world):
    world.answer("privacy", "create_request", refuse(Forbidden(
        "the password is not correct; an erasure needs your password",
        code="password_incorrect", details={"field": "password"})))
    token = form_token(signed_in, "/app/account/close")
    answer = signed_in.post("/app/account/close", data={"csrf_token": token, "password": "x"})
    assert answer.status_code == 403
    assert 'id="password-error"' in answer.get_data(as_text=True)
    assert "Kept, because tax law requires it" in answer.get_data(as_text=True)
    assert "for 10 years" in answer.get_data(as_text=True)


# Billing ----------------------------------------------------------------------------------------


def test_the_plans_stand_side_by_side_with_their_limits_and_the_way_up(signed_in):
    answer = signed_in.get("/app/billing")
    page = answer.get_data(as_text=True)
    for words in ("Free", "Premium (monthly)", "Premium (yearly)", "50 messages per switch",
                  "20 recipients per message", "Your plan", "Upgrade to Premium (monthly)"):
        assert words in page, words
    assert "releases are never held back by money" not in page
    csp = answer.headers["Content-Security-Policy"]
    assert "form-action 'self' https://checkout.stripe.com https://billing.stripe.com" in csp
    assert "unsafe-inline" not in csp
    assert "stripe" not in signed_in.get("/app/privacy").headers["Content-Security-Policy"]


def test_an_upgrade_goes_to_stripes_checkout_and_grants_nothing_itself(signed_in, world):
    world.answer("billing", "start_checkout", lambda user_id, email, body: {
        "url": "https://checkout.stripe.com/c/pay/cs_1", "plan": body["plan"],
        "expires_at": iso(NOW)})
    token = form_token(signed_in, "/app/billing")
    answer = signed_in.post("/app/billing/checkout", data={"csrf_token": token,
                                                          "plan": "premium_yearly"})
    assert answer.status_code == 303
    assert answer.location == "https://checkout.stripe.com/c/pay/cs_1"
    signed_in.post("/app/billing/checkout", data={"csrf_token": token, "plan": "free"})
    assert len(world.asked("billing", "start_checkout")) == 1, "only paid plans are bought"


def test_an_upgrade_refused_by_billing_is_said_in_words(signed_in, world):
    world.answer("billing", "start_checkout", refuse(Conflict(
        "you already have a subscription; change or cancel it in the customer portal "
        "(POST /api/v1/billing/portal)", code="already_subscribed")))
    token = form_token(signed_in, "/app/billing")
    signed_in.post("/app/billing/checkout", data={"csrf_token": token,
                                                  "plan": "premium_monthly"})
    page = signed_in.get("/app/billing").get_data(as_text=True)
    assert "Manage my subscription" in page and "/api/v1" not in page


def test_the_success_page_waits_for_the_webhook_and_says_so(signed_in, world):
    page = signed_in.get("/app/billing/success").get_data(as_text=True)
    assert "Waiting for Stripe to confirm your payment" in page and 'data-poll="3"' in page
    assert {method for _, method, _ in world.calls} == {"resolve_session", "overview"}
    world.overview = {**world.overview, "plan": "premium_monthly",
                      "plan_title": "Premium (monthly)", "status": "active",
                      "renews_at": iso(NOW), "can_manage": True}
    page = signed_in.get("/app/billing/success").get_data(as_text=True)
    assert "you are on the <strong>Premium (monthly)</strong> plan" in page
    assert "data-poll" not in page
    cancelled = signed_in.get("/app/billing/cancel").get_data(as_text=True)
    assert "Nothing was charged" in cancelled


def test_a_failed_payment_says_plainly_that_releases_do_not_depend_on_it(signed_in, world):
    world.overview = {**world.overview, "plan": "premium_monthly", "status": "past_due",
                      "plan_title": "Premium (monthly)", "can_manage": True}
    page = signed_in.get("/app/billing").get_data(as_text=True)
    assert "Your last payment did not go through." in page
    assert "releases are never held back by money" in page
    assert "Upgrade to" not in page and "Manage my subscription" in page


def test_manage_opens_stripes_portal(signed_in, world):
    world.answer("billing", "open_portal", lambda user_id: {"url": "https://billing.stripe.com/p/1"})
    token = form_token(signed_in, "/app/billing")
    answer = signed_in.post("/app/billing/portal", data={"csrf_token": token})
    assert answer.location == "https://billing.stripe.com/p/1"


def test_the_local_stand_in_is_where_billing_forms_lead_in_make_run(tmp_path, world):
    client = site_app(tmp_path, world, STRIPE_API_BASE="http://127.0.0.1:12111").test_client()
    client.set_cookie("jicm_session", TOKEN)
    csp = client.get("/app/billing").headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:12111;" in csp


# CSRF on every new form -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/cookies", "/app/privacy/marketing/email",
                                  "/app/privacy/export", "/app/billing/checkout",
                                  "/app/billing/portal"])
def test_every_new_form_refuses_a_post_without_its_csrf_token(signed_in, world, path):
    answer = signed_in.post(path, data={"choice": "accept", "on": "yes",
                                        "plan": "premium_monthly"})
    assert answer.status_code == 403 and "This form has expired" in answer.get_data(
        as_text=True)
    assert [m for _, m, _ in world.calls] == ["resolve_session"] or not world.calls


# The recipient's page ---------------------------------------------------------------------------


def released(**changes) -> dict:
    return {"message_id": "m", "recipient_id": "r", "recipient_name": "Grace",
            "sender_name": "Ada <b>Lovelace</b>", "subject": "For Grace",
            "body": "The keys are in the blue box.\n<script>alert(1)</script>",
            "inline": False, "released_at": "2030-07-05T10:00:00Z",
            "written_at": "2030-06-03T08:30:00Z", **changes}


def test_the_recipients_page_says_who_wrote_when_and_tracks_no_one(client, world):
    world.answer("vault", "read_released", lambda token, info: released())
    answer = client.get(f"/r/{READ_TOKEN}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "A message from <strong>Ada &lt;b&gt;Lovelace&lt;/b&gt;</strong> for Grace" in page
    assert "Written on 3 June 2030. Given to you on 5 July 2030." in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert f"/r/{READ_TOKEN}/letter.txt" in page and f"/r/{READ_TOKEN}/letter.eml" in page
    assert "It has no expiry date" in page
    assert answer.headers.getlist("Set-Cookie") == [], "no cookie at all"
    assert "cookie-banner" not in page
    csp = answer.headers["Content-Security-Policy"]
    assert "form-action 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and not re.search(r"https?://", csp)
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    assert not re.search(r'(src|href)="https?://', page), "nothing from anyone else"


def test_the_message_downloads_as_text_and_as_an_email(client, world):
    world.answer("vault", "read_released", lambda token, info: released())
    text = client.get(f"/r/{READ_TOKEN}/letter.txt")
    assert text.mimetype == "text/plain"
    assert text.headers["Content-Disposition"] == 'attachment; filename="For Grace.txt"'
    body = text.get_data(as_text=True)
    assert body.startswith("For Grace\n\nFrom: Ada <b>Lovelace</b>\nTo: Grace\n")
    assert "<script>alert(1)</script>" in body, "a text file keeps the words as written"
    eml = client.get(f"/r/{READ_TOKEN}/letter.eml")
    assert eml.mimetype == "message/rfc822"
    mail = message_from_bytes(eml.get_data(), policy=policy.default)
    assert mail["Subject"] == "For Grace"
    assert mail["From"].addresses[0].display_name == "Ada <b>Lovelace</b> via Just in Case"
    assert mail["Date"].datetime.isoformat() == "2030-06-03T08:30:00+00:00"
    assert "blue box" in mail.get_content()
    assert eml.headers.getlist("Set-Cookie") == []


def test_a_farewell_letter_not_due_yet_says_when_it_opens(client, world):
    world.answer("vault", "read_released", refuse(Conflict(
        "this letter is not due yet", code="not_yet_released",
        details={"opens_at": "2030-08-01T09:00:00Z"})))
    for path in (f"/r/{READ_TOKEN}", f"/r/{READ_TOKEN}/letter.txt"):
        answer = client.get(path)
        assert answer.status_code == 409 and answer.mimetype == "text/html"
        assert "1 August 2030 at 09:00 UTC" in answer.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/r/short", f"/r/{READ_TOKEN}", f"/r/{READ_TOKEN}/letter.eml"])
def test_anything_that_is_not_a_valid_link_is_the_same_404_page(client, world, path):
    world.answer("vault", "read_released", refuse(NotFound(
        "this link does not open any message", code="unknown_read_link")))
    answer = client.get(path)
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "This link does not open any message" in answer.get_data(as_text=True)


def test_the_site_has_a_print_stylesheet_for_the_letter(client):
    css = client.get("/static/site.css").get_data(as_text=True)
    rules = css[css.index("@media print"):]
    assert ".letter-actions" in rules and "display: none" in rules


def test_the_openapi_document_says_the_downloads_fail_as_pages(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    letter = paths["/r/{token}/letter.eml"]["get"]["responses"]
    assert "message/rfc822" in letter["200"]["content"]
    assert "text/html" in letter["404"]["content"]
    assert "text/plain" in paths["/r/{token}/letter.txt"]["get"]["responses"]["200"]["content"]
