"""The privacy service: consent, Global Privacy Control, export and erasure."""
