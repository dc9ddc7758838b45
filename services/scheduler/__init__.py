"""The scheduler service: switches, check-ins, reminders, and firing."""
