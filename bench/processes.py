"""What bench/run.py reads of a server's processes from /proc: the CPU they used, their peak memory,
and how much of the time the SQLite writers' lock (<database>-writers) was held."""

import os
import threading
import time
from pathlib import Path

# Seconds between two looks at /proc/locks: a couple of thousand a case, at about 1% of a core (a look
# reads every lock of the machine; one every 0.5 ms took a third of a core from the server measured).
LOCK_SAMPLE_INTERVAL = 0.005


def process_tree(pid):
    """The pid and those of its children (a server's workers)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return [pid, *children]


def cpu_seconds(pids):
    """The CPU time (user and system) these processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pid, field):
    """A memory figure of the process from /proc (VmRSS: now, VmHWM: peak so far), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb(pids):
    """The largest peak resident set (VmHWM) of these processes, in MB."""
    peaks = [0.0]
    for pid in pids:
        try:
            peaks.append(memory_mb(pid, "VmHWM"))
        except FileNotFoundError:
            continue
    return max(peaks)


class LockSampler:
    """Looks at /proc/locks from a thread of its own and counts how often a flock on `path` is held."""

    def __init__(self, path):
        status = os.stat(path)
        self.key = (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)
        self.looks = self.held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    @property
    def share(self):
        """The share of looks that found the lock held."""
        return self.held / self.looks if self.looks else 0.0

    def _sample(self):
        while not self._stop.is_set():
            self.looks += 1
            self.held += any(self._is_ours(line) for line in Path("/proc/locks").read_text().splitlines())
            time.sleep(LOCK_SAMPLE_INTERVAL)

    def _is_ours(self, line):
        fields = line.split()
        if "->" in fields:  # a waiter queued behind a holder: not a holder
            return False
        if len(fields) < 6 or fields[1] != "FLOCK":
            return False
        major, minor, inode = fields[5].split(":")
        return (int(major, 16), int(minor, 16), int(inode)) == self.key
