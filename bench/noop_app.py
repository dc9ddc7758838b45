"""A Flask app with one route that does nothing: the floor under the gateway's figures.

The `checkin` benchmark serves it under the gateway's own gunicorn settings
(`gunicorn -c gateway/gunicorn_conf.py bench.noop_app:app`), so what a check-in costs
beyond it is the gateway's own work (authentication, validation, RPC) and not gunicorn's,
Flask's or the access log's. It imports nothing of the project.
"""

from __future__ import annotations

from flask import Flask, request

app = Flask(__name__)


@app.route("/noop", methods=["GET", "POST"])
def noop() -> dict:
    """Read the JSON body, if any, as the gateway's routes do, and answer `{}`."""
    request.get_json(silent=True)
    return {}
