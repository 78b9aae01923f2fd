"""PostgreSQL storage: a pool of connections to one database, which several hosts may share."""

import contextlib
import threading
import time

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg.rows import dict_row

from backends import keyuses, postgres_schema
from backends.dialect import POSTGRES
from backends.sql import SQLStorage
from backends.states import WRITE_ATTEMPTS, StalePlan
from records import DatabaseBusy, DatabaseUnavailable, StateRow, StorageError

# The write of a lone replacement in one statement, outside any transaction: it writes only
# when the item passes every rule (rules.Decider), so no row back means "ask the planned
# path". The SELECT's WHERE creates a row only when none was expected, the DO UPDATE's
# WHERE touches a row only at the expected version; the DO UPDATE dates the row once it
# holds its lock, never before its last write.
_LONE_WRITE = """
INSERT INTO user_bot_states AS s
    (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at)
SELECT gen_random_uuid(), :bot::uuid, :account::uuid, :ticker::uuid, :state::json, 1, {now}, {now}
WHERE (:expected::bigint IS NULL OR :expected::bigint = 0 OR EXISTS (
    SELECT 1 FROM user_bot_states
    WHERE bot_id = :bot::uuid AND user_broker_account_id = :account::uuid AND ticker_id = :ticker::uuid
))
    AND {key_works}
    AND EXISTS (SELECT 1 FROM accounts WHERE id = :account::uuid)
    AND EXISTS (SELECT 1 FROM tickers WHERE id = :ticker::uuid)
    AND (:max_bytes::int IS NULL OR octet_length(:state::text) <= :max_bytes::int)
ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET
    state = excluded.state, version = s.version + 1, updated_at = greatest(s.updated_at, {now})
WHERE :expected::bigint IS NULL OR s.version = :expected::bigint
RETURNING {columns}
"""
# The lone replacement of a row expected at a version (>= 1): an UPDATE, whose WHERE is
# checked again on the row as it is once locked, so a row deleted meanwhile is not written
# (an INSERT would see it in the statement's snapshot, then create it anew at version 1).
_LONE_UPDATE = """
UPDATE user_bot_states AS s
SET state = :state::json, version = s.version + 1, updated_at = greatest(s.updated_at, {now})
WHERE s.bot_id = :bot::uuid AND s.user_broker_account_id = :account::uuid AND s.ticker_id = :ticker::uuid
    AND s.version = :expected::bigint
    AND {key_works}
    AND EXISTS (SELECT 1 FROM accounts WHERE id = :account::uuid)
    AND EXISTS (SELECT 1 FROM tickers WHERE id = :ticker::uuid)
    AND (:max_bytes::int IS NULL OR octet_length(:state::text) <= :max_bytes::int)
RETURNING {columns}
"""
MIN_SERVER_VERSION = 130000  # gen_random_uuid() is built in from PostgreSQL 13
NO_BACKUPS = (
    "on PostgreSQL, back up with pg_dump and pg_restore, or your provider's backups;"
    " `botstate states export` also copies every row"
)
# Milliseconds the keys' last-use flush waits for a lock before trying again later.
FLUSH_LOCK_TIMEOUT_MS = 100
# The least time a request waits for a pooled connection, whatever the busy timeout.
MIN_POOL_WAIT_MS = 1000
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


