"""What privacy counts (served by shared/metrics.py's endpoint); the requests it holds are
read from its store at scrape time (`request_figures.py`)."""

from prometheus_client import Counter

REQUESTS_MADE = Counter("jicm_privacy_requests", "data subject requests made, by type", ["type"])
