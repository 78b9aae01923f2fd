"""The ceiling: a trivial Flask route under the same waitress settings, parsing a 1-state body."""

import json
import logging
import sys

from flask import Flask, jsonify, request
from waitress import serve

app = Flask(__name__)


@app.post("/api/bots/<slug>/state")
def trivial(slug):
    """Parse the body and answer, nothing else."""
    body = json.loads(request.get_data())
    return jsonify(success=True, total=len(body["states"]))


if __name__ == "__main__":
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as serve.py does
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=int(sys.argv[2]), _quiet=True)
