"""SQLite storage: one file, connections per thread, writers queued in-process, WAL checkpoints, backups."""

import contextlib
import os
import pathlib
import sqlite3
import threading
import time

import sqlite_utils

import diagnosis
from backends.dialect import SQLITE
from backends.process_lock import ProcessLock
from backends.sql import SQLStorage
from backends.sqlite_files import SQLiteFiles
from backends.sqlite_schema import create_private, holds_botstate_schema, migrations, refuse_foreign
from backends.sqlite_upkeep import RESTART_WAIT_MS, SQLiteUpkeep
from backends.states import WRITE_ATTEMPTS, StalePlan
from records import DatabaseBusy, DatabaseUnavailable, StateRow, StorageError

MIN_SQLITE_VERSION = (3, 35)

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


def _database_fault(error):
    """DatabaseBusy or DatabaseUnavailable when a sqlite3 error is the database's fault, else None."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in _BUSY_CODES:
        return DatabaseBusy
    if primary in _UNAVAILABLE_CODES:
        return DatabaseUnavailable
    return None


# The write of a lone item in one statement, outside any explicit transaction: each
# statement in the write lock is a wait for the GIL, which other threads hold. It
# writes only when the item passes every rule (rules.Decider) and returns the row;
# no row back means "ask the planned path", which decides, never a different outcome.
# The SELECT's WHERE creates a row only when none was expected, the DO UPDATE's WHERE
# touches a row only at the expected version, never dating it before its last write.
# A merge is SQLite's json_patch.
# Parameters: ?1 bot, ?2 account, ?3 ticker, ?4 state (or patch), ?5 expected version,
# ?6 the key hash, ?7 the size limit in bytes (NULL: none).
_LONE_WRITE = """
INSERT INTO user_bot_states
    (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at, log_seq)
SELECT {new_id}, ?1, ?2, ?3, {new_state}, 1, {now}, {now}, {next_log_seq}
WHERE (?5 IS NULL OR ?5 = 0 OR EXISTS (
    SELECT 1 FROM user_bot_states WHERE bot_id = ?1 AND user_broker_account_id = ?2 AND ticker_id = ?3
))
    AND {key_works}
    AND EXISTS (SELECT 1 FROM accounts WHERE id = ?2)
    AND EXISTS (SELECT 1 FROM tickers WHERE id = ?3)
    AND (?7 IS NULL OR length(CAST({new_state} AS BLOB)) <= ?7)
ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO UPDATE SET
    state = {updated_state},
    version = user_bot_states.version + 1,
    updated_at = max(user_bot_states.updated_at, excluded.updated_at),
    log_seq = excluded.log_seq
WHERE (?5 IS NULL OR user_bot_states.version = ?5)
    AND (?7 IS NULL OR length(CAST({updated_state} AS BLOB)) <= ?7)
