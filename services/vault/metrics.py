"""What the vault counts about releases (served by shared/metrics.py's endpoint)."""

from prometheus_client import Counter

RELEASES_STARTED = Counter("jicm_releases_started",
                           "fired switches whose release the vault began (one CheckInMissed each)")
RELEASES_COMPLETED = Counter("jicm_releases_completed",
                             "releases finished, by outcome: released (every message handed to "
                             "delivery and the scheduler told), refused", ["outcome"])
MESSAGES_RELEASED = Counter("jicm_messages_released", "messages released to their recipients")
