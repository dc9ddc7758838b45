"""What billing counts (served by shared/metrics.py's endpoint)."""

from prometheus_client import Counter

STRIPE_EVENTS_PROCESSED = Counter("jicm_stripe_events",
                                  "Stripe webhook events processed, by outcome", ["outcome"])
