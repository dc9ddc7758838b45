"""Billing: plans and entitlements, Stripe checkout and portal, webhooks, erasure."""
