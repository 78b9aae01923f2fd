"""An exclusive lock that processes on one host queue on: flock(2) on a file beside the database."""

import ctypes
import errno
import fcntl
import os

from backends.sqlite_schema import create_private
from records import DatabaseUnavailable

try:
    # flock(2) called with the GIL held: fcntl.flock gives the GIL up for the call, and under load each
    # give-up is a wait to get it back behind the process's other threads, twice per write. A call
    # that cannot block (a try, an unlock) takes a microsecond: it keeps the GIL.
    _flock_holding_the_gil = ctypes.PyDLL(None, use_errno=True).flock
except (OSError, AttributeError):  # no C library to find: fcntl's, which gives the GIL up
    _flock_holding_the_gil = None


def _try_flock(fd, operation):
    """flock(fd, operation | LOCK_NB) without giving the GIL up; False when another process holds the lock."""
    if _flock_holding_the_gil is None:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if _flock_holding_the_gil(fd, operation | fcntl.LOCK_NB) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
        return False
    raise OSError(code, os.strerror(code))


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
        if not _try_flock(fd, fcntl.LOCK_EX):
            fcntl.flock(fd, fcntl.LOCK_EX)  # the wait: without the GIL

    def release(self):
        """Let the next process's writer in."""
        if self._fd is not None:  # else close() ran meanwhile, which let it go
            _try_flock(self._fd, fcntl.LOCK_UN)

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
