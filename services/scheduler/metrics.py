"""What the scheduler counts (served by shared/metrics.py's endpoint). Its liveness
figures (heartbeat, lag, held-back switches) are the installation's, reported by the
gateway's /metrics."""

from prometheus_client import Counter

CHECK_INS = Counter("jicm_checkins", "check-ins that started a new cycle, by method: api, link",
                    ["method"])
