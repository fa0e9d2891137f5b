"""The control for /send's requests/s: a bare Flask route under the Procfile's web server, doing no work."""
from __future__ import annotations

from flask import Flask, jsonify

app = Flask(__name__)


@app.post("/send")
def send() -> tuple:
    """Answer like /send does, without validating or storing anything."""
    return jsonify({"run_id": "x", "message_id": "0-0"}), 202


def create_app() -> Flask:
    """The app, for servers started with the Procfile's factory flag."""
    return app
