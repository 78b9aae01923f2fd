"""The rate limit's counts in a SQLite file the workers of one server share: one budget per bot,
whichever worker a request reaches. A limits storage (scheme botstate-shared://PATH) for Flask-Limiter.

The counts are worth nothing once the server stops, so the file is written without fsync
(synchronous=OFF): a crash of the machine may only forget a window's counts.
"""

import os
import sqlite3
import threading
import time
import urllib.parse

from limits.storage import Storage

from backends.process_lock import ProcessLock
from backends.sqlite_schema import create_private
from records import StorageError

SCHEME = "botstate-shared"
# Seconds a count waits for the other workers' at most (each takes microseconds); then it fails,
# and the limiter lets the request through (Flask-Limiter's swallow_errors) with a log line.
HIT_TIMEOUT = 1.0

_SCHEMA = "CREATE TABLE IF NOT EXISTS counts (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL)"
# A window that ended starts over at this hit; else the hit adds to it. ?1 key, ?2 amount, ?3 now, ?4 expiry.
_HIT = """
INSERT INTO counts (key, count, expires) VALUES (?1, ?2, ?3 + ?4)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN counts.expires <= ?3 THEN ?2 ELSE counts.count + ?2 END,
    expires = CASE WHEN counts.expires <= ?3 THEN ?3 + ?4 ELSE counts.expires END
RETURNING count
"""


def uri_of(path):
    """The storage URI Flask-Limiter takes for counts in the file `path`."""
    return f"{SCHEME}://{urllib.parse.quote(os.path.abspath(path))}"


class SharedCounts(Storage):
    """Fixed-window counts in one SQLite file: each hit one statement, in turn across processes."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri=None, wrap_exceptions=False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = urllib.parse.unquote(urllib.parse.urlparse(uri).path)
        self._local = threading.local()
        self._thread_lock = threading.Lock()
        # SQLite's busy handler would sleep in growing steps: writers queue on a flock instead.
        self._writers = ProcessLock(f"{self.path}-writers", timeout=HIT_TIMEOUT)

    @property
    def base_exceptions(self):
        """What the storage raises when the file fails (or another worker holds it too long)."""
        return (sqlite3.Error, OSError, StorageError)

    def _db(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            create_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(_SCHEMA)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def incr(self, key, expiry, amount=1):
        """Add `amount` to the key's window (a new one of `expiry` seconds once it ended); the count now."""
        conn = self._db()
        with self._thread_lock, self._writers:
            return conn.execute(_HIT, (key, amount, time.time(), expiry)).fetchone()[0]

    def get(self, key):
        """The key's count in its window (0 when it ended)."""
        row = (
            self._db().execute("SELECT count FROM counts WHERE key = ? AND expires > ?", (key, time.time())).fetchone()
        )
        return 0 if row is None else row[0]

    def get_expiry(self, key):
        """When the key's window ends (now, when none runs)."""
        now = time.time()
        row = self._db().execute("SELECT expires FROM counts WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return now if row is None else row[0]

    def check(self):
        """Whether the file answers."""
        try:
            self._db().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def reset(self):
        """Forget every count; how many keys had one."""
        conn = self._db()
        with self._thread_lock, self._writers:
            return conn.execute("DELETE FROM counts").rowcount

    def clear(self, key):
        """Forget the key's count."""
        conn = self._db()
        with self._thread_lock, self._writers:
            conn.execute("DELETE FROM counts WHERE key = ?", (key,))
