"""A reference below the ceiling: bare Flask routes that each make the one SQLite call a request needs.

No authentication, validation, checks or log line; the same waitress settings as
the ceiling. What they reach bounds what any SQLite-backed route can reach here.
"""

import json
import logging
import sqlite3
import sys
import threading
import uuid

from flask import Flask, jsonify, request
from waitress import serve

app = Flask(__name__)
DATABASE = sys.argv[3] if len(sys.argv) > 3 else ":memory:"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS states (id TEXT, bot TEXT, account TEXT, ticker TEXT,"
    " state TEXT, version INTEGER, UNIQUE (bot, account, ticker))"
)
local = threading.local()
write_lock = threading.Lock()


def connection():
    """This thread's connection."""
    if not hasattr(local, "conn"):
        local.conn = sqlite3.connect(DATABASE, isolation_level=None)
        local.conn.execute("PRAGMA synchronous = NORMAL")
    return local.conn


@app.post("/api/bots/<slug>/state")
def upsert(slug):
    """Parse a 1-state body and upsert it: one statement, writers queued on a lock."""
    item = json.loads(request.get_data())["states"][0]
    with write_lock:
        row_id, version = (
            connection()
            .execute(
                "INSERT INTO states VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (bot, account, ticker)"
                " DO UPDATE SET state = excluded.state, version = version + 1 RETURNING id, version",
                (str(uuid.uuid4()), slug, item["accountId"], item["tickerId"], json.dumps(item["state"])),
            )
            .fetchone()
        )
    return jsonify(success=True, id=row_id, version=version)


@app.get("/api/bots/<slug>/state/<account>/<ticker>")
def read(slug, account, ticker):
    """Read one row by key: one statement."""
    row = (
        connection()
        .execute(
            "SELECT id, state, version FROM states WHERE bot = ? AND account = ? AND ticker = ?",
            (slug, account, ticker),
        )
        .fetchone()
    )
    return jsonify(data=None if row is None else {"id": row[0], "state": json.loads(row[1]), "version": row[2]})


if __name__ == "__main__":
    setup = sqlite3.connect(DATABASE)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute(SCHEMA)
    setup.close()
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as serve.py does
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=int(sys.argv[2]), _quiet=True)
