"""SQLite storage: every SQL statement of the service lives behind this interface."""

import contextlib
import dataclasses
import enum
import fcntl
import functools
import json
import logging
import os
import pathlib
import sqlite3
import threading
import time
import uuid

import sqlite_utils

import diagnosis

log = logging.getLogger("botstate.storage")

PROGRESS_EVERY = 500
MIN_SQLITE_VERSION = (3, 35)
# Hex digits of a key's hash shown to tell keys apart (`flask bots keys`).
KEY_FINGERPRINT_LENGTH = 12
# Seconds between two writes of the keys' last use, by the checkpoint thread.
KEY_USE_FLUSH_INTERVAL = 5

# Seconds between WAL checkpoints once start_checkpoints() runs.
CHECKPOINT_INTERVAL = 0.2
# WAL pages (of 4 KiB) past which a checkpoint makes the WAL start over, and how
# long it waits for readers to let it. SQLite's own checkpoints come at 1000 pages.
WAL_RESTART_FRAMES = 1000
RESTART_WAIT_MS = 100

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
# A random (version 4) UUID for a new row, in the form uuid.uuid4() writes, made by
# SQLite: uuid4() reads os.urandom, which gives up the GIL, and each time a
# writer gives up the GIL it waits for it behind the other threads.
NEW_UUID = (
    "lower(printf('%s-%s-4%s-%s%s-%s', hex(randomblob(4)), hex(randomblob(2)),"
    " substr(hex(randomblob(2)), 2), substr('89ab', 1 + (random() & 3), 1),"
    " substr(hex(randomblob(2)), 2), hex(randomblob(6))))"
)

# Primary SQLite result codes that mean the database, not the request, is at fault.
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_PERM,
}

migrations = sqlite_utils.Migrations("botstate")


def _database_fault(error):
    """DatabaseBusy or DatabaseUnavailable when a sqlite3 error is the database's fault, else None."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in _BUSY_CODES:
        return DatabaseBusy
    if primary in _UNAVAILABLE_CODES:
        return DatabaseUnavailable
    return None


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


class StorageError(Exception):
    """Base class of the errors the storage layer raises."""


class DatabaseBusy(StorageError):
    """The write lock could not be had within the busy timeout."""


class DatabaseUnavailable(StorageError):
    """The database file cannot be opened, read or written."""


class Conflict(StorageError):
    """A unique key (slug, id, symbol) is already taken."""


class NotFound(StorageError):
    """The named row does not exist."""


class StaleKey(StorageError):
    """The bot's key changed after the request authenticated with the old one."""


class ItemError(enum.Enum):
    """Why one item of a bulk write failed; the value is the client-facing message."""

    TICKER_NOT_FOUND = "Ticker not found"
    ACCOUNT_NOT_FOUND = "Account not found"
    STATE_TOO_LARGE = "State exceeds {max_state_bytes} bytes"
    FAILED = "Failed to update state"


@dataclasses.dataclass(frozen=True)
class VersionConflict:
    """A write or delete whose expected version is not the stored one (0: no row)."""

    expected: object
    found: int


@dataclasses.dataclass(frozen=True)
class StateWrite:
    """One state to write: canonical lowercase ids, the state (or merge patch) as JSON text,
    and the version the row must have (0: must not exist; None: any)."""

    account_id: str
    ticker_id: str
    state_json: str
    expected_version: int | None = None


@dataclasses.dataclass(frozen=True)
class StateRow:
    """A stored state row; the state is the stored JSON text."""

    id: str
    bot_id: str
    account_id: str
    ticker_id: str
    state_json: str
    version: int
    created_at: str
    updated_at: str


_SELECT_BOTS = (
    "SELECT id, slug, name, created_at AS createdAt,"
    " (SELECT count(*) FROM user_bot_states WHERE bot_id = bots.id) AS states FROM bots"
)

_STATE_COLUMNS = "id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at"
# A page of states is counted as its states' bytes and this many more per row (its
# ids, version and times as JSON); it ends past DEFAULT_PAGE_BYTES unless told otherwise.
PAGE_ROW_OVERHEAD = 256
DEFAULT_PAGE_BYTES = 4 * 1024 * 1024
UNBOUNDED_PAGE_BYTES = 2**62  # max_bytes=None: the row limit alone bounds the page


def page_of(rows, limit):
    """(StateRows of a page, whether more follow) from rows of a page query, each ending in
    how many rows the query fetched before it cut the page at its byte limit."""
    fetched = rows[0][-1] if rows else 0
    page = [StateRow(*row[:-1]) for row in rows[:limit]]
    return page, fetched > len(page)


# A key past its grace period, as a condition on bot_keys.
_EXPIRED = f"(expires_at IS NOT NULL AND expires_at <= {NOW})"


def _key_works(bot, key_hash):
    """SQL: whether `key_hash` is one of the bot's keys and not past its grace period.

    The key itself was compared in constant time when the request authenticated
    (keys.works); this is the check that the key still works, made again
    in the statement that reads or writes, so a rotation in between is seen.
    """
    return f"EXISTS (SELECT 1 FROM bot_keys WHERE bot_id = {bot} AND key_hash = {key_hash} AND NOT {_EXPIRED})"


# Whether the key works, and the bot's row, in one read. Parameters: key hash, account, ticker, bot.
_READ_STATE_AND_KEY = (
    f"SELECT {_key_works('bots.id', '?')}, "
    + ", ".join(f"s.{column.strip()}" for column in _STATE_COLUMNS.split(","))
    + " FROM bots LEFT JOIN user_bot_states AS s ON s.bot_id = bots.id"
    " AND s.user_broker_account_id = ? AND s.ticker_id = ? WHERE bots.id = ?"
)

# One statement writes a state and enforces expectedVersion atomically: the SELECT's
# WHERE refuses to create a row unless none was expected, and the DO UPDATE's WHERE
# refuses to touch a row whose version is not the expected one. No row back: conflict.
# Parameters: ?1 bot, ?2 account, ?3 ticker, ?4 state (or patch), ?5 expected version.
_WRITE_STATE = """
INSERT INTO user_bot_states
    (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)
SELECT {new_id}, ?1, ?2, ?3, {new_state}, 1, {now}, {now}
WHERE (?5 IS NULL OR ?5 = 0 OR EXISTS (
    SELECT 1 FROM user_bot_states
    WHERE bot_id = ?1 AND user_broker_account_id = ?2 AND ticker_id = ?3
)){checks}
ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET
    state = {updated_state},
    version = user_bot_states.version + 1,
    updated_at = excluded.updated_at
WHERE (?5 IS NULL OR user_bot_states.version = ?5){update_checks}
RETURNING {columns}
"""
# The checks the full path makes before an item, for the single-item write that
# runs as one statement outside any explicit transaction (each statement in the
# write lock is a wait for the GIL, which other threads hold). It writes only when
# all pass, so no row back means "ask the full path", never a different outcome.
# Parameters: ?6 the key hash, ?7 the size limit in bytes (NULL: none).
_CHECKS = f"""
    AND {_key_works("?1", "?6")}
    AND EXISTS (SELECT 1 FROM accounts WHERE id = ?2)
    AND EXISTS (SELECT 1 FROM tickers WHERE id = ?3)
    AND (?7 IS NULL OR length(CAST({{new_state}} AS BLOB)) <= ?7)"""
