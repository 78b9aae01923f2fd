"""Copies of a SQLite database: an online backup to a new file, and a restore from one."""

import contextlib
import os
import pathlib
import sqlite3

import diagnosis
from backends.sqlite_schema import create_private, holds_botstate_schema
from records import DatabaseUnavailable, StorageError


class SQLiteFiles:
    """backup() and restore() of storage.Storage, over SQLiteStorage's connections."""

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
            with self._reading() as conn, contextlib.closing(sqlite3.connect(partial)) as copy:
                conn.backup(copy)  # all pages in one step: one read transaction, so one moment
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
                if backup.execute("PRAGMA integrity_check").fetchone()[0] != "ok" or not holds_botstate_schema(backup):
                    raise StorageError(f"{source} is not a botstate database, or is damaged")
                if before_copy is not None:
                    before_copy()
                with self._writing(transaction=False) as conn:
                    backup.backup(conn)
        except sqlite3.DatabaseError as error:
            raise StorageError(f"{source} is not a botstate database ({error})") from None
        return self.migrate()
