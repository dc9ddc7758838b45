"""Delivery: the outgoing mail log, the sending pipeline over SMTP, the suppression list."""
