"""The HTTP gateway: a Flask app that turns requests into RPC calls to the services."""
