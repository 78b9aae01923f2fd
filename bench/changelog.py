"""The change log's part of `make bench`: a data set without it, and the disk each logged version takes.

The bench compares botstate with its change log against the same botstate with the log's
triggers dropped from its database, so "log off" is the cost of everything else.
"""

import contextlib
import json
import os
import sqlite3

import keys
from app import create_app
from storage import Credentials, StateWrite

# The triggers the migrations create (backends/sqlite_schema.py, backends/postgres_schema.py).
SQLITE_TRIGGERS = ("state_changes_insert", "state_changes_update", "state_changes_delete", "change_runs_start")
POSTGRES_TRIGGER = "state_changes_log"


def drop_change_log(database):
    """Drop the change log's triggers from a bench database (DATABASE or DATABASE_URL): writes then log nothing."""
    if "DATABASE_URL" in database:
        import psycopg

        with psycopg.connect(database["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER {POSTGRES_TRIGGER} ON user_bot_states")
        return
    with contextlib.closing(sqlite3.connect(database["DATABASE"])) as conn:
        for trigger in SQLITE_TRIGGERS:
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.commit()


def largest_seq(database):
    """The largest seq of a bench database's change log: where a reader that kept up polls from."""
    if "DATABASE_URL" in database:
        import psycopg

        with psycopg.connect(database["DATABASE_URL"], autocommit=True) as conn:
            return conn.execute("SELECT coalesce(max(seq), 0) FROM state_changes").fetchone()[0]
    with contextlib.closing(sqlite3.connect(database["DATABASE"])) as conn:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM state_changes").fetchone()[0]


def file_bytes(path):
    """The bytes a SQLite database takes once its WAL is folded in."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal") if os.path.exists(f"{path}{suffix}"))


def write_many(path, pairs, writes, state_of, log):
    """Write `writes` states over `pairs` in 1000-item requests' worth, with the log on or off; the file's bytes."""
    app = create_app({"DATABASE": path, "LOG_LEVEL": "WARNING"})
    storage = app.extensions["botstate.storage"]
    key_hash = keys.hash_key(keys.generate_key())
    bot = storage.create_bot("disk", "disk", key_hash)
    accounts = sorted({account for account, _ in pairs})
    tickers = sorted({ticker for _, ticker in pairs})
    storage.import_accounts([(account, None) for account in accounts])
    storage.import_tickers([(f"T{n}", ticker) for n, ticker in enumerate(tickers)])
    if not log:
        storage.close()
        drop_change_log({"DATABASE": path})
    for start in range(0, writes, 1000):
        batch = [
            StateWrite(*pairs[n % len(pairs)], json.dumps(state_of(n))) for n in range(start, min(start + 1000, writes))
        ]
        storage.write_states(Credentials(bot["id"], key_hash), batch)
    storage.close()
    return file_bytes(path)


def disk_use(work, pairs, writes, state_of):
    """(bytes per logged version, database bytes with the log, without it) after `writes` writes."""
    with_log = write_many(str(work / "disk-log.db"), pairs, writes, state_of, log=True)
    without = write_many(str(work / "disk-nolog.db"), pairs, writes, state_of, log=False)
    return (with_log - without) / writes, with_log, without