class PostgresStorage(SQLStorage):
    """The service's database on a PostgreSQL server, through a pool of connections."""

    dialect = POSTGRES
    # A planned write stores in a savepoint, so that a row another writer created meanwhile is read again.
    savepoint_per_write = True

    def __init__(self, url, busy_timeout_ms=5000, pool_size=4):
        self.url = url
        self.location = redacted(url)
        self.busy_timeout_ms = busy_timeout_ms
        self.pool_size = pool_size
        self._pool = None
        self._pool_lock = threading.Lock()
        super().__init__()
        parts = {
            "now": POSTGRES.now,
            "key_works": self.key_works(":bot::uuid", ":key", lock=True, writing=True),
            "columns": self._state_columns,
        }
        self._lone_write = POSTGRES.prepare(_LONE_WRITE.format(**parts))
        self._lone_update = POSTGRES.prepare(_LONE_UPDATE.format(**parts))
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
            # libpq's hints follow on lines of their own: one line, for a message and a log line.
            raise fault(" ".join(str(error).split()) or type(error).__name__) from error

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

    def _in_transaction(self, work, short=False):
        """work(conn) in a transaction, tried again when PostgreSQL aborted it to break a deadlock
        or a row changed between the write's read and its write (StalePlan).

        With `short`, a lock is waited for briefly (a background thread's).
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    if short:
                        conn.execute(f"SET LOCAL lock_timeout = {FLUSH_LOCK_TIMEOUT_MS}")
                    return work(conn)
            except StalePlan:
                if attempt == WRITE_ATTEMPTS:
                    raise DatabaseBusy("the rows kept changing under the write") from None
            except DatabaseBusy as error:
                if attempt == WRITE_ATTEMPTS or getattr(error.__cause__, "sqlstate", None) not in _RETRY_STATES:
                    raise
            self.retries += 1
            time.sleep(0.01 * attempt)

    def start_upkeep(self, leading=True):
        """Store the keys' last use from a thread of its own, every KEY_USE_FLUSH_INTERVAL seconds; prune when
        `leading` (the one process of a server's workers that does)."""
        if self._upkeep is not None:
            return
        if leading:
            self.start_pruning()
        self._stop_upkeep.clear()
        self._upkeep = threading.Thread(
            target=self._upkeep_every, args=(keyuses.KEY_USE_FLUSH_INTERVAL,), name="botstate-upkeep", daemon=True
        )
        self._upkeep.start()

    def _upkeep_every(self, interval):
        wait = keyuses.first_flush_delay()
        while not self._stop_upkeep.wait(wait):
            self.key_uses.flush_or_log(self.flush_key_uses)
            wait = interval

    def close(self):
        """Store the keys' last use, stop the upkeep and pruning threads and close every connection."""
        self.stop_pruning()
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
            return postgres_schema.migrate(conn)

    def outdated_migrations(self):
        """The migrations an existing database made by an older version still needs
        ([] for a new or current one)."""
        with self._transaction() as conn:
            return postgres_schema.outdated(conn)

    def schema_version(self):
        """Names of the migration steps applied to this database, oldest first."""
        with self._connection() as conn:
            return postgres_schema.applied(conn)

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
                    for kind, query in self.export_queries():
                        with conn.cursor(name=f"export_{kind}", row_factory=dict_row) as cursor:
                            cursor.itersize = 2000
                            yield from ((kind, record) for record in cursor.execute(query))
            finally:
                conn.isolation_level = None

    # What storage.sql.SQLStorage asks of a backend

    @contextlib.contextmanager
    def _reading(self):
        """A pooled connection for reads, each statement its own transaction."""
        with self._connection() as conn:
            yield conn

    @staticmethod
    @contextlib.contextmanager
    def _savepoint(conn):
        """A savepoint: the block's changes are undone, alone, when it raises."""
        with conn.transaction():
            yield

    @staticmethod
    def _unique_violation(error):
        return isinstance(error, psycopg.errors.UniqueViolation)

    @staticmethod
    def _foreign_key_violation(error):
        return isinstance(error, psycopg.errors.ForeignKeyViolation)

    @staticmethod
    def _item_failure(error):
        """Whether `error` is one statement's failure, not the database's: it fails the items alone."""
        return isinstance(error, psycopg.Error) and _database_fault(error) is None

    @staticmethod
    def _import_refused(kind, record, error):
        if isinstance(error, (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded)):
            message = error.diag.message_primary
            return StorageError(f"{kind} {record.get('id', '')}: PostgreSQL refused it: {message}")
        return None

    def _feed_horizon(self, conn):
        """The largest seq below every writer still running (botstate_change_horizon, schema 0007)."""
        return conn.execute("SELECT botstate_change_horizon()").fetchone()[0]

    def _write_lone(self, credentials, write, merge, max_state_bytes):
        """A lone replacement in one statement when it passes every rule: its StateRow, else None
        (always for a merge, which needs the stored state first)."""
        if merge:
            return None
        params = {
            "bot": credentials.bot_id,
            "account": write.account_id,
            "ticker": write.ticker_id,
            "state": write.state_json,
            "expected": write.expected_version,
            "key": credentials.key_hash,
            "max_bytes": max_state_bytes,
        }
        with self._connection() as conn:
            try:
                expected = write.expected_version
                statement = self._lone_update if expected is not None and expected > 0 else self._lone_write
                row = conn.execute(statement, params).fetchone()
            except psycopg.Error as error:
                if _database_fault(error) is not None:
                    raise
                return None  # the planned path writes it again and reports the failure
        return None if row is None else StateRow(*row)
