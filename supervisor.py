"""Worker processes behind one port: the listening sockets bound once, N forked workers that
inherit them, a worker that dies replaced at once, and SIGTERM passed on to every worker and waited for.

On Linux each worker has a listening socket of its own, joined on the port by SO_REUSEPORT, and the
kernel spreads new connections over them; elsewhere they all share one. Workers share
nothing in memory: what must hold across them lives in the database (states, keys, kept
answers) or in the folder of files they share (the rate limit's counts, the metrics).
"""

import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback

log = logging.getLogger("botstate")

# Seconds the workers have, after SIGTERM, to answer what they hold (waitress gives a request 5 s)
# before they are killed.
DRAIN_TIMEOUT = 15
# A worker that dies sooner than this after it was ready, this many times in a row, meets a fault that
# restarting does not cure: its replacement waits RESTART_PAUSE seconds, so the log is not a flood.
SHORT_LIFE = 1.0
SHORT_LIVES = 5
RESTART_PAUSE = 1.0
# What the supervisor handles, and holds back while it forks.
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
# prometheus_client's multiprocess mode reads this variable at its import, in each worker.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Seconds between two touches of the shared folder's files, so that a cleaner of old files in
# TMPDIR (systemd-tmpfiles: 10 days) never takes those of a server that sat idle.
TOUCH_INTERVAL = 3600


@dataclasses.dataclass(frozen=True)
class Worker:
    """What a worker process is told: its slot (0 to N-1) and the folder the workers share."""

    slot: int
    shared_dir: str

    @property
    def leading(self):
        """Whether this worker does what one process does for all: WAL checkpoints and pruning."""
        return self.slot == 0

    @property
    def metrics_dir(self):
        """The folder of prometheus_client's per-process files."""
        return os.path.join(self.shared_dir, "metrics")

    @property
    def running_keys(self):
        """The file whose locked bytes are the Idempotency-Keys of requests running in any worker."""
        return os.path.join(self.shared_dir, "idempotency-keys.lock")

    @property
    def rate_counts(self):
        """The SQLite file of the rate limit's counts."""
        return os.path.join(self.shared_dir, "rate-limit.db")


def make_shared_dir():
    """A new private folder for the workers' shared files, set as prometheus_client's folder."""
    shared = tempfile.mkdtemp(prefix="botstate-workers-")
    keep_shared_dir(shared)
    os.environ[METRICS_DIR_VARIABLE] = os.path.join(shared, "metrics")
    return shared


def keep_shared_dir(shared):
    """Make the shared folder again (private), should something have removed it (a cleaner of TMPDIR)."""
    with contextlib.suppress(OSError):  # a worker then says why it cannot start, and is started again later
        for folder in (shared, os.path.join(shared, "metrics")):  # each private, the parent too
            os.makedirs(folder, mode=0o700, exist_ok=True)


def bind(host, port, backlog):
    """Listening sockets for host and port, as waitress would bind them; OSError or ValueError as waitress's."""
    from waitress.adjustments import Adjustments

    return _listen_on(Adjustments(host=host, port=port).listen, backlog)


def bind_per_worker(host, port, backlog, count):
    """`count` sets of listening sockets on host and port, one per worker, joined by SO_REUSEPORT: the kernel
    spreads new connections over them evenly, where on one shared socket the worker that wakes first
    takes a burst of connections whole. Elsewhere than Linux (whose kernels do not spread them), one
    set that all share."""
    probe = bind(host, port, backlog)  # waitress's errors, a port of 0 chosen, and nobody else on it
    if count == 1 or not sys.platform.startswith("linux"):
        return [probe] * count
    addresses = [(sock.family, sock.type, sock.proto, sock.getsockname()) for sock in probe]
    for sock in probe:
        sock.close()
    sets = []
    try:
        for _ in range(count):
            sets.append(_listen_on(addresses, backlog, share_port=True))
        # Between the probe's close and these binds another server could join the port's group: its
        # listening sockets would then take a share of the connections.
        ours = {os.fstat(sock.fileno()).st_ino for sockets in sets for sock in sockets}
        mine = [_ip_and_port(sock.getsockname()) for sock in sets[0]]
        if any(_overlap(theirs, mine) for inode, theirs in tcp_listeners() if inode not in ours):
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    except BaseException:
        for sock in {sock for sockets in sets for sock in sockets}:
            sock.close()
        raise
    return sets


