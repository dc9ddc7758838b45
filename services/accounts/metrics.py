"""What the accounts service counts (served by shared/metrics.py's endpoint)."""

from prometheus_client import Counter

SIGN_UPS = Counter("jicm_signups", "accounts created (a sign-up with a known address is not one)")
LOG_INS = Counter("jicm_logins", "log-in attempts by outcome: ok, refused, error", ["outcome"])