RETURNING {columns}
"""


def _lone_write(merge, key_works, columns):
    """_LONE_WRITE of a replacement or a merge (json_patch applied to {} or the stored state)."""
    if merge:
        new_state, updated_state = "json_patch('{}', ?4)", "json_patch(user_bot_states.state, ?4)"
    else:
        new_state, updated_state = "?4", "excluded.state"
    return _LONE_WRITE.format(
        new_id=NEW_UUID,
        new_state=new_state,
        updated_state=updated_state,
        now=SQLITE.now,
        next_log_seq=SQLITE.next_log_seq,
        key_works=key_works,
        columns=columns,
    )


class SQLiteStorage(SQLiteUpkeep, SQLiteFiles, SQLStorage):
    """The service's database in one SQLite file: one connection per thread, writers queued in-process."""

    dialect = SQLITE
    # A planned write needs none: its transaction holds the whole database, so no row changes under it.
    savepoint_per_write = False
    # The change log's seq is its rowid, the next after the largest: that entry stays.
    keeps_largest_seq = True

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
        # Then across processes (the workers of a server, other servers, the CLI), on a blocking flock.
        self._writers = ProcessLock(f"{path}-writers")
        self._conn = None  # the writers' connection
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
        self._lone_writes = {
            merge: _lone_write(merge, self.key_works("?1", "?6", writing=True), self._state_columns)
            for merge in (False, True)
        }

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
        return conn

    def _db(self, writer=False):
        # Readers get a connection per thread. Writers share one, used in the write
        # lock only: a connection drops its page cache whenever another one has
        # written, so with a connection per writer each write read its pages anew.
        holder = self if writer else self._local
        conn = getattr(holder, "_conn", None)
        if conn is not None and getattr(holder, "_conn_generation", None) != self._generation:
            self._forget_connection(writer)  # its file is no longer the database (see _notice_file_change)
            conn = None
        if conn is None:
            conn = self._connect()
            holder._conn = conn
            holder._conn_generation = self._generation
        return conn

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
        conn = getattr(holder, "_conn", None)
        holder._conn = None
        if conn is not None:
            with self._connections_lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @contextlib.contextmanager
    def _reading(self):
        """This thread's connection, for reads in autocommit mode."""
        with self._errors_translated():
            yield self._db()

    @contextlib.contextmanager
    def _writing(self, transaction=True, timeout_ms=None):
        """The writers' connection, this process's write lock held, in a write transaction
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
        try:
            if not self._writers.acquire(timeout=max(0.0, timeout - (time.monotonic() - started))):
                raise DatabaseBusy("timed out waiting for another process's write")
        except BaseException:
            self._write_lock.release()
            raise
        waited = time.monotonic() - started
        try:
            with self._errors_translated(writer=True):
                conn = self._db(writer=True)
                shortened = timeout_ms is not None or waited > timeout / 10
                if shortened:
                    conn.execute(f"PRAGMA busy_timeout = {max(0, int((timeout - waited) * 1000))}")
                try:
                    if transaction:
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            yield conn
                            conn.execute("COMMIT")
                        except BaseException:
                            if conn.in_transaction:
                                conn.execute("ROLLBACK")
                            raise
                    else:
                        yield conn
                finally:
                    if shortened:
                        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        finally:
            self._writers.release()
            self._write_lock.release()

    def close(self):
        """Store the keys' last use, close every connection this storage opened, in any
        thread, and stop checkpoints."""
        self.stop_pruning()
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
        self._conn = None
        self._writers.close()

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
            self._connect(create=True).close()
            refuse_foreign(self._db())  # before WAL mode, which would change the file
            self._db().execute("PRAGMA journal_mode = WAL")
        with self._writing() as conn:
            db = sqlite_utils.Database(conn)
            pending = [migration.name for migration in migrations.pending(db)]
            migrations.apply(db)
        return pending

    def outdated_migrations(self):
        """The migrations an existing database made by an older version still needs
        ([] for a new or current one)."""
        if not os.path.exists(self.path):
            return []
        with self._reading() as conn:
            if not holds_botstate_schema(conn):
                return []
            return [migration.name for migration in migrations.pending(sqlite_utils.Database(conn))]

    def schema_version(self):
        """Names of the migration steps applied to this database, oldest first."""
        with self._reading() as conn:
            return [migration.name for migration in migrations.applied(sqlite_utils.Database(conn))]

    def ping(self):
        """Raise StorageError unless the database answers a read of its schema."""
        try:
            with self._reading() as conn:
                conn.execute("SELECT count(*) FROM bots").fetchone()
        except sqlite3.Error as error:  # e.g. "no such table": not the database we migrated
            raise DatabaseUnavailable(str(error)) from error

    def check_writable(self):
        """Raise DatabaseUnavailable when the database's files or folder cannot be written or its disk is full."""
        # SQLite opens a file it may not write read-only, and migrating writes nothing
        # once the schema is current: without this the server would start and 503 every write.
        problem = diagnosis.database_problem(self.path)
        if problem is not None:
            raise DatabaseUnavailable(problem)

    # Moving data between databases

    def export_records(self):
        """Every row of every table as a record (TRANSFER_KINDS), references first, from one snapshot."""
        with self._reading() as conn:
            conn.execute("BEGIN")  # one read transaction: a snapshot while the server writes
            try:
                for kind, query in self.export_queries():
                    cursor = conn.execute(query)
                    names = [column[0] for column in cursor.description]
                    for row in cursor:
                        yield kind, dict(zip(names, row, strict=True))
            finally:
                conn.execute("ROLLBACK")

    # What storage.sql.SQLStorage asks of a backend

    def _in_transaction(self, work, short=False):
        """work(conn) in a write transaction, committed when it returns; tried again after a StalePlan.

        With `short`, the wait for the write lock is brief (a background thread's).
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._writing(timeout_ms=RESTART_WAIT_MS if short else None) as conn:
                    return work(conn)
            except StalePlan:
                # The write lock and BEGIN IMMEDIATE hold the whole database: only a bug gets here.
                if attempt == WRITE_ATTEMPTS:
                    raise DatabaseBusy("the rows kept changing under the write") from None
                self.retries += 1

    @contextlib.contextmanager
    def _savepoint(self, conn):
        """A savepoint: the block's changes are undone, alone, when it raises."""
        conn.execute("SAVEPOINT item")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO item")
            conn.execute("RELEASE item")
            raise
        conn.execute("RELEASE item")

    @staticmethod
    def _unique_violation(error):
        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)

    @staticmethod
    def _foreign_key_violation(error):
        return isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error)

    @staticmethod
    def _item_failure(error):
        """Whether `error` is one statement's failure, not the database's: it fails the items alone."""
        return isinstance(error, sqlite3.Error) and _database_fault(error) is None

    @staticmethod
    def _import_refused(kind, record, error):
        return None  # SQLite's only refusals are the keys'

    def _write_lone(self, credentials, write, merge, max_state_bytes):
        """A lone item in one statement when it passes every rule: its StateRow, else None."""
        params = (
            credentials.bot_id,
            write.account_id,
            write.ticker_id,
            write.state_json,
            write.expected_version,
            credentials.key_hash,
            max_state_bytes,
        )
        with self._writing(transaction=False) as conn:
            try:
                rows = conn.execute(self._lone_writes[merge], params).fetchall()
            except sqlite3.Error as error:
                if _database_fault(error) is not None:
                    raise
                return None  # the planned path writes it again and reports the failure
        return StateRow(*rows[0]) if rows else None
