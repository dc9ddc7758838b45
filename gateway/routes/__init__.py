"""The gateway's blueprints, one per area of the API."""