_UPDATE_CHECKS = """
    AND (?7 IS NULL OR length(CAST({updated_state} AS BLOB)) <= ?7)"""


def _write_statement(merge, checked):
    """The one-item write: a replacement or an RFC 7396 merge (SQLite's json_patch
    applied to {} or the stored state), with or without _CHECKS."""
    if merge:
        new_state, updated_state = "json_patch('{}', ?4)", "json_patch(user_bot_states.state, ?4)"
    else:
        new_state, updated_state = "?4", "excluded.state"
    return _WRITE_STATE.format(
        new_id=NEW_UUID,
        new_state=new_state,
        updated_state=updated_state,
        now=NOW,
        columns=_STATE_COLUMNS,
        checks=_CHECKS.format(new_state=new_state) if checked else "",
        update_checks=_UPDATE_CHECKS.format(updated_state=updated_state) if checked else "",
    )


_REPLACE_STATE = _write_statement(merge=False, checked=False)
_MERGE_STATE = _write_statement(merge=True, checked=False)
_CHECKED_REPLACE_STATE = _write_statement(merge=False, checked=True)
_CHECKED_MERGE_STATE = _write_statement(merge=True, checked=True)


# Rows per multi-row upsert: 4 parameters each, well under SQLite's 32,766.
_CHUNK_ROWS = 500


@functools.cache
def _replace_many(rows):
    """The upsert of `rows` distinct items, RETURNING what identifies and versions each."""
    values = ", ".join([f"({NEW_UUID}, ?, ?, ?, ?, 1, {NOW}, {NOW})"] * rows)
    return (
        "INSERT INTO user_bot_states"
        " (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)"
        f" VALUES {values}"
        " ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET"
        " state = excluded.state, version = user_bot_states.version + 1, updated_at = excluded.updated_at"
        " RETURNING id, user_broker_account_id, ticker_id, version, created_at, updated_at"
    )


# Items per checked multi-row upsert: 3 parameters each, under SQLite's 32,766.
_BATCH_ROWS = 1000


@functools.cache
def _replace_many_checked(rows):
    """The upsert of `rows` distinct items that writes each only if the bot's key is
    still ?2 and its account and ticker exist; RETURNING the rows it wrote.

    Parameters: ?1 bot, ?2 key hash, then per item: account, ticker, state.
    """
    values = ", ".join(f"(?{n}, ?{n + 1}, ?{n + 2})" for n in range(3, 3 + 3 * rows, 3))
    return (
        "INSERT INTO user_bot_states"
        " (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)"
        f" SELECT {NEW_UUID}, ?1, v.column1, v.column2, v.column3, 1, {NOW}, {NOW}"
        f" FROM (VALUES {values}) AS v"
        f" WHERE {_key_works('?1', '?2')}"
        " AND EXISTS (SELECT 1 FROM accounts WHERE id = v.column1)"
        " AND EXISTS (SELECT 1 FROM tickers WHERE id = v.column2)"
        " ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET"
        " state = excluded.state, version = user_bot_states.version + 1, updated_at = excluded.updated_at"
        " RETURNING id, user_broker_account_id, ticker_id, version, created_at, updated_at"
    )


# The registered ids among :accounts and :tickers (JSON arrays), as two JSON arrays
# in one row, not a row per id: each row fetched is a step of its own, which gives
# up the GIL and, in the write lock, waits to get it back behind the other threads.
_REGISTERED_IDS = (
    "(SELECT json_group_array(id) FROM accounts WHERE id IN (SELECT value FROM json_each(:accounts))),"
    " (SELECT json_group_array(id) FROM tickers WHERE id IN (SELECT value FROM json_each(:tickers)))"
)


# The bot's id and each of its working keys with its expiry as Unix time: one row
# per key (one row with NULLs when it has none). Parameter: the slug.
_FIND_CREDENTIALS = (
    "SELECT bots.id, k.key_hash, (julianday(k.expires_at) - 2440587.5) * 86400.0"
    f" FROM bots LEFT JOIN bot_keys AS k ON k.bot_id = bots.id AND NOT {_EXPIRED} WHERE bots.slug = ?"
)

# Whether the bot :bot exists, and whether the key :key works for it.
_CREDENTIALS = f"SELECT EXISTS (SELECT 1 FROM bots WHERE id = :bot), {_key_works(':bot', ':key')}"


def _ids_named_by(writes):
    """The :accounts and :tickers parameters of _REGISTERED_IDS."""
    return {
        "accounts": json.dumps(list({w.account_id for w in writes})),
        "tickers": json.dumps(list({w.ticker_id for w in writes})),
    }


