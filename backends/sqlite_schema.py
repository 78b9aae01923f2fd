"""The SQLite schema: its numbered migrations (sqlite-utils), and telling a botstate database from another program's."""

import contextlib
import os

import sqlite_utils

from records import StorageError

migrations = sqlite_utils.Migrations("botstate")


@migrations(name="0001_create_tables")
def _create_tables(db):
    db.execute(
        """CREATE TABLE bots (
            id TEXT PRIMARY KEY,
            slug TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            api_key_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            name TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE tickers (
            id TEXT PRIMARY KEY,
            symbol TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE user_bot_states (
            id TEXT PRIMARY KEY,
            bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            user_broker_account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
            ticker_id TEXT NOT NULL REFERENCES tickers (id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (bot_id, user_broker_account_id, ticker_id)
        )"""
    )


@migrations(name="0002_state_foreign_key_indexes")
def _index_state_foreign_keys(db):
    # Deleting an account or ticker cascades to its states: without these
    # indexes each such delete scans the whole state table.
    db.execute("CREATE INDEX idx_user_bot_states_account ON user_bot_states (user_broker_account_id)")
    db.execute("CREATE INDEX idx_user_bot_states_ticker ON user_bot_states (ticker_id)")


@migrations(name="0003_state_versions")
def _add_state_versions(db):
    # Rows written before versions existed start at 1, like a newly created row.
    db.execute("ALTER TABLE user_bot_states ADD COLUMN version INTEGER NOT NULL DEFAULT 1")


@migrations(name="0004_slim_state_indexes")
def _slim_state_indexes(db):
    # Every new row used to touch five B-trees. Two remain: the table and the
    # (bot, account, ticker) key that every read and write uses. Nothing looks a
    # row up by its random `id`, and account or ticker deletes (no command does
    # them) may scan. Inserts got twice as fast. SQLite drops a primary key only
    # by rebuilding the table.
    db.execute(
        """CREATE TABLE user_bot_states_new (
            id TEXT NOT NULL,
            bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            user_broker_account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
            ticker_id TEXT NOT NULL REFERENCES tickers (id) ON DELETE CASCADE,
            state TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (bot_id, user_broker_account_id, ticker_id)
        )"""
    )
    db.execute(
        "INSERT INTO user_bot_states_new SELECT id, bot_id, user_broker_account_id, ticker_id,"
        " state, version, created_at, updated_at FROM user_bot_states"
    )
    db.execute("DROP TABLE user_bot_states")
    db.execute("ALTER TABLE user_bot_states_new RENAME TO user_bot_states")


@migrations(name="0005_bot_keys")
def _move_keys_to_their_own_table(db):
    # A bot may have several keys at once: during a rotation's grace period the
    # old ones work until expires_at. Each key records when it was last used.
    db.execute(
        """CREATE TABLE bot_keys (
            bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            key_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            last_used_at TEXT,
            PRIMARY KEY (bot_id, key_hash)
        ) WITHOUT ROWID"""
    )
    db.execute("INSERT INTO bot_keys (bot_id, key_hash, created_at) SELECT id, api_key_hash, created_at FROM bots")
    db.execute("ALTER TABLE bots DROP COLUMN api_key_hash")


