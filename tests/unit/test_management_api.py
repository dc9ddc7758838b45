"""Where the dead-letter policy is sent: the management API of the broker behind AMQP_URI,
with its credentials and vhost, unless JICM_BROKER_MANAGEMENT_URL says otherwise."""

from __future__ import annotations

import re

from shared.config import load_settings
from shared.events.management_api import ManagementApi, dead_letter_policy, policy_path


def api(**env: str) -> ManagementApi:
    return ManagementApi.from_settings(load_settings({"JICM_ENV": "test", **env}))


def test_it_finds_the_management_api_on_the_amqp_host_with_the_amqp_credentials():
    found = api(AMQP_URI="amqp://jicm:s%40cret@rabbit.internal:5672/jicm%2Fprod")
    assert found.base_url == "http://rabbit.internal:15672"
    assert (found.username, found.password, found.vhost) == ("jicm", "s@cret", "jicm/prod")
    assert policy_path(found) == "policies/jicm%2Fprod/jicm-dead-letters"


def test_the_default_vhost_is_slash_and_amqps_means_https():
    found = api(AMQP_URI="amqps://guest:guest@broker/")
    assert (found.base_url, found.vhost) == ("https://broker:15671", "/")
    assert policy_path(found) == "policies/%2F/jicm-dead-letters"


def test_a_given_management_url_wins_and_may_carry_its_own_user():
    found = api(AMQP_URI="amqp://app:pw@broker:5672/",
                JICM_BROKER_MANAGEMENT_URL="https://admin:root@mgmt.internal:443/rabbit/")
    assert found.base_url == "https://mgmt.internal:443/rabbit"
    assert (found.username, found.password) == ("admin", "root")


def test_the_policy_bounds_only_dead_letter_queues_and_refuses_rather_than_drops():
    policy = dead_letter_policy(500)
    assert policy["definition"] == {"max-length": 500, "overflow": "reject-publish"}
    assert policy["apply-to"] == "queues"
    pattern = re.compile(policy["pattern"])
    assert pattern.match("jicm.delivery.ReminderDue.dead")
    assert not pattern.match("jicm.delivery.ReminderDue")
    assert not pattern.match("jicm.retry.5s")