def _timestamp(unix_time):
    """A Unix time in the format of NOW."""
    whole = int(unix_time)
    milliseconds = int((unix_time - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{milliseconds:03d}Z"


def create_private(path):
    """Create `path` empty, readable and writable by its owner only (0600 under any umask
    that leaves the owner's bits); an existing file keeps its mode. SQLite gives a
    database's -wal and -shm its mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def holds_botstate_schema(db):
    """Whether a SQLite database holds botstate's schema: its migrations are recorded in it."""
    return bool(migrations.applied(db))


def refuse_foreign(db):
    """Raise StorageError when a SQLite database holds other tables and no botstate schema."""
    if holds_botstate_schema(db):
        return
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )
    names = [name.encode("unicode_escape").decode() for (name,) in db.execute(query)]
    if names:
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise StorageError(
            f"it is a SQLite database of another program (tables: {listed}) and holds no botstate schema"
        )


def _file_identity(path):
    """(device, inode) of the file at `path`, or None when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def verify_key(bot_exists, key_works):
    """Raise NotFound when the bot is gone, StaleKey when the key no longer works."""
    if not bot_exists:
        raise NotFound("the bot was deleted")
    if not key_works:
        raise StaleKey("the bot's key was replaced, revoked or has expired")


def batchable(writes):
    """Whether the writes can go as multi-row upserts: several, distinct keys, no expected versions."""
    if len(writes) < 2 or any(w.expected_version is not None for w in writes):
        return False
    return len({(w.account_id, w.ticker_id) for w in writes}) == len(writes)


# What `flask states export` writes and `import` reads, in this order (each row's
# references come before it): record kind -> its fields and the table it fills.
TRANSFER_KINDS = {
    "bot": ("bots", ("id", "slug", "name", "createdAt")),
    "key": ("bot_keys", ("botId", "keyHash", "createdAt", "expiresAt", "lastUsedAt")),
    "account": ("accounts", ("id", "name", "createdAt")),
    "ticker": ("tickers", ("id", "symbol", "createdAt")),
    "state": (
        "user_bot_states",
        ("id", "botId", "accountId", "tickerId", "state", "version", "createdAt", "updatedAt"),
    ),
}
# Each field's column, where the names differ.
TRANSFER_COLUMNS = {
    "botId": "bot_id",
    "keyHash": "key_hash",
    "createdAt": "created_at",
    "expiresAt": "expires_at",
    "lastUsedAt": "last_used_at",
    "accountId": "user_broker_account_id",
    "tickerId": "ticker_id",
    "updatedAt": "updated_at",
}
# The key each kind is upserted by.
TRANSFER_KEYS = {
    "bot": ("id",),
    "key": ("botId", "keyHash"),
    "account": ("id",),
    "ticker": ("id",),
    "state": ("botId", "accountId", "tickerId"),
}


def transfer_statement(kind, placeholder, cast=lambda field: ""):
    """The upsert of one record of `kind`: its row is made exactly as the record says.

    `placeholder(field)` is the driver's parameter syntax; `cast(field)` a type cast to append.
    """
    table, fields = TRANSFER_KINDS[kind]
    columns = [TRANSFER_COLUMNS.get(field, field) for field in fields]
    key = [TRANSFER_COLUMNS.get(field, field) for field in TRANSFER_KEYS[kind]]
    values = ", ".join(placeholder(field) + cast(field) for field in fields)
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns if column not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def export_query(kind, column=lambda name: name):
    """The SELECT of every row of `kind`, as records, in key order; `column(name)` wraps each column."""
    table, fields = TRANSFER_KINDS[kind]
    selected = ", ".join(f'{column(TRANSFER_COLUMNS.get(field, field))} AS "{field}"' for field in fields)
    order = ", ".join(TRANSFER_COLUMNS.get(field, field) for field in TRANSFER_KEYS[kind])
    return f"SELECT {selected} FROM {table} ORDER BY {order}"


def transfer_conflict(kind, record, foreign_key):
    """The Conflict for a record that a foreign or unique key refused."""
    name = record.get("slug") or record.get("symbol") or record.get("id") or record.get("keyHash", "")[:12]
    if foreign_key:
        return Conflict(
            f"{kind} {name} names a bot, account or ticker that is neither before it in the file nor in the database"
        )
    return Conflict(f"{kind} {name} clashes with another {kind} in the database (same slug or symbol, another id)")


def open_storage(settings):
    """The storage the app's settings select: PostgreSQL when DATABASE_URL is set, else SQLite."""
    if settings.get("DATABASE_URL"):
        from pgstorage import PostgresStorage  # psycopg is imported only by those who use it

        return PostgresStorage(
            settings["DATABASE_URL"], busy_timeout_ms=settings["BUSY_TIMEOUT_MS"], pool_size=settings["THREADS"] + 2
        )
    return SQLiteStorage(
        settings["DATABASE"], busy_timeout_ms=settings["BUSY_TIMEOUT_MS"], synchronous=settings["SYNCHRONOUS"]
    )


class KeyUses:
    """When each (bot id, key hash) last authenticated a request, kept in memory between two flushes.

    Not written per request: that would add a write to every read.
    """

    def __init__(self):
        self._uses = {}
        self._lock = threading.Lock()
        self._failing = None  # the last flush's error, logged once

    def record(self, bot_id, key_hash):
        """Note that a request authenticated with this key now."""
        with self._lock:
            self._uses[bot_id, key_hash] = time.time()

    @contextlib.contextmanager
    def taken(self):
        """The uses recorded so far, taken out; put back (unless newer ones came) when the block fails."""
        with self._lock:
            uses, self._uses = self._uses, {}
        try:
            yield uses
        except BaseException:
            with self._lock:
                for key, used in uses.items():
                    self._uses.setdefault(key, used)
            raise

    def flush_or_log(self, flush):
        """Call flush(), logging (once per distinct error) instead of raising."""
        try:
            flush()
        except Exception as error:  # noqa: BLE001 - a background thread must go on
            if str(error) != self._failing:
                log.warning("could not store when keys were last used (kept for the next try): %s", error)
            self._failing = str(error)
        else:
            self._failing = None


def _reporting(rows, on_progress):
    """Each of `rows`, calling on_progress(n) (when given) as they are done."""
    for done, row in enumerate(rows, start=1):
        yield row
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            on_progress(PROGRESS_EVERY)
    if on_progress is not None:
        on_progress(len(rows) % PROGRESS_EVERY)


class StorageBase:
    """What both backends do alike, around the SQL that each subclass gives."""

    def __init__(self):
        self.key_uses = KeyUses()
        # Write transactions tried again after the database aborted them (GET /metrics shows it).
        self.retries = 0

    def record_key_use(self, bot_id, key_hash):
        """Note that a request authenticated with this key now; flush_key_uses() stores it."""
        self.key_uses.record(bot_id, key_hash)

    def delete_bot(self, slug):
        """Delete the bot and, by cascade, its states; returns the bot as it was."""
        bot = self.get_bot(slug)
        if bot is None:
            raise NotFound(f"Bot {slug!r} not found")
        self._delete_bot_row(bot["id"])
        return bot

    def add_ticker(self, symbol, ticker_id):
        """Insert one ticker; raises Conflict when the symbol or id exists."""
        with self._write_transaction() as db:
            if not self._insert_ticker(db, symbol, ticker_id):
                raise Conflict(self._ticker_conflict(db, symbol, ticker_id))
        return {"id": ticker_id, "symbol": symbol}

    def import_tickers(self, rows, on_progress=None):
        """Insert (symbol, id or None) rows in one transaction; existing identical ones are skipped.

        Returns how many were new. Raises Conflict, undoing all of them, when a
        symbol exists under another id or an id under another symbol.
        `on_progress(n)` is called as rows are done.
        """
        added = 0
        with self._write_transaction() as db:
            for symbol, ticker_id in _reporting(rows, on_progress):
                if self._insert_ticker(db, symbol, ticker_id or str(uuid.uuid4())):
                    added += 1
                    continue
                existing = self._ticker_id(db, symbol)
                if existing is None or (ticker_id and existing != ticker_id):
                    raise Conflict(self._ticker_conflict(db, symbol, ticker_id))
        return added

    def import_records(self, records, on_progress=None):
        """Upsert (kind, record) pairs in one transaction, so that each row is as its record says;
        `on_progress(n)` is called as records are done.

        Raises Conflict when a record clashes with another row (a slug or symbol
        taken by another id) or names a bot, account or ticker that is not there.
        """
        statements = {kind: self._transfer_statement(kind) for kind in TRANSFER_KINDS}
        with self._write_transaction() as db:
            for kind, record in _reporting(records, on_progress):
                self._import_record(db, statements[kind], kind, record)

    def _ticker_conflict(self, db, symbol, ticker_id):
        by_symbol = self._ticker_id(db, symbol)
        if by_symbol is not None:
            return f"Ticker '{symbol}' already exists with id {by_symbol}"
        return f"Ticker id {ticker_id} already belongs to '{self._ticker_symbol(db, ticker_id)}'"

    def _refusal(self, conn, bot_id, write, accounts, tickers, max_state_bytes):
        """Why an item cannot be written, decided before writing it; None when it can be.

        `max_state_bytes` applies to the state as sent (None for a merge, whose
        size is known once applied). A version conflict is reported before the size.
        """
        if write.ticker_id not in tickers:
            return ItemError.TICKER_NOT_FOUND
        if write.account_id not in accounts:
            return ItemError.ACCOUNT_NOT_FOUND
        if max_state_bytes is not None and len(write.state_json.encode()) > max_state_bytes:
            if write.expected_version is not None:
                found = self._version(conn, bot_id, write.account_id, write.ticker_id)
                if write.expected_version != found:
                    return VersionConflict(write.expected_version, found)
            return ItemError.STATE_TOO_LARGE
        return None


class SQLiteStorage(StorageBase):
    """The service's database: one connection per thread, writers queued in-process."""

    def __init__(self, path, busy_timeout_ms=5000, synchronous="NORMAL"):
        self.path = path
        self.location = path  # what messages name the database by
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self._local = threading.local()
        self._connections = []
        self._connections_lock = threading.Lock()
        # Writers of this process wait here, in order, instead of in SQLite's
        # busy handler, whose growing sleeps (up to 100 ms) wreck the latency tail.
        self._write_lock = threading.Lock()
        self._conn_db = None  # the writers' connection
        # Bumped when the database file was removed or replaced: connections opened
        # before then are closed by the thread that uses them, and opened afresh.
        self._generation = 0
        self._file_identity = None
        self._checkpointer = None
        self._checkpoints_elsewhere = False
        self._stop_checkpoints = threading.Event()
        # A shared flock on this file while a process serves the database (start_upkeep).
        self._serving_path = f"{path}-serving"
        self._serving = None
        super().__init__()

    # Connections and transactions

    def _connect(self, create=False):
        # Only migrate() may create the file: a database deleted under a running
        # server must fail (503), not be silently replaced by an empty one.
        target = self.path if create else pathlib.Path(self.path).as_uri() + "?mode=rw"
        conn = sqlite3.connect(
            target,
            uri=not create,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        if self._checkpoints_elsewhere:
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        with self._connections_lock:
            self._connections.append(conn)
        return sqlite_utils.Database(conn)

    def _db(self, writer=False):
        # Readers get a connection per thread. Writers share one, used in the write
        # lock only: a connection drops its page cache whenever another one has
        # written, so with a connection per writer each write read its pages anew.
        holder = self if writer else self._local
        db = getattr(holder, "_conn_db", None)
        if db is not None and getattr(holder, "_conn_generation", None) != self._generation:
            self._forget_connection(writer)  # its file is no longer the database (see _notice_file_change)
            db = None
        if db is None:
            db = self._connect()
            holder._conn_db = db
            holder._conn_generation = self._generation
        return db

    @contextlib.contextmanager
    def _errors_translated(self, writer=False):
        try:
            yield
        except sqlite3.Error as error:
            fault = _database_fault(error)
            if fault is DatabaseUnavailable:
                self._forget_connection(writer)
                # SQLite says "disk I/O error" for a file made read-only: name the real cause.
                raise fault(diagnosis.described(str(error), self.path)) from error
            if fault is not None:
                raise fault(str(error)) from error
            raise

    def _forget_connection(self, writer=False):
        holder = self if writer else self._local
        db = getattr(holder, "_conn_db", None)
        holder._conn_db = None
        if db is not None:
            with self._connections_lock:
                if db.conn in self._connections:
                    self._connections.remove(db.conn)
            with contextlib.suppress(sqlite3.Error):
                db.conn.close()

    @contextlib.contextmanager
    def _reading(self):
        with self._errors_translated():
            yield self._db()

    @contextlib.contextmanager
    def _writing(self, transaction=True, timeout_ms=None):
        """The database, this process's write lock held, in a write transaction
        committed on exit (or, without `transaction`, for one autocommit statement).

        DatabaseBusy after `timeout_ms` (default: the busy timeout) without the lock.
        """
        # One deadline for both waits: for this process's writers, then for other
        # processes'. Setting SQLite's timeout costs two statements in the lock, so
        # a short wait here (a tenth of the timeout at most) is not subtracted.
        timeout = (self.busy_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        started = time.monotonic()
        if not self._write_lock.acquire(blocking=False) and not self._write_lock.acquire(timeout=timeout):
            raise DatabaseBusy("timed out waiting for the write lock")
        waited = time.monotonic() - started
        try:
            with self._errors_translated(writer=True):
                db = self._db(writer=True)
                conn = db.conn
                shortened = timeout_ms is not None or waited > timeout / 10
                if shortened:
                    conn.execute(f"PRAGMA busy_timeout = {max(0, int((timeout - waited) * 1000))}")
                try:
                    if transaction:
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            yield db
                            conn.execute("COMMIT")
                        except BaseException:
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                            raise
                    else:
                        yield db
                finally:
                    if shortened:
                        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        finally:
            self._write_lock.release()

    def start_upkeep(self):
        """Start the background work of a serving process: WAL checkpoints, keys' last use.

        Also marks the database as served until close(), for servers_running().
        """
        self.start_checkpoints()  # first: it closes what was open, this lock too
        create_private(self._serving_path)
        self._serving = open(self._serving_path, "a")  # noqa: SIM115 - held open while serving
        fcntl.flock(self._serving, fcntl.LOCK_SH)

    def servers_running(self):
        """Whether a botstate server (a process that called start_upkeep) serves this database now."""
        try:
            with open(self._serving_path) as marker:
                try:
                    fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                return False
        except FileNotFoundError:
            return False

    def start_checkpoints(self, interval=CHECKPOINT_INTERVAL):
        """Copy the WAL into the database from a thread of its own, every `interval` seconds.

        Otherwise the write that fills the WAL does it, in the write lock: every
        few hundred writes one of them took milliseconds and the others queued.
        """
        if self._checkpointer is not None:
            return
        # Connections opened from here on leave checkpoints to the thread; close
        # the ones opened before so that they reopen that way.
        self._checkpoints_elsewhere = True
        self.close()
        self._stop_checkpoints.clear()
        self._file_identity = _file_identity(self.path)
        self._checkpointer = threading.Thread(
            target=self._checkpoint_every, args=(interval,), name="botstate-checkpoints", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_every(self, interval):
        failing = None
        next_flush = time.monotonic() + KEY_USE_FLUSH_INTERVAL
        while not self._stop_checkpoints.wait(interval):
            if not self._notice_file_change():
                continue
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + KEY_USE_FLUSH_INTERVAL
                self.key_uses.flush_or_log(self.flush_key_uses)
            try:
                self.checkpoint()
            except (StorageError, sqlite3.Error) as error:
                if str(error) != failing:
                    log.warning("WAL checkpoint failed: %s", error)
                failing = str(error)
                continue
            if failing is not None:
                log.warning("WAL checkpoints work again")
                failing = None
        self._forget_connection()

    def _notice_file_change(self):
        """Whether the database file is there; when it was removed or replaced, make
        every thread reconnect, so that no write goes on into a file nobody can open."""
        identity = _file_identity(self.path)
        if identity != self._file_identity:
            was_gone = self._file_identity is None
            self._file_identity = identity
            self._generation += 1
            if identity is None:
                gone = f"the database file {self.path} is gone: requests get 503 until it is back"
                log.error("%s", diagnosis.described(gone, self.path))
            elif was_gone:
                log.warning("the database file %s is back: reconnecting to it", self.path)
            else:
                log.warning("the database file %s was replaced: reconnecting to it", self.path)
        return identity is not None

    def checkpoint(self):
        """Copy the WAL into the database, and start it over once it has grown.

        The copy is passive: writers and readers go on meanwhile. But a WAL only
        starts over once all of it has been copied, which never happens while
        writers keep appending, and a WAL of hundreds of MB makes every page
        lookup slow. So past WAL_RESTART_FRAMES, what the first pass left is
        copied again with this process's writers held back.
        """
        with self._reading() as db:
            _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < WAL_RESTART_FRAMES:
                return
            with self._write_lock:
                # Readers in other processes may hold the WAL: wait for them briefly, not for the busy timeout.
                db.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                try:
                    db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")

    def close(self):
        """Store the keys' last use, close every connection this storage opened, in any
        thread, and stop checkpoints."""
        self.key_uses.flush_or_log(self.flush_key_uses)
        if self._serving is not None:
            self._serving.close()  # the lock goes with it
            self._serving = None
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpointer.join()
            self._checkpointer = None
            self._checkpoints_elsewhere = False  # connections opened from now on checkpoint again
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        self._conn_db = None

    # Schema

    def migrate(self):
        """Create or upgrade the schema; returns the names of the steps applied."""
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StorageError(
                f"botstate needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or newer"
                f" (RETURNING, DROP COLUMN); this Python has {sqlite3.sqlite_version}"
            )
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with self._errors_translated():
            with contextlib.suppress(OSError):  # if it cannot be created, SQLite's open next says why
                create_private(self.path)
            self._connect(create=True).conn.close()
            refuse_foreign(self._db())  # before WAL mode, which would change the file
            self._db().execute("PRAGMA journal_mode = WAL")
        with self._writing() as db:
            pending = [migration.name for migration in migrations.pending(db)]
            migrations.apply(db)
        return pending

    def outdated_migrations(self):
        """The migrations an existing database made by an older version still needs
        ([] for a new or current one)."""
        if not os.path.exists(self.path):
            return []
        with self._reading() as db:
            if not holds_botstate_schema(db):
                return []
            return [migration.name for migration in migrations.pending(db)]

    def schema_version(self):
        """Names of the migration steps applied to this database, oldest first."""
        with self._reading() as db:
            return [migration.name for migration in migrations.applied(db)]

    def ping(self):
        """Raise StorageError unless the database answers a read of its schema."""
        try:
            with self._reading() as db:
                db.execute("SELECT count(*) FROM bots").fetchone()
        except sqlite3.Error as error:  # e.g. "no such table": not the database we migrated
            raise DatabaseUnavailable(str(error)) from error

    def check_writable(self):
        """Raise DatabaseUnavailable when the database's files or folder cannot be written or its disk is full."""
        # SQLite opens a file it may not write read-only, and migrating writes nothing
        # once the schema is current: without this the server would start and 503 every write.
        problem = diagnosis.database_problem(self.path)
        if problem is not None:
            raise DatabaseUnavailable(problem)

    # Bots

    def create_bot(self, slug, name, api_key_hash):
        """Insert a bot with its first key; raises Conflict when the slug is taken."""
        bot_id = str(uuid.uuid4())
        with self._writing() as db:
            try:
                db.execute(
                    f"INSERT INTO bots (id, slug, name, created_at) VALUES (?, ?, ?, {NOW})",
                    [bot_id, slug, name],
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"Bot {slug!r} already exists") from None
            self._add_key(db, bot_id, api_key_hash)
        return self.get_bot(slug)

    def get_bot(self, slug):
        """The bot with this slug (id, slug, name, createdAt, states) or None."""
        with self._reading() as db:
            rows = list(db.query(f"{_SELECT_BOTS} WHERE slug = ?", [slug]))
        return rows[0] if rows else None

    def find_bot_credentials(self, slug):
        """(bot id, its working keys) for the slug, or None: the read that authenticates a request.

        Each key is (key hash, expiry as Unix time, or None when it does not expire).
        """
        with self._reading() as db:
            rows = db.conn.execute(_FIND_CREDENTIALS, (slug,)).fetchall()
        if not rows:
            return None
        return rows[0][0], tuple((key_hash, expires) for _, key_hash, expires in rows if key_hash is not None)

    def list_bots(self):
        """Every bot with its number of states, by slug."""
        with self._reading() as db:
            return list(db.query(f"{_SELECT_BOTS} ORDER BY slug"))

    def count_bots(self):
        """How many bots exist."""
        with self._reading() as db:
            return db.execute("SELECT count(*) FROM bots").fetchone()[0]

    def replace_bot_key(self, slug, api_key_hash, grace_seconds=0):
        """Give the bot a new key. Its other keys keep working for `grace_seconds`
        more (none at 0), or until their own earlier expiry.

        Returns the bot, with `oldKeysExpireAt`: when the last old key stops
        (None when none works any more).
        """
        with self._writing() as db:
            bot_id = self._bot_id(db, slug)
            self._forget_expired_keys(db, bot_id)
            if grace_seconds > 0:
                db.execute(
                    "UPDATE bot_keys SET expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1) WHERE bot_id = ?2"
                    " AND (expires_at IS NULL OR expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1))",
                    [f"+{int(grace_seconds)} seconds", bot_id],
                )
            else:
                db.execute("DELETE FROM bot_keys WHERE bot_id = ?", [bot_id])
            expires_at = db.execute("SELECT max(expires_at) FROM bot_keys WHERE bot_id = ?", [bot_id]).fetchone()[0]
            self._add_key(db, bot_id, api_key_hash)
        return dict(self.get_bot(slug), oldKeysExpireAt=expires_at)

    def revoke_bot_keys(self, slug, every=False):
        """Stop the bot's old keys (those in a grace period) at once, or with `every`
        all of its keys; returns how many were revoked."""
        with self._writing() as db:
            bot_id = self._bot_id(db, slug)
            self._forget_expired_keys(db, bot_id)
            only_old = "" if every else " AND expires_at IS NOT NULL"
            return db.execute(f"DELETE FROM bot_keys WHERE bot_id = ?{only_old}", [bot_id]).rowcount

    @staticmethod
    def _add_key(db, bot_id, api_key_hash):
        db.execute(f"INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES (?, ?, {NOW})", [bot_id, api_key_hash])

    @staticmethod
    def _forget_expired_keys(db, bot_id):
        db.execute(f"DELETE FROM bot_keys WHERE bot_id = ? AND {_EXPIRED}", [bot_id])

    def list_bot_keys(self, slug):
        """The bot's working keys, newest first: a fingerprint (the start of the key's
        hash), createdAt, expiresAt (None: no expiry) and lastUsedAt (None: never)."""
        self.flush_key_uses()
        with self._reading() as db:
            bot_id = self._bot_id(db, slug)
            return list(
                db.query(
                    f"SELECT substr(key_hash, 1, {KEY_FINGERPRINT_LENGTH}) AS fingerprint,"
                    " created_at AS createdAt, expires_at AS expiresAt, last_used_at AS lastUsedAt"
                    f" FROM bot_keys WHERE bot_id = ? AND NOT {_EXPIRED}"
                    " ORDER BY created_at DESC, key_hash",
                    [bot_id],
                )
            )

    @staticmethod
    def _bot_id(db, slug):
        row = db.execute("SELECT id FROM bots WHERE slug = ?", [slug]).fetchone()
        if row is None:
            raise NotFound(f"Bot {slug!r} not found")
        return row[0]

    def flush_key_uses(self):
        """Store the last use of each key recorded since the last flush."""
        with self.key_uses.taken() as uses:
            if not uses:
                return
            rows = [(_timestamp(used), bot_id, key_hash) for (bot_id, key_hash), used in uses.items()]
            # A short wait: this runs in the checkpoint thread, which must go on
            # noticing a removed file within its interval.
            with self._writing(timeout_ms=RESTART_WAIT_MS) as db:
                db.conn.executemany(
                    "UPDATE bot_keys SET last_used_at = ?1 WHERE bot_id = ?2 AND key_hash = ?3"
                    " AND (last_used_at IS NULL OR last_used_at < ?1)",
                    rows,
                )

    # Backups

    def backup(self, target):
        """Copy the database to the new file `target`: one consistent snapshot, taken while
        writers go on (SQLite's online backup API), checked with integrity_check."""
        partial = f"{target}.partial"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)  # a killed backup's leftover: start afresh, and private
            create_private(partial)  # SQLite would create it 0644 under the usual umask
        except OSError as error:
            raise StorageError(f"cannot write {target}: {diagnosis.folder_problem(target) or error.strerror}") from None
        try:
            with self._reading() as db, contextlib.closing(sqlite3.connect(partial)) as copy:
                db.conn.backup(copy)  # all pages in one step: one read transaction, so one moment
                if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise StorageError(f"the copy at {target} failed integrity_check; the database may be damaged")
            os.replace(partial, target)
        except DatabaseUnavailable as error:
            raise DatabaseUnavailable(f"cannot back up to {target}: {error}") from error
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)

    def restore(self, source, before_copy=None):
        """Make the database's content that of the botstate backup `source`, through SQLite
        (so a running server reads it from its next request); returns the migrations applied.

        `before_copy()`, if given, is called once `source` is known to be a sound botstate database.
        """
        uri = pathlib.Path(source).resolve().as_uri() + "?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as backup:
                if backup.execute("PRAGMA integrity_check").fetchone()[0] != "ok" or not holds_botstate_schema(
                    sqlite_utils.Database(backup)
                ):
                    raise StorageError(f"{source} is not a botstate database, or is damaged")
                if before_copy is not None:
                    before_copy()
                with self._writing(transaction=False) as db:
                    backup.backup(db.conn)
        except sqlite3.DatabaseError as error:
            raise StorageError(f"{source} is not a botstate database ({error})") from None
        return self.migrate()

    # Moving data between databases

    def export_records(self):
        """Every row of every table as a record (TRANSFER_KINDS), references first, from one snapshot."""
        with self._reading() as db:
            db.execute("BEGIN")  # one read transaction: a snapshot while the server writes
            try:
                for kind in TRANSFER_KINDS:
                    cursor = db.conn.execute(export_query(kind))
                    names = [column[0] for column in cursor.description]
                    for row in cursor:
                        yield kind, dict(zip(names, row, strict=False))
            finally:
                db.execute("ROLLBACK")

    @staticmethod
    def _import_record(db, statement, kind, record):
        try:
            db.conn.execute(statement, record)
        except sqlite3.IntegrityError as error:
            raise transfer_conflict(kind, record, "FOREIGN KEY" in str(error)) from None

    @staticmethod
    def _transfer_statement(kind):
        return transfer_statement(kind, lambda field: f":{field}")

    # Accounts and tickers

    def add_account(self, account_id, name):
        """Insert one account; raises Conflict when the id exists."""
        with self._writing() as db:
            try:
                db.execute(
                    f"INSERT INTO accounts (id, name, created_at) VALUES (?, ?, {NOW})",
                    [account_id, name],
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"Account {account_id} already exists") from None
        return {"id": account_id, "name": name}

    def import_accounts(self, rows):
        """Insert (id, name) rows, leaving existing ids as they are; returns how many were new."""
        with self._writing() as db:
            cursor = db.conn.executemany(
                f"INSERT INTO accounts (id, name, created_at) VALUES (?, ?, {NOW}) ON CONFLICT (id) DO NOTHING",
                rows,
            )
            return cursor.rowcount

    def list_accounts(self):
        """Every account, by id."""
        with self._reading() as db:
            return list(db.query("SELECT id, name, created_at AS createdAt FROM accounts ORDER BY id"))

    def _write_transaction(self):
        return self._writing()

    @staticmethod
    def _insert_ticker(db, symbol, ticker_id):
        cursor = db.execute(
            f"INSERT INTO tickers (id, symbol, created_at) VALUES (?, ?, {NOW}) ON CONFLICT DO NOTHING",
            [ticker_id, symbol],
        )
        return cursor.rowcount == 1

    @staticmethod
    def _ticker_id(db, symbol):
        row = db.execute("SELECT id FROM tickers WHERE symbol = ?", [symbol]).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _ticker_symbol(db, ticker_id):
        return db.execute("SELECT symbol FROM tickers WHERE id = ?", [ticker_id]).fetchone()[0]

    def _delete_bot_row(self, bot_id):
        with self._writing() as db:
            db.execute("DELETE FROM bots WHERE id = ?", [bot_id])

    def list_tickers(self):
        """Every ticker, by symbol."""
        with self._reading() as db:
            return list(db.query("SELECT id, symbol, created_at AS createdAt FROM tickers ORDER BY symbol"))

    # States

    def write_states(self, bot_id, key_hash, writes, merge=False, max_state_bytes=None):
        """Write StateWrites in order, each item isolated from the others.

        `key_hash` is the key the caller authenticated with: checked again inside
        the transaction, so a bot deleted or re-keyed meanwhile writes nothing
        (NotFound, StaleKey). With merge, each state is an RFC 7396 merge patch
        applied to the stored state (or to {}); otherwise it replaces it.
        Returns one entry per write: the StateRow as stored, an ItemError or a
        VersionConflict. Raises DatabaseBusy or DatabaseUnavailable when no
        write could be attempted.
        """
        # The common cases go as one statement that writes only what passes every
        # check; whatever it leaves (None) takes the full path, which says why.
        outcomes = [None] * len(writes)
        if len(writes) == 1:
            outcomes[0] = self._write_checked(bot_id, key_hash, writes[0], merge, max_state_bytes)
        elif not merge and len(writes) <= _BATCH_ROWS and batchable(writes):
            outcomes = self._replace_checked(bot_id, key_hash, writes, max_state_bytes)
            if None in outcomes and any(outcome is not None for outcome in outcomes):
                # Some were written, so the key was the bot's. Sending the rest to a
                # transaction of its own could answer 403 or 503 to a request that
                # stored something already; a read says why they were refused.
                self._explain_refusals(bot_id, writes, outcomes, max_state_bytes)
        # Only what no check refused is left here: written by none of the above,
        # because nothing was, or because an account or ticker appeared meanwhile.
        left = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if left:
            written = self._write_in_transaction(bot_id, key_hash, [writes[i] for i in left], merge, max_state_bytes)
            for index, outcome in zip(left, written, strict=False):
                outcomes[index] = outcome
        return outcomes

    def _write_in_transaction(self, bot_id, key_hash, writes, merge, max_state_bytes):
        """write_states() for any writes: one transaction, every check made item by item."""
        statement = _MERGE_STATE if merge else _REPLACE_STATE
        failures = []
        with self._writing() as db:
            accounts, tickers = self._check_credentials_and_ids(db, bot_id, key_hash, writes)
            if not merge and batchable(writes):
                outcomes = self._replace_in_chunks(
                    db.conn, bot_id, writes, accounts, tickers, max_state_bytes, failures
                )
            else:
                outcomes = [
                    self._write_one(db.conn, statement, bot_id, w, accounts, tickers, max_state_bytes, failures)
                    for w in writes
                ]
        if failures:
            log.error(
                "%d state write(s) failed for bot %s; the first:",
                len(failures),
                bot_id,
                exc_info=failures[0],
            )
        return outcomes

    def _write_checked(self, bot_id, key_hash, write, merge, max_state_bytes):
        """Write one item in one statement when every check passes: its StateRow, else None."""
        statement = _CHECKED_MERGE_STATE if merge else _CHECKED_REPLACE_STATE
        params = (
            bot_id,
            write.account_id,
            write.ticker_id,
            write.state_json,
            write.expected_version,
            key_hash,
            max_state_bytes,
        )
        with self._writing(transaction=False) as db:
            try:
                rows = db.conn.execute(statement, params).fetchall()
            except sqlite3.Error as error:
                if _database_fault(error) is not None:
                    raise
                return None  # the full path writes it again and reports the failure
        return StateRow(*rows[0]) if rows else None

    def _replace_checked(self, bot_id, key_hash, writes, max_state_bytes):
        """Replace distinct, unconditional items with one statement that checks them all
        (_replace_many_checked): a StateRow per item written, None for the others."""
        outcomes = [None] * len(writes)
        ready = [
            index
            for index, write in enumerate(writes)
            if max_state_bytes is None or len(write.state_json.encode()) <= max_state_bytes
        ]
        if not ready:
            return outcomes
        params = [bot_id, key_hash]
        for index in ready:
            write = writes[index]
            params += (write.account_id, write.ticker_id, write.state_json)
        with self._writing(transaction=False) as db:
            try:
                rows = db.conn.execute(_replace_many_checked(len(ready)), params).fetchall()
            except sqlite3.Error as error:
                if _database_fault(error) is not None:
                    raise
                return outcomes  # undone as a whole: the full path writes them one by one
        stored = {(row[1], row[2]): row for row in rows}
        for index in ready:
            write = writes[index]
            row = stored.get((write.account_id, write.ticker_id))
            if row is not None:
                row_id, _, _, version, created_at, updated_at = row
                outcomes[index] = StateRow(
                    row_id, bot_id, write.account_id, write.ticker_id, write.state_json, version, created_at, updated_at
                )
        return outcomes

    def _explain_refusals(self, bot_id, writes, outcomes, max_state_bytes):
        """Put in `outcomes`, for each item left None, the ItemError that refused it."""
        left = [write for write, outcome in zip(writes, outcomes, strict=False) if outcome is None]
        with self._reading() as db:
            accounts, tickers = self._registered_ids(db, left)
            for index, write in enumerate(writes):
                if outcomes[index] is None:
                    outcomes[index] = self._refusal(db.conn, bot_id, write, accounts, tickers, max_state_bytes)

    def _replace_in_chunks(self, conn, bot_id, writes, accounts, tickers, max_state_bytes, failures):
        """Replace distinct, unconditional items with one multi-row upsert per chunk.

        The same outcomes as _write_one item by item, with far fewer statements.
        A chunk whose statement fails (SQLite undoes the whole statement) is
        written again item by item, so one bad item still fails alone.
        """
        outcomes = [None] * len(writes)
        ready = []
        for index, write in enumerate(writes):
            outcomes[index] = self._refusal(conn, bot_id, write, accounts, tickers, max_state_bytes)
            if outcomes[index] is None:
                ready.append(index)
        for start in range(0, len(ready), _CHUNK_ROWS):
            chunk = ready[start : start + _CHUNK_ROWS]
            params = []
            for index in chunk:
                write = writes[index]
                params += (bot_id, write.account_id, write.ticker_id, write.state_json)
            try:
                rows = conn.execute(_replace_many(len(chunk)), params).fetchall()
            except sqlite3.Error as error:
                if _database_fault(error) is not None:
                    raise
                for index in chunk:
                    outcomes[index] = self._write_one(
                        conn, _REPLACE_STATE, bot_id, writes[index], accounts, tickers, max_state_bytes, failures
                    )
                continue
            stored = {(row[1], row[2]): row for row in rows}
            for index in chunk:
                write = writes[index]
                row_id, _, _, version, created_at, updated_at = stored[(write.account_id, write.ticker_id)]
                outcomes[index] = StateRow(
                    row_id, bot_id, write.account_id, write.ticker_id, write.state_json, version, created_at, updated_at
                )
        return outcomes

    @staticmethod
    def _check_credentials(db, bot_id, key_hash):
        verify_key(*db.conn.execute(_CREDENTIALS, {"bot": bot_id, "key": key_hash}).fetchone())

    def _write_one(self, conn, statement, bot_id, write, accounts, tickers, max_state_bytes, failures):
        # An item is isolated from the others as one statement, which SQLite makes
        # atomic: it changes its row entirely or not at all. A merge also gets a
        # savepoint, because its size is known only once applied, and may be undone.
        merge = statement is _MERGE_STATE
        refusal = self._refusal(conn, bot_id, write, accounts, tickers, None if merge else max_state_bytes)
        if refusal is not None:
            return refusal
        if merge:
            conn.execute("SAVEPOINT state_item")
        try:
            row = conn.execute(
                statement,
                (bot_id, write.account_id, write.ticker_id, write.state_json, write.expected_version),
            ).fetchone()
            if row is None:
                outcome = VersionConflict(
                    write.expected_version,
                    self._version(conn, bot_id, write.account_id, write.ticker_id),
                )
            elif merge and max_state_bytes is not None and len(row[4].encode()) > max_state_bytes:
                outcome = ItemError.STATE_TOO_LARGE
            else:
                outcome = StateRow(*row)
        except sqlite3.Error as error:
            if _database_fault(error) is not None:
                raise
            failures.append(error)
            outcome = ItemError.FAILED
        if merge:
            if not isinstance(outcome, StateRow):
                conn.execute("ROLLBACK TO state_item")
            conn.execute("RELEASE state_item")
        return outcome

    @staticmethod
    def _version(conn, bot_id, account_id, ticker_id):
        row = conn.execute(
            "SELECT version FROM user_bot_states WHERE bot_id = ? AND user_broker_account_id = ? AND ticker_id = ?",
            [bot_id, account_id, ticker_id],
        ).fetchone()
        return 0 if row is None else row[0]

    @staticmethod
    def _check_credentials_and_ids(db, bot_id, key_hash, writes):
        """Check the bot's key as in _check_credentials, and return the registered
        account and ticker ids among those the writes name: one statement, since
        each statement in the write lock is a wait for the others."""
        bot_exists, key_works, accounts, tickers = db.conn.execute(
            f"{_CREDENTIALS}, {_REGISTERED_IDS}", dict(_ids_named_by(writes), bot=bot_id, key=key_hash)
        ).fetchone()
        verify_key(bot_exists, key_works)
        return set(json.loads(accounts)), set(json.loads(tickers))

    @staticmethod
    def _registered_ids(db, writes):
        """The registered account ids and ticker ids among those the writes name."""
        accounts, tickers = db.conn.execute(f"SELECT {_REGISTERED_IDS}", _ids_named_by(writes)).fetchone()
        return set(json.loads(accounts)), set(json.loads(tickers))

    def read_state(self, bot_id, key_hash, account_id, ticker_id):
        """get_state() in the same read as a check that `key_hash` is still the bot's key
        (NotFound, StaleKey as in write_states), so a stale cached login reads nothing."""
        with self._reading() as db:
            found = db.execute(_READ_STATE_AND_KEY, [key_hash, account_id, ticker_id, bot_id]).fetchone()
        verify_key(found is not None, found and found[0])
        return None if found[1] is None else StateRow(*found[1:])

    def get_state(self, bot_id, account_id, ticker_id):
        """The bot's StateRow for this account and ticker, or None."""
        with self._reading() as db:
            row = db.execute(
                f"SELECT {_STATE_COLUMNS} FROM user_bot_states"
                " WHERE bot_id = ? AND user_broker_account_id = ? AND ticker_id = ?",
                [bot_id, account_id, ticker_id],
            ).fetchone()
        return None if row is None else StateRow(*row)

    def list_states(
        self,
        bot_id,
        limit,
        account_id=None,
        ticker_id=None,
        updated_since=None,
        after=None,
        key_hash=None,
        max_bytes=DEFAULT_PAGE_BYTES,
    ):
        """Up to `limit` of the bot's StateRows in (account, ticker) order, and whether more follow.

        The page also ends after the row that takes it past `max_bytes` of row text
        (its states, and PAGE_ROW_OVERHEAD for the rest of each row): at least one row.
        None is no byte limit.

        With `key_hash`, only while that key works (NotFound, StaleKey as in write_states).

        `after` is the (account, ticker) key of the last row of the previous
        page: keys never change, so paging neither skips nor repeats a row
        that exists throughout, whatever is written meanwhile.
        """
        sql = [f"SELECT {_STATE_COLUMNS} FROM user_bot_states WHERE bot_id = ?"]
        params = [bot_id]
        if key_hash is not None:
            sql.append(f"AND {_key_works('?', '?')}")
            params += [bot_id, key_hash]
        for condition, value in (
            ("user_broker_account_id = ?", account_id),
            ("ticker_id = ?", ticker_id),
            ("updated_at >= ?", updated_since),
        ):
            if value is not None:
                sql.append(f"AND {condition}")
                params.append(value)
        if after is not None:
            sql.append("AND (user_broker_account_id, ticker_id) > (?, ?)")
            params.extend(after)
        sql.append("ORDER BY user_broker_account_id, ticker_id LIMIT ?")
        params += [limit + 1, UNBOUNDED_PAGE_BYTES if max_bytes is None else max_bytes]
        size = f"length(CAST(state AS BLOB)) + {PAGE_ROW_OVERHEAD}"
        query = (
            f"SELECT {_STATE_COLUMNS}, fetched FROM (SELECT *, sum({size}) OVER (ORDER BY user_broker_account_id,"
            f" ticker_id ROWS UNBOUNDED PRECEDING) - ({size}) AS before, count(*) OVER () AS fetched"
            f" FROM ({' '.join(sql)})) WHERE before < ? ORDER BY user_broker_account_id, ticker_id"
        )
        with self._reading() as db:
            rows = db.execute(query, params).fetchall()
            if key_hash is not None and not rows:  # none stored, or the key no longer works
                verify_key(*db.conn.execute(_CREDENTIALS, {"bot": bot_id, "key": key_hash}).fetchone())
        return page_of(rows, limit)

    def delete_state(self, bot_id, key_hash, account_id, ticker_id, expected_versions=None):
        """Delete the bot's row for this account and ticker (`key_hash` as in write_states).

        With `expected_versions` (a list), only when its version is one of them.
        Returns the deleted StateRow, None when there was no row, or a VersionConflict.
        """
        with self._writing() as db:
            self._check_credentials(db, bot_id, key_hash)
            row = db.execute(
                f"DELETE FROM user_bot_states"
                " WHERE bot_id = ? AND user_broker_account_id = ? AND ticker_id = ?"
                " AND (? IS NULL OR version IN (SELECT value FROM json_each(?)))"
                f" RETURNING {_STATE_COLUMNS}",
                [
                    bot_id,
                    account_id,
                    ticker_id,
                    None if expected_versions is None else 1,
                    json.dumps(expected_versions or []),
                ],
            ).fetchone()
            if row is not None:
                return StateRow(*row)
            found = self._version(db.conn, bot_id, account_id, ticker_id)
        return None if found == 0 else VersionConflict(expected_versions, found)

    def count_states(self, bot_id=None):
        """How many state rows exist, for one bot or all."""
        with self._reading() as db:
            if bot_id is None:
                return db.execute("SELECT count(*) FROM user_bot_states").fetchone()[0]
            return db.execute("SELECT count(*) FROM user_bot_states WHERE bot_id = ?", [bot_id]).fetchone()[0]
