"""PostgreSQL storage: the same interface as storage.SQLiteStorage, for several hosts on one database."""

import contextlib
import datetime
import logging
import threading
import time
import uuid

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg.rows import dict_row

import jsoncodec
from storage import (
    DEFAULT_PAGE_BYTES,
    KEY_FINGERPRINT_LENGTH,
    KEY_USE_FLUSH_INTERVAL,
    PAGE_ROW_OVERHEAD,
    TRANSFER_KINDS,
    UNBOUNDED_PAGE_BYTES,
    Conflict,
    DatabaseBusy,
    DatabaseUnavailable,
    ItemError,
    NotFound,
    StateRow,
    StorageBase,
    StorageError,
    VersionConflict,
    batchable,
    export_query,
    page_of,
    transfer_conflict,
    transfer_statement,
    verify_key,
)

log = logging.getLogger("botstate.storage")

MIN_SERVER_VERSION = 130000  # gen_random_uuid() is built in from PostgreSQL 13
# Tries of a write transaction that PostgreSQL aborted to break a deadlock.
WRITE_ATTEMPTS = 3
NO_BACKUPS = (
    "on PostgreSQL, back up with pg_dump and pg_restore, or your provider's backups;"
    " `flask states export` also copies every row"
)
# Milliseconds the keys' last-use flush waits for a lock before trying again later.
FLUSH_LOCK_TIMEOUT_MS = 100
# The least time a request waits for a pooled connection, whatever the busy timeout.
MIN_POOL_WAIT_MS = 1000
# Any fixed number: held while migrating, so hosts starting together migrate once.
MIGRATION_LOCK = 0x626F7473

# Times are stored to the millisecond, like SQLite's, so they move between the two
# unchanged. The clock's time when the statement runs, not when its transaction began
# (now()), which a transaction waiting on a lock would date back.
NOW = "date_trunc('milliseconds', clock_timestamp())"


def _text_time(column):
    """SQL: a timestamptz column as text in SQLite's form (2024-01-15T10:30:00.123Z)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def _state_columns(table=""):
    """SQL: the columns of a StateRow, as text, of the state table (or its alias `table`)."""
    p = f"{table}." if table else ""
    return (
        f"{p}id::text, {p}bot_id::text, {p}user_broker_account_id::text, {p}ticker_id::text,"
        f" {p}state::text, {p}version, {_text_time(p + 'created_at')}, {_text_time(p + 'updated_at')}"
    )


_STATE_COLUMNS = _state_columns()
_EXPIRED = "(expires_at IS NOT NULL AND expires_at <= now())"


def _key_works(bot, key_hash, lock=False):
    """SQL: whether `key_hash` is one of the bot's keys and not past its grace period.

    With `lock`, the key's row stays locked against a rotation, revocation or the
    bot's deletion until the transaction ends, so none of them lands between the
    check and the write it allows.
    """
    locking = " FOR KEY SHARE" if lock else ""
    return f"EXISTS (SELECT 1 FROM bot_keys WHERE bot_id = {bot} AND key_hash = {key_hash} AND NOT {_EXPIRED}{locking})"


_SELECT_BOTS = (
    f'SELECT id::text AS id, slug, name, {_text_time("created_at")} AS "createdAt",'
    " (SELECT count(*) FROM user_bot_states WHERE bot_id = bots.id) AS states FROM bots"
)

_ROW = "bot_id = %(bot)s::uuid AND user_broker_account_id = %(account)s::uuid AND ticker_id = %(ticker)s::uuid"

# The replacement of one state, with expectedVersion enforced in the statement: the
# SELECT's WHERE creates a row only when none was expected, the DO UPDATE's WHERE
# touches a row only at the expected version. No row back: a version conflict.
# The DO UPDATE dates the row once it holds its lock, not when the statement began.
_REPLACE_STATE = f"""
INSERT INTO user_bot_states AS s
    (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)
SELECT gen_random_uuid(), %(bot)s::uuid, %(account)s::uuid, %(ticker)s::uuid, %(state)s::json, 1, {NOW}, {NOW}
WHERE (%(expected)s::bigint IS NULL OR %(expected)s::bigint = 0
       OR EXISTS (SELECT 1 FROM user_bot_states WHERE {_ROW})){{checks}}
ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET
    state = excluded.state, version = s.version + 1, updated_at = greatest(s.updated_at, {NOW})
