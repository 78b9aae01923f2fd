"""A server's worker processes seen from outside, through /proc: which they are, what CPU they used,
and which of them holds the server's side of a client's connection."""

import contextlib
import http.client
import os
import re
import time
import urllib.parse
from pathlib import Path

TIMEOUT = 30


def worker_pids(process):
    """The pids of the server's worker processes (the children of its supervisor), lowest first."""
    children = set()
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        try:
            children.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return sorted(children)


def wait_for_workers(process, count, timeout=TIMEOUT):
    """The pids of the server's workers once it has `count` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(process)
        if len(pids) == count:
            return pids
        time.sleep(0.01)
    raise AssertionError(f"the server has {worker_pids(process)} as workers, not {count} of them")


def cpu_seconds(pid):
    """The CPU time (user and system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _socket_inodes(pid):
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(int(match.group(1)))
    return inodes


def listening_inodes(pid, port):
    """The inodes of the listening sockets on `port` that the process holds."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                listening.add(int(fields[9]))
    return listening & _socket_inodes(pid)


def _server_side_inode(server_port, client_port):
    """The inode of the server's socket of the loopback connection between these two ports."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if (local_port, remote_port) == (server_port, client_port):
                return int(fields[9])
    return None


def accepting_worker(process, server_port, client_port):
    """The pid of the worker that holds the server's side of a loopback connection (None if none does)."""
    inode = _server_side_inode(server_port, client_port)
    return next((pid for pid in worker_pids(process) if inode in _socket_inodes(pid)), None)


class WorkerConnection:
    """A keep-alive HTTP connection to the server, and the worker that accepted it."""

    def __init__(self, base_url, process):
        url = urllib.parse.urlsplit(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
        self.request("GET", "/healthz")  # answered: so a worker has accepted it
        self.worker = accepting_worker(process, url.port, self.connection.sock.getsockname()[1])

    def request(self, method, path, body=None, headers=None):
        """(status, body bytes) of one request on this connection."""
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self):
        """Close the connection."""
        self.connection.close()


@contextlib.contextmanager
def connections_to_every_worker(base_url, process, count, tries=200):
    """One keep-alive connection to each of the server's `count` workers, by worker pid, closed after the block."""
    found, spare = {}, []
    for _ in range(tries):
        connection = WorkerConnection(base_url, process)
        if connection.worker is not None and connection.worker not in found:
            found[connection.worker] = connection
        else:
            spare.append(connection)
        if len(found) == count:
            break
    for connection in spare:
        connection.close()
    try:
        assert len(found) == count, f"connections reached {sorted(found)}, not {count} workers"
        yield found
    finally:
        for connection in found.values():
            connection.close()
