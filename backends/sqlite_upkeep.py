"""A serving process's background work on SQLite: WAL checkpoints, the watch on the file, key-use flushes."""

import fcntl
import logging
import os
import sqlite3
import threading
import time

import diagnosis
from backends import keyuses
from backends.sqlite_schema import create_private
from records import StorageError

log = logging.getLogger("botstate.storage")

# Seconds between WAL checkpoints once start_checkpoints() runs.
CHECKPOINT_INTERVAL = 0.2
# WAL pages (of 4 KiB) past which a checkpoint makes the WAL start over, and how
# long it waits for readers to let it. SQLite's own checkpoints come at 1000 pages.
WAL_RESTART_FRAMES = 1000
RESTART_WAIT_MS = 100


def _file_identity(path):
    """(device, inode) of the file at `path`, or None when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class SQLiteUpkeep:
    """start_upkeep(), servers_running() and checkpoints of SQLiteStorage, over its connections and write lock."""

    def start_upkeep(self, leading=True):
        """Start the background work of a serving process: the watch on the file and keys' last use;
        when `leading` (the one process of a server's workers that does it), WAL checkpoints and pruning.

        Also marks the database as served until close(), for servers_running().
        """
        self.start_checkpoints(leading=leading)  # first: it closes what was open, this lock too
        create_private(self._serving_path)
        self._serving = open(self._serving_path, "a")  # noqa: SIM115 - held open while serving
        fcntl.flock(self._serving, fcntl.LOCK_SH)
        if leading:
            self.start_pruning()

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

    def start_checkpoints(self, interval=CHECKPOINT_INTERVAL, leading=True):
        """Copy the WAL into the database from a thread of its own, every `interval` seconds
        (unless not `leading`: then another process does).

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
            target=self._checkpoint_every, args=(interval, leading), name="botstate-checkpoints", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_every(self, interval, leading):
        failing = None
        next_flush = time.monotonic() + keyuses.first_flush_delay()
        while not self._stop_checkpoints.wait(interval):
            if not self._notice_file_change():
                continue
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + keyuses.KEY_USE_FLUSH_INTERVAL
                self.key_uses.flush_or_log(self.flush_key_uses)
            if not leading:
                continue
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
        with self._reading() as conn:
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < WAL_RESTART_FRAMES:
                return
            # Writers, and readers in other processes, may hold it up: wait for them briefly, not for the
            # busy timeout (and never for a writer that hangs: this thread also watches the file).
            if not self._write_lock.acquire(timeout=RESTART_WAIT_MS / 1000):
                return
            try:
                if not self._writers.acquire(timeout=RESTART_WAIT_MS / 1000):
                    return
                try:
                    conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                    try:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                    finally:
                        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                finally:
                    self._writers.release()
            finally:
                self._write_lock.release()