WHERE %(expected)s::bigint IS NULL OR s.version = %(expected)s::bigint
RETURNING {_STATE_COLUMNS}
"""
# For a lone item written in one statement without a transaction: it writes only
# when every check of the full path passes, so no row back means "ask the full path".
_CHECKS = f"""
    AND {_key_works("%(bot)s::uuid", "%(key)s", lock=True)}
    AND EXISTS (SELECT 1 FROM accounts WHERE id = %(account)s::uuid)
    AND EXISTS (SELECT 1 FROM tickers WHERE id = %(ticker)s::uuid)
    AND (%(max_bytes)s::int IS NULL OR octet_length(%(state)s::text) <= %(max_bytes)s::int)"""
_CHECKED_REPLACE_STATE = _REPLACE_STATE.format(checks=_CHECKS)
_UNCHECKED_REPLACE_STATE = _REPLACE_STATE.format(checks="")

# Distinct, unconditional replacements in one statement (its transaction holds
# _LOCK_ROWS already), in key order like the rest.
_REPLACE_MANY = f"""
INSERT INTO user_bot_states AS s
    (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)
SELECT gen_random_uuid(), %(bot)s::uuid, v.account, v.ticker, v.state, 1, {NOW}, {NOW}
FROM unnest(%(accounts)s::uuid[], %(tickers)s::uuid[], %(states)s::json[]) AS v (account, ticker, state)
ORDER BY v.account, v.ticker
ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET
    state = excluded.state, version = s.version + 1, updated_at = greatest(s.updated_at, {NOW})
RETURNING {_STATE_COLUMNS}
"""

# The merge's update: the new state was computed from the row read FOR UPDATE.
_UPDATE_MERGED = f"""
UPDATE user_bot_states SET state = %(state)s::json, version = version + 1, updated_at = greatest(updated_at, {NOW})
WHERE {_ROW} AND version = %(version)s
RETURNING {_STATE_COLUMNS}
"""
_INSERT_MERGED = f"""
INSERT INTO user_bot_states
    (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)
VALUES (gen_random_uuid(), %(bot)s::uuid, %(account)s::uuid, %(ticker)s::uuid, %(state)s::json, 1, {NOW}, {NOW})
ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO NOTHING
RETURNING {_STATE_COLUMNS}
"""


def _credentials(lock=False):
    """SQL: whether the bot %(bot)s exists, and whether the key %(key)s works for it (locked, as in _key_works)."""
    key_works = _key_works("%(bot)s::uuid", "%(key)s", lock=lock)
    return f"SELECT EXISTS (SELECT 1 FROM bots WHERE id = %(bot)s::uuid), {key_works}"


_CREDENTIALS = _credentials()
_LOCKED_CREDENTIALS = _credentials(lock=True)
# The locked credentials, and the registered ids among those named.
_CREDENTIALS_AND_IDS = (
    f"{_LOCKED_CREDENTIALS},"
    " ARRAY(SELECT id::text FROM accounts WHERE id = ANY(%(accounts)s::uuid[])),"
    " ARRAY(SELECT id::text FROM tickers WHERE id = ANY(%(tickers)s::uuid[]))"
)
# One lock per row a transaction will write, taken in one order before any row's:
# two bulk writes over the same rows in different orders then wait for each other
# instead of deadlocking (which PostgreSQL takes a second to detect, then aborts one).
_LOCK_ROWS = (
    "SELECT pg_advisory_xact_lock(h) FROM"
    " (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(%s::text[]) AS k ORDER BY h) AS ordered"
)


def _exported(column):
    """SQL: a column as export writes it: ids and the state as text, times in SQLite's form."""
    if column.endswith("_at"):
        return _text_time(column)
    if column == "id" or column.endswith("_id") or column == "state":
        return f"{column}::text"
    return column


_IMPORT_TYPES = {"state": "json", "version": "bigint"}


def _import_cast(field):
    """SQL: the cast of an imported field's parameter to its column's type."""
    if field in _IMPORT_TYPES:
        return f"::{_IMPORT_TYPES[field]}"
    if field == "id" or field in ("botId", "accountId", "tickerId"):
        return "::uuid"
    if field.endswith("At"):
        return "::timestamptz"
    return "::text"


def merge_patch(target, patch):
    """RFC 7396: `patch` applied to `target`, as SQLite's json_patch does (keys keep their places)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def merged_json(stored_json, patch_json):
    """The JSON text of `patch_json` merged into `stored_json` (None: no stored state)."""
    target = {} if stored_json is None else jsoncodec.loads(stored_json)
    return jsoncodec.dumps(merge_patch(target, jsoncodec.loads(patch_json)))


# Faults of the database, not of a request, by SQLSTATE class or code.
_BUSY_STATES = {"55P03", "57014"}  # lock_not_available, query_canceled (a timeout)
_RETRY_STATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_UNAVAILABLE_CLASSES = {"08", "53", "57", "58", "XX"}
_UNAVAILABLE_STATES = {"25006"}  # read_only_sql_transaction: a standby


def _database_fault(error):
    """DatabaseBusy or DatabaseUnavailable when a psycopg error is the database's fault, else None."""
    if isinstance(error, psycopg_pool.PoolTimeout):
        return DatabaseBusy
    state = getattr(error, "sqlstate", None)
    if state in _BUSY_STATES or state in _RETRY_STATES:
        return DatabaseBusy
    if state in _UNAVAILABLE_STATES or (state and state[:2] in _UNAVAILABLE_CLASSES):
        return DatabaseUnavailable
    if state is None and isinstance(error, psycopg.OperationalError):  # e.g. the connection was lost
        return DatabaseUnavailable
    return None