def tcp_listeners():
    """(inode, (address, port)) of every listening TCP socket, from /proc/net/tcp and tcp6 (Linux)."""
    listeners = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    address, port = fields[1].rsplit(":", 1)
                    # The address is in 32-bit words, each in the host's byte order.
                    words = bytes.fromhex(address)
                    packed = b"".join(
                        int.from_bytes(words[i : i + 4], sys.byteorder).to_bytes(4, "big")
                        for i in range(0, len(words), 4)
                    )
                    listeners.append((int(fields[9]), (ipaddress.ip_address(packed), int(port, 16))))
    return listeners


def _ip_and_port(sockname):
    return ipaddress.ip_address(sockname[0].split("%")[0]), sockname[1]


def _overlap(theirs, mine):
    """Whether a listener on `theirs` (address, port) would take connections meant for one of `mine`."""
    address, port = theirs
    return any(
        port == my_port
        and address.version == my_address.version
        and (address == my_address or address.is_unspecified or my_address.is_unspecified)
        for my_address, my_port in mine
    )


def _listen_on(addresses, backlog, share_port=False):
    """A listening, non-blocking socket on each (family, type, proto, address)."""
    sockets = []
    try:
        for family, socktype, proto, address in addresses:
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _exit_status(status):
    """An exit status of os.waitpid in words: 'exited with 1', 'was killed by SIGKILL'."""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Starts `count` workers with run_worker(worker, ready) in forked children, replaces any
    that dies, and on SIGTERM or SIGINT stops them all; run() returns the exit code."""

    def __init__(self, count, shared_dir, run_worker, on_ready=None):
        self.count = count
        self.shared_dir = shared_dir
        self.run_worker = run_worker
        self.on_ready = on_ready  # called once, when every first worker is ready
        self.children = {}  # pid -> [slot, when forked or (once ready) when ready, ready]
        self.short_lives = 0
        self.stopping = None  # the monotonic time SIGTERM came
        self.failed = False
        self.announced = False
        self.next_touch = time.monotonic() + TOUCH_INTERVAL

    def run(self):
        """Supervise until every worker has stopped; 0 when all stopped cleanly."""
        self._ready_read, self._ready_write = os.pipe()
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._ready_read, self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        previous = signal.set_wakeup_fd(self._wake_write)
        handlers = {number: signal.signal(number, self._stop) for number in (signal.SIGTERM, signal.SIGINT)}
        handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd wakes the loop
        try:
            # The first worker alone, then the others: what stops one from starting (the database, a
            # setting) is then told once, by it.
            self._start(0)
            with selectors.DefaultSelector() as selector:
                selector.register(self._ready_read, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while self.children:
                    selector.select(timeout=1.0)
                    self._drain(self._wake_read)
                    self._note_ready()
                    self._reap()
                    if not self.announced and not self.stopping:
                        self._start_the_others()
                    if self.stopping and time.monotonic() - self.stopping > DRAIN_TIMEOUT:
                        self._signal_all(signal.SIGKILL)
                    if time.monotonic() >= self.next_touch:
                        self.next_touch = time.monotonic() + TOUCH_INTERVAL
                        touch_tree(self.shared_dir)
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
            signal.set_wakeup_fd(previous)
            for fd in (self._ready_read, self._ready_write, self._wake_read, self._wake_write):
                os.close(fd)
        return 1 if self.failed else 0

    def _start_the_others(self):
        """Once the first worker is ready start the others, and once they are ready call on_ready."""
        slots = [slot for slot, _, ready in self.children.values() if ready]
        if len(self.children) == 1 and slots == [0]:
            for slot in range(1, self.count):
                self._start(slot)
        if len(slots) == self.count:
            self.announced = True
            if self.on_ready is not None:
                self.on_ready()

    def _stop(self, signum, frame):
        if self.stopping is None:
            self.stopping = time.monotonic()
            self._signal_all(signal.SIGTERM)

    def _signal_all(self, number):
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def _start(self, slot):
        if self.stopping:  # SIGTERM came: no new worker would be told to stop
            return None
        worker = Worker(slot, self.shared_dir)
        keep_shared_dir(self.shared_dir)
        parent = os.getpid()
        # Signals wait while the fork runs: the child's own handlers get those for it, and the
        # supervisor's those for it, once it knows the child (and so passes SIGTERM on to it too).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._be_worker(worker, parent, blocked)  # never returns
            self.children[pid] = [slot, time.monotonic(), False]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _be_worker(self, worker, parent, mask):
        """The child's side of the fork: run the worker, then leave without the parent's cleanups."""
        code = 1
        try:
            for fd in (self._ready_read, self._wake_read, self._wake_write):
                os.close(fd)
            signal.set_wakeup_fd(-1)
            for number in (signal.SIGTERM, signal.SIGCHLD):
                signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            die_with_parent(parent)
            ready_write = self._ready_write

            def ready():
                os.write(ready_write, b"%d\n" % os.getpid())

            code = self.run_worker(worker, ready)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if not isinstance(exit_.code, int) and exit_.code is not None:
                print(exit_.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            leave_now(code or 0)

    def _note_ready(self):
        data = self._drain(self._ready_read)
        for line in data.split():
            pid = int(line)
            child = self.children.get(pid)
            if child is not None:
                child[1:] = [time.monotonic(), True]  # from now on its life counts (SHORT_LIFE)
                if self.announced:  # a replacement: the first workers are announced by on_ready
                    log.info("worker %d (pid %d) is ready", child[0], pid)

    @staticmethod
    def _drain(fd):
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._ended(pid, status, *child)

    def _ended(self, pid, status, slot, started, ready):
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if self.stopping:
            if not clean and not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM):
                self.failed = True
                log.error("worker %d (pid %d) %s while stopping", slot, pid, _exit_status(status))
            return
        if not ready and not self.announced:
            # A first worker could not start (the database, the settings), and said why; another would not either.
            if os.WIFSIGNALED(status):
                log.error("worker %d (pid %d) %s before it was ready: stopping", slot, pid, _exit_status(status))
            self.failed = True
            self._stop(signal.SIGTERM, None)
            return
        # A replacement that could not start is started again: what stopped it (the database down, a
        # full disk) may pass. The other workers serve meanwhile, and new connections to this slot's
        # socket wait for the replacement.
        lived = time.monotonic() - started
        self.short_lives = self.short_lives + 1 if lived < SHORT_LIFE or not ready else 0
        if self.short_lives >= SHORT_LIVES:
            time.sleep(RESTART_PAUSE)
        new_pid = self._start(slot)
        if new_pid is not None:
            ended = _exit_status(status)
            log.warning("worker %d (pid %d) %s: started worker %d again (pid %d)", slot, pid, ended, slot, new_pid)


def leave_now(code):
    """Exit at once, the logs flushed, without Python's teardown (a forked child, or threads that still run)."""
    with contextlib.suppress(Exception):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def touch_tree(folder):
    """Set the folder's and its files' times to now."""
    for root, _, files in os.walk(folder):
        for name in [".", *files]:
            with contextlib.suppress(OSError):
                os.utime(os.path.join(root, name))


def remove_shared_dir(shared_dir):
    """Remove the workers' folder once they have all stopped."""
    with contextlib.suppress(OSError):
        shutil.rmtree(shared_dir)
    os.environ.pop(METRICS_DIR_VARIABLE, None)


# prctl(2)'s option that has the kernel signal a process when its parent dies (<sys/prctl.h>).
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
    """Have the kernel SIGTERM this worker should its supervisor die (Linux; elsewhere, nothing),
    and stop now if it died already."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)
