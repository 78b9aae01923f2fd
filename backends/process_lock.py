"""An exclusive lock that processes on one host queue on: flock(2) on a file beside the database."""

import contextlib
import ctypes
import errno
import fcntl
import os
import threading

from backends.sqlite_schema import create_private
from records import DatabaseBusy, DatabaseUnavailable

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
    while _flock_holding_the_gil(fd, operation | fcntl.LOCK_NB) != 0:
        code = ctypes.get_errno()
        if code in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        if code != errno.EINTR:  # a signal: try again (an unlock must never be left undone)
            raise OSError(code, os.strerror(code))
    return True


class ProcessLock:
    """flock(LOCK_EX) on a file, for one thread of this process at a time: its callers hold a thread lock.

    A waiter blocks in the kernel, without the GIL, and wakes as the holder lets go, or dies: the
    kernel drops a dead process's locks, so a worker killed mid-write blocks nobody. The blocking
    call is made by a thread of the lock's own, so that a caller can give up after its timeout (a
    holder stopped with SIGSTOP, hung) while that thread waits on; it lets the lock go if it gets it
    once nobody wants it.
    """

    def __init__(self, path, timeout=None):
        self.path = path
        self.timeout = timeout  # seconds `with` waits at most (None: as long as it takes)
        self._fd = None
        self._pid = None  # the process that opened _fd: a forked child opens its own
        self._state = threading.Lock()
        self._waiting = False  # the waiting thread is in flock(): nobody else touches the lock meanwhile
        self._wanted = False  # a caller waits for what the waiting thread gets
        self._handed = threading.Event()
        self._wake = threading.Event()
        self._waiter = None

    def __enter__(self):
        if not self.acquire(self.timeout):
            raise DatabaseBusy("timed out waiting for another process's write")
        return self

    def __exit__(self, *exc_info):
        self.release()

    def acquire(self, timeout=None):
        """Wait for the lock, at most `timeout` seconds (None: as long as it takes); whether it is held now."""
        fd = self._open()
        with self._state:
            if not self._waiting and _try_flock(fd, fcntl.LOCK_EX):
                return True
            self._handed.clear()
            self._wanted = True
            if not self._waiting:
                self._waiting = True
                self._start_waiter()
                self._wake.set()
        if self._handed.wait(timeout):
            return True
        with self._state:
            if self._handed.is_set():  # handed over as the wait ended
                return True
            self._wanted = False  # the waiting thread lets it go when it comes
        return False

    def release(self):
        """Let the next process's writer in."""
        if self._fd is not None:  # else close() ran meanwhile, which let it go
            _try_flock(self._fd, fcntl.LOCK_UN)

    def close(self):
        """Close the file (and so drop the lock, if held)."""
        with self._state:
            fd, self._fd = self._fd, None
            if fd is not None and not self._waiting:
                os.close(fd)
            # else the waiting thread closes it once its flock() returns

    def _start_waiter(self):
        if self._waiter is None or not self._waiter.is_alive():
            self._waiter = threading.Thread(target=self._wait_for_callers, name="botstate-writers-lock", daemon=True)
            self._waiter.start()

    def _wait_for_callers(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._state:
                fd = self._fd
            if fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX)  # the wait: in the kernel, without the GIL
            with self._state:
                if fd is None or fd != self._fd:  # closed meanwhile (and maybe opened again)
                    if fd is not None:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    if self._wanted and self._fd is not None:
                        self._wake.set()  # wait again, on the file as it is now
                    else:
                        self._waiting = False
                    continue
                self._waiting = False
                if self._wanted:
                    self._wanted = False
                    self._handed.set()
                else:
                    with contextlib.suppress(OSError):
                        _try_flock(fd, fcntl.LOCK_UN)

    def _open(self):
        if self._fd is None or self._pid != os.getpid():
            # A file description shared with a parent would share its lock too: never use one inherited,
            # nor the state of a waiting thread, which a fork does not carry over.
            try:
                create_private(self.path)
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as error:
                raise DatabaseUnavailable(f"cannot open the writers' lock {self.path}: {error.strerror}") from None
            if self._pid != os.getpid():
                self._waiting = self._wanted = False
                self._waiter = None
            self._fd, self._pid = fd, os.getpid()
        return self._fd
