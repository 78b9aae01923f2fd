"""An exclusive lock that processes on one host queue on: flock(2) on a file beside the database."""

import fcntl
import os

from backends.sqlite_schema import create_private
from records import DatabaseUnavailable


class ProcessLock:
    """flock(LOCK_EX) on a file, for one thread of this process at a time: its callers hold a thread lock.

    A waiter blocks in the kernel, without the GIL, and wakes as the holder lets go, or
    dies: the kernel drops a dead process's locks, so a worker killed mid-write blocks nobody.
    """

    def __init__(self, path):
        self.path = path
        self._fd = None
        self._pid = None  # the process that opened _fd: a forked child opens its own

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

    def acquire(self):
        """Wait for the lock. Holders keep it for one write transaction, so the wait is that long at most."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self):
        """Let the next process's writer in."""
        if self._fd is not None:  # else close() ran meanwhile, which let it go
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self):
        """Close the file (and so drop the lock, if held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _open(self):
        if self._fd is None or self._pid != os.getpid():
            # A file description shared with a parent would share its lock too: never use one inherited.
            try:
                create_private(self.path)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as error:
                raise DatabaseUnavailable(f"cannot open the writers' lock {self.path}: {error.strerror}") from None
            self._pid = os.getpid()
        return self._fd
