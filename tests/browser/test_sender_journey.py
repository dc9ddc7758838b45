"""A sender's whole life on the site, as a person does it, against `make run`'s processes:
sign up, confirm the address from the mail, log in, check in and see the deadline move,
write a message for two people, change the schedule, pause and resume, change the
password, log out and back in, and close the account. Every page passes axe-core and is
photographed at 1280 and 375 pixels (var/screenshots/)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, check_page, link_in_mail, log_in, sign_up

pytestmark = pytest.mark.browser

EMAIL = "ada.journey@example.org"
NEW_PASSWORD = "the lighthouse keeper sleeps at noon"


def deadline_of(page: Page) -> datetime:
    due = page.get_by_role("listitem").filter(has_text="Check-in due").locator("time")
    return datetime.fromisoformat(due.get_attribute("datetime"))


def test_a_sender_goes_from_the_landing_page_to_closing_the_account(page: Page, full_system):
    page.goto("/")
    check_page(page, "landing")
    expect(page.get_by_role("heading", name="Plans")).to_be_visible()
    page.get_by_role("link", name="Privacy policy").click()
    expect(page.get_by_text("Version 2024-04-29")).to_be_visible()
    check_page(page, "privacy")

    # Sign up: a mistake first, shown beside its field with what was typed kept.
    page.goto("/")
    page.get_by_role("button", name="Sign up for free").click()
    check_page(page, "signup")
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    expect(page.get_by_text("Please give your date of birth")).to_have_count(2)
    expect(page.get_by_label("Email address")).to_have_value(EMAIL)
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    check_page(page, "signup-errors")
    sign_up(page, EMAIL)
    expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
    check_page(page, "signed-up")

    # The verification mail's link: a page with a button; the press confirms.
    page.goto(link_in_mail(full_system, "Confirm", "/verify?token=", count=1))
    check_page(page, "verify")
    page.get_by_role("button", name="Confirm my address").click()
    expect(page.get_by_role("heading", name="Your address is confirmed")).to_be_visible()
    check_page(page, "verified")

    # Log in: the dashboard says the switch is armed, in the browser's time zone.
    page.goto("/login")
    check_page(page, "login")
    log_in(page, EMAIL)
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()
    expect(page.get_by_text("Armed: next check-in due")).to_be_visible()
    expect(page.get_by_text("Europe/Paris").first).to_be_visible()
    expect(page.get_by_role("img", name="Timeline of this cycle")).to_be_visible()
    check_page(page, "dashboard")

    # Check in: the deadline moves.
    before = deadline_of(page)
    page.get_by_role("button", name="I\u2019m here (check in)").click()
    expect(page.get_by_text("Checked in. Your next check-in is due")).to_be_visible()
    assert deadline_of(page) > before

    # A message for two people, previewed, then sealed.
    page.get_by_role("button", name="Write a message").click()
    check_page(page, "message-new")
    page.get_by_label("Subject").fill("For Grace and Alan")
    page.get_by_label("Your message").fill("The keys are in the blue box.\nWith love.")
    page.get_by_label("Name of recipient 1").fill("Grace")
    page.get_by_label("Email of recipient 1").fill("grace@example.org")
    page.get_by_role("button", name="Add a recipient").click()
    page.get_by_label("Name of recipient 2").fill("Alan")
    page.get_by_label("Email of recipient 2").fill("not an address")
    page.get_by_role("button", name="Seal this message").click()
    expect(page.get_by_role("alert")).to_contain_text("email address")
    expect(page.get_by_label("Email of recipient 2")).to_have_value("not an address")
    page.get_by_label("Email of recipient 2").fill("alan@example.org")
    page.get_by_role("button", name="Preview the mail").click()
    preview = page.get_by_role("region", name="What each recipient will receive")
    expect(preview.get_by_text("To: Alan <alan@example.org>")).to_be_visible()
    check_page(page, "message-preview")
    page.get_by_role("button", name="Seal this message").click()
    expect(page.get_by_text("is sealed")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="For Grace and Alan")
    expect(row.get_by_role("cell").nth(1)).to_have_text("2")
    check_page(page, "messages")

    # The schedule, in days and hours, with what it means.
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_role("button", name="Settings").click()
    check_page(page, "switch-settings")
    interval = page.get_by_role("group", name="Check in every")
    interval.get_by_label("Days").fill("10")
    interval.get_by_label("Hours").fill("12")
    grace = page.get_by_role("group", name="Then wait (grace period)")
    grace.get_by_label("Days").fill("3")
    grace.get_by_label("Hours").fill("0")
    page.get_by_role("button", name="Save the schedule").click()
    expect(page.get_by_text("go out 13 days and 12 hours after your last check-in").first
           ).to_be_visible()

    # Pause for a week, then resume.
    back = (date.today() + timedelta(days=7)).isoformat()
    page.get_by_label("Back on").fill(back)
    page.get_by_role("button", name="Pause until then").click()
    expect(page.get_by_text("Paused until").first).to_be_visible()
    check_page(page, "switch-paused")
    page.get_by_role("button", name="Resume now").click()
    expect(page.get_by_text("Resumed: the clock runs again")).to_be_visible()
    expect(page.get_by_text("Armed: next check-in due")).to_be_visible()

    # A new password: the current one is asked for.
    page.get_by_role("link", name="Account").click()
    check_page(page, "account")
    page.get_by_label("Current password").fill("not my password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    expect(page.get_by_text("Your current password is not the one you typed").first
           ).to_be_visible()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    expect(page.get_by_text("Your password is changed")).to_be_visible()
    expect(page.get_by_text("(this device)")).to_be_visible()

    # Log out, and back in with the new password.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out")).to_be_visible()
    log_in(page, EMAIL, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("The email address or password is incorrect")
    log_in(page, EMAIL, NEW_PASSWORD)
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()

    # Close the account: the password again, then it is gone.
    page.get_by_role("link", name="Account").click()
    page.get_by_role("link", name="Close my account").click()
    check_page(page, "close")
    page.get_by_label("Your password, to confirm").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Close my account and erase everything").click()
    expect(page.get_by_role("heading", name=re.compile("Your account is (being )?erased"))
           ).to_be_visible()
    log_in(page, EMAIL, NEW_PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("The email address or password is incorrect")


def test_a_forgotten_password_is_mailed_a_link_to_a_page_in_the_same_look(page: Page,
                                                                          full_system):
    sign_up(page, "forgetful@example.org")
    page.goto("/login")
    page.get_by_role("link", name="Forgot your password?").click()
    check_page(page, "forgot")
    page.get_by_label("Email address").fill("forgetful@example.org")
    page.get_by_role("button", name="Mail me a link").click()
    expect(page.get_by_text("a link to choose a new password is on its way")).to_be_visible()
    page.goto(link_in_mail(full_system, "password", "/reset?token=", count=3))
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    check_page(page, "reset")
    page.goto("/c/" + "x" * 40)
    check_page(page, "checkin-link")
    page.goto("/app/nothing-here")
    expect(page.get_by_role("heading", name="There is nothing here")).to_be_visible()
    check_page(page, "not-found")