def redacted(url):
    """The connection URL without its password, for messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or ""
    port = f":{params['port']}" if params.get("port") else ""
    if host.startswith("/"):
        return f"postgresql://{user}/{params.get('dbname', '')}?host={host}{port.replace(':', '&port=')}"
    return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"


def _utc(unix_time):
    """A Unix time as an aware datetime, to the millisecond like every stored time."""
    moment = datetime.datetime.fromtimestamp(unix_time, datetime.UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# Migrations: the same steps under the same names as SQLite's, in PostgreSQL's types.
MIGRATIONS = (
    (
        "0001_create_tables",
        """
        CREATE TABLE bots (
            id uuid PRIMARY KEY,
            slug text NOT NULL UNIQUE,
            name text NOT NULL,
            api_key_hash text NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE TABLE accounts (id uuid PRIMARY KEY, name text, created_at timestamptz NOT NULL);
        CREATE TABLE tickers (id uuid PRIMARY KEY, symbol text NOT NULL UNIQUE, created_at timestamptz NOT NULL);
        CREATE TABLE user_bot_states (
            id uuid PRIMARY KEY,
            bot_id uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            user_broker_account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
            ticker_id uuid NOT NULL REFERENCES tickers (id) ON DELETE CASCADE,
            -- json, not jsonb: it keeps the text as written, so a state reads back byte for byte.
            state json NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            UNIQUE (bot_id, user_broker_account_id, ticker_id)
        );
        """,
    ),
    (
        "0002_state_foreign_key_indexes",
        """
        CREATE INDEX idx_user_bot_states_account ON user_bot_states (user_broker_account_id);
        CREATE INDEX idx_user_bot_states_ticker ON user_bot_states (ticker_id);
        """,
    ),
    ("0003_state_versions", "ALTER TABLE user_bot_states ADD COLUMN version bigint NOT NULL DEFAULT 1"),
    (
        # As on SQLite: every read and write goes by (bot, account, ticker), so the
        # other indexes only slowed inserts down.
        "0004_slim_state_indexes",
        """
        ALTER TABLE user_bot_states DROP CONSTRAINT user_bot_states_pkey;
        DROP INDEX idx_user_bot_states_account;
        DROP INDEX idx_user_bot_states_ticker;
        """,
    ),
    (
        "0005_bot_keys",
        """
        CREATE TABLE bot_keys (
            bot_id uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            key_hash text NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz,
            last_used_at timestamptz,
            PRIMARY KEY (bot_id, key_hash)
        );
        INSERT INTO bot_keys (bot_id, key_hash, created_at) SELECT id, api_key_hash, created_at FROM bots;
        ALTER TABLE bots DROP COLUMN api_key_hash;
        """,
    ),
)
_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS botstate_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL)"
)


class PostgresStorage(StorageBase):
    """The service's database on a PostgreSQL server, through a pool of connections."""

    def __init__(self, url, busy_timeout_ms=5000, pool_size=4):
        self.url = url
        self.location = redacted(url)
        self.busy_timeout_ms = busy_timeout_ms
        self.pool_size = pool_size
        self._pool = None
        self._pool_lock = threading.Lock()
        super().__init__()
        self._upkeep = None
        self._stop_upkeep = threading.Event()

    # Connections and transactions

    def _configure(self, conn):
        # A write waiting for a row lock gives up after the busy timeout (a 503), as on
        # SQLite. PostgreSQL reads 0 as "wait for ever": the least it takes is 1 ms.
        conn.execute(f"SET lock_timeout = {max(1, int(self.busy_timeout_ms))}")

    def _open_pool(self):
        with self._pool_lock:
            if self._pool is None:
                # One plain connection first: its error (a wrong password, no such
                # database) is clearer than the pool's timeout.
                try:
                    with self._errors_translated():
                        psycopg.connect(self.url, connect_timeout=10).close()
                except psycopg.ProgrammingError:  # libpq's words would repeat the URL, password and all
                    raise DatabaseUnavailable("libpq cannot read BOTSTATE_DATABASE_URL") from None
                self._pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=max(self.busy_timeout_ms, MIN_POOL_WAIT_MS) / 1000,
                    kwargs={"autocommit": True},
                    configure=self._configure,
                    name="botstate",
                    open=True,
                )
        return self._pool

    @contextlib.contextmanager
    def _errors_translated(self):
        try:
            yield
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            fault = _database_fault(error)
            if fault is None:
                raise
            if fault is DatabaseUnavailable and self._pool is not None:
                self._pool.check()  # replace the other connections that the same outage broke
            raise fault(str(error).strip() or type(error).__name__) from error

    @contextlib.contextmanager
    def _connection(self):
        """A pooled connection in autocommit mode: each statement is its own transaction."""
        pool = self._pool or self._open_pool()
        with self._errors_translated(), pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _transaction(self):
        with self._connection() as conn, conn.transaction():
            yield conn

    def _retried(self, work):
        """work(conn) in a transaction, tried again when PostgreSQL aborted it to break a deadlock."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    return work(conn)
            except DatabaseBusy as error:
                if attempt == WRITE_ATTEMPTS or getattr(error.__cause__, "sqlstate", None) not in _RETRY_STATES:
                    raise
                self.retries += 1
                time.sleep(0.01 * attempt)

    def start_upkeep(self, interval=KEY_USE_FLUSH_INTERVAL):
        """Store the keys' last use from a thread of its own, every `interval` seconds."""
        if self._upkeep is not None:
            return
        self._stop_upkeep.clear()
        self._upkeep = threading.Thread(
            target=self._upkeep_every, args=(interval,), name="botstate-upkeep", daemon=True
        )
        self._upkeep.start()

    def _upkeep_every(self, interval):
        while not self._stop_upkeep.wait(interval):
            self.key_uses.flush_or_log(self.flush_key_uses)

    def close(self):
        """Store the keys' last use, stop the upkeep thread and close every connection."""
        if self._pool is not None:
            self.key_uses.flush_or_log(self.flush_key_uses)
        if self._upkeep is not None:
            self._stop_upkeep.set()
            self._upkeep.join()
            self._upkeep = None
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # Schema

    def migrate(self):
        """Create or upgrade the schema; returns the names of the steps applied."""
        self.check_writable()  # a clearer message than the first CREATE's
        with self._transaction() as conn:
            version = conn.info.server_version
            if version < MIN_SERVER_VERSION:
                raise StorageError(
                    "botstate needs PostgreSQL 13 or newer;"
                    f" the server is {conn.info.parameter_status('server_version')}"
                )
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            conn.execute(_MIGRATIONS_TABLE)
            applied = {name for (name,) in conn.execute("SELECT name FROM botstate_migrations")}
            pending = [(name, sql) for name, sql in MIGRATIONS if name not in applied]
            for name, sql in pending:
                conn.execute(sql)
                conn.execute("INSERT INTO botstate_migrations (name, applied_at) VALUES (%s, now())", [name])
        return [name for name, _ in pending]

    def outdated_migrations(self):
        """The migrations an existing database made by an older version still needs
        ([] for a new or current one)."""
        with self._connection() as conn:
            if conn.execute("SELECT to_regclass('botstate_migrations')").fetchone()[0] is None:
                return []
            applied = {name for (name,) in conn.execute("SELECT name FROM botstate_migrations")}
        if not applied:
            return []
        return [name for name, _ in MIGRATIONS if name not in applied]

    def schema_version(self):
        """Names of the migration steps applied to this database, oldest first."""
        with self._connection() as conn:
            return [name for (name,) in conn.execute("SELECT name FROM botstate_migrations ORDER BY name")]

    def ping(self):
        """Raise StorageError unless the database answers a read of its schema."""
        try:
            with self._connection() as conn:
                conn.execute("SELECT count(*) FROM bots").fetchone()
        except psycopg.Error as error:  # e.g. no such table: not the database we migrated
            raise DatabaseUnavailable(str(error)) from error

    def check_writable(self):
        """Raise DatabaseUnavailable when the server takes no writes (a read-only standby)."""
        with self._connection() as conn:
            if conn.execute("SHOW transaction_read_only").fetchone()[0] == "on":
                raise DatabaseUnavailable(f"{self.location} is read-only (a standby?): point botstate at the primary")

    # Bots

    def create_bot(self, slug, name, api_key_hash):
        """Insert a bot with its first key; raises Conflict when the slug is taken."""
        bot_id = str(uuid.uuid4())
        try:
            with self._transaction() as conn:
                conn.execute(
                    f"INSERT INTO bots (id, slug, name, created_at) VALUES (%s, %s, %s, {NOW})", [bot_id, slug, name]
                )
                self._add_key(conn, bot_id, api_key_hash)
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"Bot {slug!r} already exists") from None
        return self.get_bot(slug)

    def _query(self, sql, params=()):
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            return cursor.execute(sql, params).fetchall()

    def _scalar(self, sql, params=()):
        with self._connection() as conn:
            return conn.execute(sql, params).fetchone()[0]

    def get_bot(self, slug):
        """The bot with this slug (id, slug, name, createdAt, states) or None."""
        rows = self._query(f"{_SELECT_BOTS} WHERE slug = %s", [slug])
        return rows[0] if rows else None

    def find_bot_credentials(self, slug):
        """(bot id, its working keys) for the slug, or None: the read that authenticates a request.

        Each key is (key hash, expiry as Unix time, or None when it does not expire).
        """
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT bots.id::text, k.key_hash, extract(epoch FROM k.expires_at)::float8"
                f" FROM bots LEFT JOIN bot_keys AS k ON k.bot_id = bots.id AND NOT {_EXPIRED} WHERE bots.slug = %s",
                [slug],
            ).fetchall()
        if not rows:
            return None
        return rows[0][0], tuple((key_hash, expires) for _, key_hash, expires in rows if key_hash is not None)

    def list_bots(self):
        """Every bot with its number of states, by slug."""
        return self._query(f"{_SELECT_BOTS} ORDER BY slug")

    def count_bots(self):
        """How many bots exist."""
        return self._scalar("SELECT count(*) FROM bots")

    def replace_bot_key(self, slug, api_key_hash, grace_seconds=0):
        """Give the bot a new key; its other keys keep working for `grace_seconds` more
        (none at 0), or until their own earlier expiry. Returns the bot with `oldKeysExpireAt`."""
        with self._transaction() as conn:
            bot_id = self._bot_id(conn, slug)
            self._forget_expired_keys(conn, bot_id)
            if grace_seconds > 0:
                ends = f"{NOW} + make_interval(secs => %(grace)s)"
                conn.execute(
                    f"UPDATE bot_keys SET expires_at = {ends}"
                    f" WHERE bot_id = %(bot)s AND (expires_at IS NULL OR expires_at > {ends})",
                    {"grace": int(grace_seconds), "bot": bot_id},
                )
            else:
                conn.execute("DELETE FROM bot_keys WHERE bot_id = %s", [bot_id])
            expires_at = conn.execute(
                f"SELECT {_text_time('max(expires_at)')} FROM bot_keys WHERE bot_id = %s", [bot_id]
            ).fetchone()[0]
            self._add_key(conn, bot_id, api_key_hash)
        return dict(self.get_bot(slug), oldKeysExpireAt=expires_at)

    def revoke_bot_keys(self, slug, every=False):
        """Stop the bot's old keys (those in a grace period) at once, or with `every`
        all of its keys; returns how many were revoked."""
        with self._transaction() as conn:
            bot_id = self._bot_id(conn, slug)
            self._forget_expired_keys(conn, bot_id)
            only_old = "" if every else " AND expires_at IS NOT NULL"
            return conn.execute(f"DELETE FROM bot_keys WHERE bot_id = %s{only_old}", [bot_id]).rowcount

    @staticmethod
    def _add_key(conn, bot_id, api_key_hash):
        conn.execute(
            f"INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES (%s, %s, {NOW})", [bot_id, api_key_hash]
        )

    @staticmethod
    def _forget_expired_keys(conn, bot_id):
        conn.execute(f"DELETE FROM bot_keys WHERE bot_id = %s AND {_EXPIRED}", [bot_id])

    @staticmethod
    def _bot_id(conn, slug):
        row = conn.execute("SELECT id::text FROM bots WHERE slug = %s", [slug]).fetchone()
        if row is None:
            raise NotFound(f"Bot {slug!r} not found")
        return row[0]

    def list_bot_keys(self, slug):
        """The bot's working keys, newest first: fingerprint, createdAt, expiresAt, lastUsedAt."""
        self.flush_key_uses()
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            bot_id = self._bot_id(conn, slug)
            return cursor.execute(
                f"SELECT substr(key_hash, 1, {KEY_FINGERPRINT_LENGTH}) AS fingerprint,"
                f' {_text_time("created_at")} AS "createdAt", {_text_time("expires_at")} AS "expiresAt",'
                f' {_text_time("last_used_at")} AS "lastUsedAt"'
                f" FROM bot_keys WHERE bot_id = %s AND NOT {_EXPIRED} ORDER BY created_at DESC, key_hash",
                [bot_id],
            ).fetchall()

    def flush_key_uses(self):
        """Store the last use of each key recorded since the last flush."""
        with self.key_uses.taken() as uses:
            if uses:
                times, bots, hashes = zip(*((_utc(used), bot, key) for (bot, key), used in uses.items()), strict=False)
                with self._transaction() as conn:
                    # A short wait: the upkeep thread must not hang on a lock for the busy timeout.
                    conn.execute(f"SET LOCAL lock_timeout = {FLUSH_LOCK_TIMEOUT_MS}")
                    conn.execute(
                        "UPDATE bot_keys AS k SET last_used_at = u.used"
                        " FROM unnest(%s::timestamptz[], %s::uuid[], %s::text[]) AS u (used, bot, key)"
                        " WHERE k.bot_id = u.bot AND k.key_hash = u.key"
                        " AND (k.last_used_at IS NULL OR k.last_used_at < u.used)",
                        [list(times), list(bots), list(hashes)],
                    )

    # Backups

    def servers_running(self):
        """Never known on PostgreSQL: servers may run on other hosts."""
        return False

    def backup(self, target):
        """Not botstate's job on PostgreSQL."""
        raise StorageError(NO_BACKUPS)

    def restore(self, source, before_copy=None):
        """Not botstate's job on PostgreSQL."""
        raise StorageError(NO_BACKUPS)

    # Moving data between databases

    def export_records(self):
        """Every row of every table as a record (TRANSFER_KINDS), references first, from one snapshot.

        Holds a pooled connection until read to the end or closed.
        """
        with self._connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for every table
            try:
                with conn.transaction():
                    for kind in TRANSFER_KINDS:
                        with conn.cursor(name=f"export_{kind}", row_factory=dict_row) as cursor:
                            cursor.itersize = 2000
                            yield from ((kind, record) for record in cursor.execute(export_query(kind, _exported)))
            finally:
                conn.isolation_level = None

    @staticmethod
    def _import_record(conn, statement, kind, record):
        try:
            conn.execute(statement, record)
        except psycopg.errors.IntegrityError as error:
            raise transfer_conflict(kind, record, isinstance(error, psycopg.errors.ForeignKeyViolation)) from None
        except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded) as error:
            raise StorageError(
                f"{kind} {record.get('id', '')}: PostgreSQL refused it: {error.diag.message_primary}"
            ) from None

    @staticmethod
    def _transfer_statement(kind):
        return transfer_statement(kind, lambda field: f"%({field})s", _import_cast)

    # Accounts and tickers

    def add_account(self, account_id, name):
        """Insert one account; raises Conflict when the id exists."""
        try:
            with self._connection() as conn:
                conn.execute(f"INSERT INTO accounts (id, name, created_at) VALUES (%s, %s, {NOW})", [account_id, name])
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"Account {account_id} already exists") from None
        return {"id": account_id, "name": name}

    def import_accounts(self, rows):
        """Insert (id, name) rows, leaving existing ids as they are; returns how many were new."""
        ids, names = zip(*rows, strict=False) if rows else ((), ())
        with self._connection() as conn:
            return conn.execute(
                f"INSERT INTO accounts (id, name, created_at) SELECT id, name, {NOW}"
                " FROM unnest(%s::uuid[], %s::text[]) AS a (id, name) ON CONFLICT (id) DO NOTHING",
                [list(ids), list(names)],
            ).rowcount

    def list_accounts(self):
        """Every account, by id."""
        return self._query(
            f'SELECT id::text AS id, name, {_text_time("created_at")} AS "createdAt" FROM accounts ORDER BY id'
        )

    def _write_transaction(self):
        return self._transaction()

    @staticmethod
    def _insert_ticker(conn, symbol, ticker_id):
        return (
            conn.execute(
                f"INSERT INTO tickers (id, symbol, created_at) VALUES (%s, %s, {NOW}) ON CONFLICT DO NOTHING",
                [ticker_id, symbol],
            ).rowcount
            == 1
        )

    @staticmethod
    def _ticker_id(conn, symbol):
        row = conn.execute("SELECT id::text FROM tickers WHERE symbol = %s", [symbol]).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _ticker_symbol(conn, ticker_id):
        return conn.execute("SELECT symbol FROM tickers WHERE id = %s", [ticker_id]).fetchone()[0]

    def _delete_bot_row(self, bot_id):
        with self._connection() as conn:
            conn.execute("DELETE FROM bots WHERE id = %s", [bot_id])

    def list_tickers(self):
        """Every ticker, by symbol."""
        return self._query(
            f'SELECT id::text AS id, symbol, {_text_time("created_at")} AS "createdAt" FROM tickers ORDER BY symbol'
        )

    # States

    def write_states(self, bot_id, key_hash, writes, merge=False, max_state_bytes=None):
        """Write StateWrites in order, each item isolated from the others (see SQLiteStorage.write_states)."""
        if len(writes) == 1:
            row = self._write_checked(bot_id, key_hash, writes[0], merge, max_state_bytes)
            if row is not None:
                return [row]
        failures = []
        outcomes = self._retried(
            lambda conn: self._write_all(conn, bot_id, key_hash, writes, merge, max_state_bytes, failures)
        )
        if failures:
            log.error("%d state write(s) failed for bot %s; the first:", len(failures), bot_id, exc_info=failures[0])
        return outcomes

    def _write_checked(self, bot_id, key_hash, write, merge, max_state_bytes):
        """One replacement in one statement when every check passes: its StateRow, else None
        (always for a merge, which needs the stored state first)."""
        if merge:
            return None
        params = {
            "bot": bot_id,
            "account": write.account_id,
            "ticker": write.ticker_id,
            "state": write.state_json,
            "expected": write.expected_version,
            "key": key_hash,
            "max_bytes": max_state_bytes,
        }
        with self._connection() as conn:
            try:
                row = conn.execute(_CHECKED_REPLACE_STATE, params).fetchone()
            except psycopg.Error as error:
                if _database_fault(error) is not None:
                    raise
                return None  # the full path writes it again and reports the failure
        return None if row is None else StateRow(*row)

    def _write_all(self, conn, bot_id, key_hash, writes, merge, max_state_bytes, failures):
        failures.clear()  # of an attempt that PostgreSQL aborted
        verified, key_works, accounts, tickers = conn.execute(
            _CREDENTIALS_AND_IDS,
            {
                "bot": bot_id,
                "key": key_hash,
                "accounts": list({w.account_id for w in writes}),
                "tickers": list({w.ticker_id for w in writes}),
            },
        ).fetchone()
        verify_key(verified, key_works)
        if len(writes) > 1:
            conn.execute(_LOCK_ROWS, [[f"{bot_id}/{w.account_id}/{w.ticker_id}" for w in writes]])
        accounts, tickers = set(accounts), set(tickers)
        size_limit = None if merge else max_state_bytes
        if not merge and batchable(writes):
            # No expected versions: the refusals do not depend on what is written before.
            outcomes = [self._refusal(conn, bot_id, w, accounts, tickers, size_limit) for w in writes]
            ready = [index for index, outcome in enumerate(outcomes) if outcome is None]
            if self._replace_many(conn, bot_id, writes, ready, outcomes):
                return outcomes
            return [
                o or self._write_one(conn, bot_id, w, merge, max_state_bytes, failures)
                for w, o in zip(writes, outcomes, strict=False)
            ]
        outcomes = []
        for write in writes:
            refusal = self._refusal(conn, bot_id, write, accounts, tickers, size_limit)
            outcomes.append(refusal or self._write_one(conn, bot_id, write, merge, max_state_bytes, failures))
        return outcomes

    def _replace_many(self, conn, bot_id, writes, ready, outcomes):
        """Write the `ready` items in one statement; False (nothing written) when it failed."""
        chosen = [writes[i] for i in ready]
        if not chosen:
            return True
        try:
            with conn.transaction():
                rows = conn.execute(
                    _REPLACE_MANY,
                    {
                        "bot": bot_id,
                        "accounts": [w.account_id for w in chosen],
                        "tickers": [w.ticker_id for w in chosen],
                        "states": [w.state_json for w in chosen],
                    },
                ).fetchall()
        except psycopg.Error as error:
            if _database_fault(error) is not None:
                raise
            return False  # undone as a whole: written again one by one, so one bad item fails alone
        stored = {(row[2], row[3]): StateRow(*row) for row in rows}
        for index in ready:
            outcomes[index] = stored[writes[index].account_id, writes[index].ticker_id]
        return True

    def _write_one(self, conn, bot_id, write, merge, max_state_bytes, failures):
        # Each item in a savepoint of its own: an error undoes that item only.
        try:
            with conn.transaction():
                if merge:
                    return self._merge_one(conn, bot_id, write, max_state_bytes)
                params = {
                    "bot": bot_id,
                    "account": write.account_id,
                    "ticker": write.ticker_id,
                    "state": write.state_json,
                    "expected": write.expected_version,
                }
                row = conn.execute(_UNCHECKED_REPLACE_STATE, params).fetchone()
                if row is None:
                    return VersionConflict(
                        write.expected_version, self._version(conn, bot_id, write.account_id, write.ticker_id)
                    )
                return StateRow(*row)
        except psycopg.Error as error:
            if _database_fault(error) is not None:
                raise
            failures.append(error)
            return ItemError.FAILED

    def _merge_one(self, conn, bot_id, write, max_state_bytes):
        """Merge one patch into the row it names, read FOR UPDATE so nothing writes it meanwhile."""
        params = {"bot": bot_id, "account": write.account_id, "ticker": write.ticker_id}
        while True:
            found = conn.execute(
                f"SELECT state::text, version FROM user_bot_states WHERE {_ROW} FOR UPDATE", params
            ).fetchone()
            version = 0 if found is None else found[1]
            if write.expected_version is not None and write.expected_version != version:
                return VersionConflict(write.expected_version, version)
            state = merged_json(None if found is None else found[0], write.state_json)
            if max_state_bytes is not None and len(state.encode()) > max_state_bytes:
                return ItemError.STATE_TOO_LARGE
            statement = _INSERT_MERGED if found is None else _UPDATE_MERGED
            row = conn.execute(statement, dict(params, state=state, version=version)).fetchone()
            if row is not None:
                return StateRow(*row)
            # Another transaction created the row after the read: merge into it instead.

    @staticmethod
    def _version(conn, bot_id, account_id, ticker_id):
        params = {"bot": bot_id, "account": account_id, "ticker": ticker_id}
        row = conn.execute(f"SELECT version FROM user_bot_states WHERE {_ROW}", params).fetchone()
        return 0 if row is None else row[0]

    def read_state(self, bot_id, key_hash, account_id, ticker_id):
        """get_state() in the same read as a check that `key_hash` still works (NotFound, StaleKey)."""
        with self._connection() as conn:
            found = conn.execute(
                f"SELECT {_key_works('bots.id', '%(key)s')}, {_state_columns('s')}"
                " FROM bots LEFT JOIN user_bot_states AS s ON s.bot_id = bots.id"
                " AND s.user_broker_account_id = %(account)s::uuid AND s.ticker_id = %(ticker)s::uuid"
                " WHERE bots.id = %(bot)s::uuid",
                {"key": key_hash, "account": account_id, "ticker": ticker_id, "bot": bot_id},
            ).fetchone()
        verify_key(found is not None, found and found[0])
        return None if found[1] is None else StateRow(*found[1:])

    def get_state(self, bot_id, account_id, ticker_id):
        """The bot's StateRow for this account and ticker, or None."""
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM user_bot_states WHERE {_ROW}",
                {"bot": bot_id, "account": account_id, "ticker": ticker_id},
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
        """Up to `limit` of the bot's StateRows in (account, ticker) order, and whether more follow,
        the page ending past `max_bytes` (see SQLiteStorage.list_states)."""
        sql = ["SELECT * FROM user_bot_states WHERE bot_id = %(bot)s::uuid"]
        params = {
            "bot": bot_id,
            "key": key_hash,
            "limit": limit + 1,
            "max_bytes": UNBOUNDED_PAGE_BYTES if max_bytes is None else max_bytes,
        }
        if key_hash is not None:
            sql.append(f"AND {_key_works('%(bot)s::uuid', '%(key)s')}")
        for condition, name, value in (
            ("user_broker_account_id = %(account)s::uuid", "account", account_id),
            ("ticker_id = %(ticker)s::uuid", "ticker", ticker_id),
            # As text, like SQLite: the stored form sorts as the times do.
            (f"{_text_time('updated_at')} >= %(since)s", "since", updated_since),
        ):
            if value is not None:
                sql.append(f"AND {condition}")
                params[name] = value
        if after is not None:
            sql.append("AND (user_broker_account_id, ticker_id) > (%(after_account)s::uuid, %(after_ticker)s::uuid)")
            params["after_account"], params["after_ticker"] = after
        sql.append("ORDER BY user_broker_account_id, ticker_id LIMIT %(limit)s")
        size = f"octet_length(state::text) + {PAGE_ROW_OVERHEAD}"
        query = (
            f"SELECT {_state_columns('page')}, fetched FROM (SELECT *, sum({size}) OVER (ORDER BY"
            f" user_broker_account_id, ticker_id ROWS UNBOUNDED PRECEDING) - ({size}) AS before,"
            f" count(*) OVER () AS fetched FROM ({' '.join(sql)}) AS limited) AS page"
            " WHERE before < %(max_bytes)s ORDER BY user_broker_account_id, ticker_id"
        )
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
            if key_hash is not None and not rows:  # none stored, or the key no longer works
                verify_key(*conn.execute(_CREDENTIALS, params).fetchone())
        return page_of(rows, limit)

    def delete_state(self, bot_id, key_hash, account_id, ticker_id, expected_versions=None):
        """Delete the bot's row for this account and ticker (`key_hash` as in write_states).

        With `expected_versions` (a list), only when its version is one of them.
        Returns the deleted StateRow, None when there was no row, or a VersionConflict.
        """
        params = {
            "bot": bot_id,
            "key": key_hash,
            "account": account_id,
            "ticker": ticker_id,
            "versions": expected_versions,
        }

        def delete(conn):
            verify_key(*conn.execute(_LOCKED_CREDENTIALS, params).fetchone())
            row = conn.execute(
                f"DELETE FROM user_bot_states WHERE {_ROW}"
                " AND (%(versions)s::bigint[] IS NULL OR version = ANY(%(versions)s::bigint[]))"
                f" RETURNING {_STATE_COLUMNS}",
                params,
            ).fetchone()
            if row is not None:
                return StateRow(*row)
            found = self._version(conn, bot_id, account_id, ticker_id)
            return None if found == 0 else VersionConflict(expected_versions, found)

        return self._retried(delete)

    def count_states(self, bot_id=None):
        """How many state rows exist, for one bot or all."""
        if bot_id is None:
            return self._scalar("SELECT count(*) FROM user_bot_states")
        return self._scalar("SELECT count(*) FROM user_bot_states WHERE bot_id = %s", [bot_id])
