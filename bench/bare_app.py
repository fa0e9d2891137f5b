"""The control for /send's requests/s: a bare Flask route under the Procfile's web server, doing no work.

`python bench/bare_app.py bare_app:create_app PORT WORKERS` serves it with the server `angora web` builds.
"""
from __future__ import annotations

import sys

from flask import Flask, jsonify

app = Flask(__name__)


@app.post("/send")
def send() -> tuple:
    """Answer like /send does, without validating or storing anything."""
    return jsonify({"run_id": "x", "message_id": "0-0"}), 202


def create_app() -> Flask:
    """The app, for servers started with the Procfile's factory flag."""
    return app


if __name__ == "__main__":
    from angora_rq.web.server import granian_server

    target, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    granian_server(target, "127.0.0.1", port, workers).serve()