# Every change of a state row appends an entry to the change log, in the statement that
# makes it: an insert or update its row as it now is, a delete (a cascade's too) the row's
# last version, dated no earlier than its last write. seq is the rowid: writers take turns,
# so seqs follow commit order, and the log never loses its largest entry (changes.py), so no
# seq is handed out twice. Each entry points to the row's entry before it (prev_seq), and the
# row to its newest (log_seq), which the statements that write rows set to the seq its entry
# takes (SQLITE.next_log_seq); one that does not (an import, a hand-made UPDATE) gets it here.
_LOG_UPSERT = """
INSERT INTO state_changes (seq, bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at, prev_seq)
VALUES ({seq}, NEW.bot_id, NEW.user_broker_account_id, NEW.ticker_id, NEW.id, 'upsert', NEW.version, NEW.state,
        NEW.created_at, NEW.updated_at, {prev});
UPDATE user_bot_states SET log_seq = last_insert_rowid() WHERE {unset} AND rowid = NEW.rowid
"""
_LOG_INSERT = _LOG_UPSERT.format(seq="NEW.log_seq", prev="NULL", unset="NEW.log_seq IS NULL")
_LOG_UPDATE = _LOG_UPSERT.format(
    seq="CASE WHEN NEW.log_seq IS NOT OLD.log_seq THEN NEW.log_seq END",
    # A row whose version did not go up (an import took it back) starts its history anew.
    prev="CASE WHEN NEW.version > OLD.version THEN OLD.log_seq END",
    unset="NEW.log_seq IS OLD.log_seq",
)
_LOG_DELETE = """
INSERT INTO state_changes (bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at, prev_seq)
VALUES (OLD.bot_id, OLD.user_broker_account_id, OLD.ticker_id, OLD.id, 'delete', OLD.version, NULL,
        OLD.created_at, max(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), OLD.updated_at), OLD.log_seq);
INSERT INTO state_tombstones (bot_id, account_id, ticker_id, seq) VALUES
    (OLD.bot_id, OLD.user_broker_account_id, OLD.ticker_id, last_insert_rowid())
"""


@migrations(name="0006_change_log")
def _add_change_log(db):
    db.execute(
        """CREATE TABLE state_changes (
            seq INTEGER PRIMARY KEY,
            bot_id TEXT NOT NULL,
            account_id TEXT NOT NULL,
            ticker_id TEXT NOT NULL,
            row_id TEXT NOT NULL,
            op TEXT NOT NULL,
            version INTEGER NOT NULL,
            state TEXT,
            created_at TEXT NOT NULL,
            at TEXT NOT NULL,
            prev_seq INTEGER
        )"""
    )
    # The feed reads a bot's entries in seq order: an index that only grows at its end. A row's
    # entries are found by their links instead (an index by row would take a write to a page
    # anywhere in it for every entry).
    db.execute("CREATE INDEX state_changes_feed ON state_changes (bot_id, seq)")
    db.execute("ALTER TABLE user_bot_states ADD COLUMN log_seq INTEGER")
    # A key's deleted rows (their delete's seq), for the history and as-of reads of a row that is gone.
    db.execute(
        """CREATE TABLE state_tombstones (
            bot_id TEXT NOT NULL,
            account_id TEXT NOT NULL,
            ticker_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (bot_id, account_id, ticker_id, seq)
        ) WITHOUT ROWID"""
    )
    # What pruning removed: per bot, the largest seq gone and the time since which history is whole.
    db.execute(
        """CREATE TABLE change_horizons (
            bot_id TEXT PRIMARY KEY,
            pruned_seq INTEGER NOT NULL,
            kept_since TEXT
        ) WITHOUT ROWID"""
    )
    # Per row, the time since which its history is whole, once BOTSTATE_HISTORY_VERSIONS pruned it.
    db.execute(
        """CREATE TABLE change_floors (
            bot_id TEXT NOT NULL,
            account_id TEXT NOT NULL,
            ticker_id TEXT NOT NULL,
            kept_since TEXT NOT NULL,
            PRIMARY KEY (bot_id, account_id, ticker_id)
        ) WITHOUT ROWID"""
    )
    # The rows that exist now are their own first entries.
    db.execute(
        "INSERT INTO state_changes (seq, bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at)"
        " SELECT rowid, bot_id, user_broker_account_id, ticker_id, id, 'upsert', version, state, created_at,"
        " updated_at FROM user_bot_states"
    )
    db.execute("UPDATE user_bot_states SET log_seq = rowid")
    for event, action in (("INSERT", _LOG_INSERT), ("UPDATE OF state, version, updated_at", _LOG_UPDATE)):
        db.execute(
            f"CREATE TRIGGER state_changes_{event.split()[0].lower()} AFTER {event} ON user_bot_states"
            f" BEGIN {action}; END"
        )
    db.execute(f"CREATE TRIGGER state_changes_delete AFTER DELETE ON user_bot_states BEGIN {_LOG_DELETE}; END")


