"""Accounts: users, sessions, email verification and password reset tokens."""