# The feed finds a bot's entries by runs instead of an index by bot: a run is a stretch of
# seqs from the entry that starts it to where the next run (of any bot) starts, and holds one
# bot's entries. Writers take turns and append at the end, so a run is a write of one bot, or
# a series of them, and only an entry that the run before it does not hold for its bot adds a
# row here (one that is left over, from entries deleted, is replaced); an index by (bot, seq)
# took a write for every entry, a third of what a bulk write cost. A run that loses its
# entries to pruning is dropped (backends/pruning.py): its empty stretch joins the run before it.
_RUN_START = """
INSERT OR REPLACE INTO change_runs (first_seq, bot_id) SELECT NEW.seq, NEW.bot_id
WHERE (SELECT bot_id FROM change_runs WHERE first_seq <= NEW.seq ORDER BY first_seq DESC LIMIT 1) IS NOT NEW.bot_id
"""


@migrations(name="0007_change_runs")
def _find_entries_by_runs(db):
    db.execute("CREATE TABLE change_runs (first_seq INTEGER PRIMARY KEY, bot_id TEXT NOT NULL)")
    db.execute("CREATE INDEX change_runs_bot ON change_runs (bot_id, first_seq)")
    db.execute(
        "INSERT INTO change_runs (first_seq, bot_id) SELECT seq, bot_id FROM"
        " (SELECT seq, bot_id, lag(bot_id) OVER (ORDER BY seq) AS bot_before FROM state_changes)"
        " WHERE bot_before IS NOT bot_id"
    )
    db.execute(f"CREATE TRIGGER change_runs_start AFTER INSERT ON state_changes BEGIN {_RUN_START}; END")
    db.execute("DROP INDEX state_changes_feed")


# The answers to writes sent with an Idempotency-Key (backends/answers.py): a day per (bot, key),
# the body as the server sent it, compressed. A rowid table: the bodies run to megabytes.
@migrations(name="0008_idempotent_requests")
def _keep_idempotent_answers(db):
    db.execute(
        "CREATE TABLE idempotent_requests (bot_id TEXT NOT NULL REFERENCES bots (id) ON DELETE CASCADE,"
        " idem TEXT NOT NULL, fingerprint BLOB NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL,"
        " created_at TEXT NOT NULL, PRIMARY KEY (bot_id, idem))"
    )
    db.execute("CREATE INDEX idempotent_requests_age ON idempotent_requests (created_at)")


# Admin keys (backends/admin_keys.py) work on /api/admin/ only, bot keys on bot endpoints only;
# a bot key's scope says whether it may write (every key made before scopes could).
@migrations(name="0009_admin_keys_and_key_scopes")
def _add_admin_keys_and_key_scopes(db):
    db.execute("ALTER TABLE bot_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'write' CHECK (scope IN ('write', 'read'))")
    db.execute(
        "CREATE TABLE admin_keys (name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE,"
        " created_at TEXT NOT NULL, last_used_at TEXT)"
    )


def create_private(path):
    """Create `path` empty, readable and writable by its owner only (0600 under any umask
    that leaves the owner's bits); an existing file keeps its mode. SQLite gives a
    database's -wal and -shm its mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def holds_botstate_schema(conn):
    """Whether the SQLite database of a connection holds botstate's schema: its migrations are recorded in it."""
    return bool(migrations.applied(sqlite_utils.Database(conn)))


def refuse_foreign(conn):
    """Raise StorageError when a SQLite database holds other tables and no botstate schema."""
    if holds_botstate_schema(conn):
        return
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )
    names = [name.encode("unicode_escape").decode() for (name,) in conn.execute(query)]
    if names:
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise StorageError(
            f"it is a SQLite database of another program (tables: {listed}) and holds no botstate schema"
        )
