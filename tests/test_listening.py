"""The workers' listening sockets: one SO_REUSEPORT set per worker on Linux, one shared set elsewhere,
and no other server let into the port's group."""

import errno
import ipaddress
import os
import socket

import pytest

import supervisor

HOST = "127.0.0.1"


def free_port():
    """A loopback port nobody listens on (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def listeners_on(port):
    """The inodes of every socket listening on `port`."""
    return {inode for inode, (_, listened) in supervisor.tcp_listeners() if listened == port}


def inodes_of(sets):
    """The inodes of every socket in these sets."""
    return {os.fstat(sock.fileno()).st_ino for sockets in sets for sock in sockets}


def close_all(sets):
    for sock in {sock for sockets in sets for sock in sockets}:
        sock.close()


def test_each_worker_gets_a_set_of_its_own_on_linux():
    sets = supervisor.bind_per_worker(HOST, 0, 16, 3)
    try:
        assert len(inodes_of(sets)) == 3
        assert {sock.getsockname() for sockets in sets for sock in sockets} == {sets[0][0].getsockname()}
        assert listeners_on(sets[0][0].getsockname()[1]) == inodes_of(sets)
    finally:
        close_all(sets)


def test_elsewhere_than_linux_the_workers_share_one_set(monkeypatch):
    # The BSDs and macOS take SO_REUSEPORT but hand every connection to one socket of the group.
    monkeypatch.setattr(supervisor.sys, "platform", "darwin")
    sets = supervisor.bind_per_worker(HOST, 0, 16, 3)
    try:
        assert len(inodes_of(sets)) == 1 and len(sets) == 3
        assert not sets[0][0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        close_all(sets)


def test_a_server_that_joins_the_port_while_the_sets_bind_is_found_and_the_port_given_up(monkeypatch):
    # Review: two servers started at once could each probe the port, close the probe, and then both
    # join one SO_REUSEPORT group, each taking a share of the other's connections.
    port = free_port()
    intruder = socket.socket()
    listen_on = supervisor._listen_on
    ours = []

    def another_server_first(addresses, backlog, share_port=False):
        if share_port and not ours:
            intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            intruder.bind((HOST, port))
            intruder.listen(16)
        sockets = listen_on(addresses, backlog, share_port)
        if share_port:
            ours.append(sockets)
        return sockets

    monkeypatch.setattr(supervisor, "_listen_on", another_server_first)
    try:
        with pytest.raises(OSError) as refused:
            supervisor.bind_per_worker(HOST, port, 16, 2)
        assert refused.value.errno == errno.EADDRINUSE
        assert all(sock.fileno() == -1 for sockets in ours for sock in sockets)  # ours all closed
        assert listeners_on(port) == {os.fstat(intruder.fileno()).st_ino}
    finally:
        intruder.close()


def test_a_server_on_the_same_port_of_another_address_is_no_intruder():
    port = free_port()
    with socket.socket() as neighbour:
        neighbour.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        neighbour.bind(("127.0.0.2", port))
        neighbour.listen(16)
        sets = supervisor.bind_per_worker(HOST, port, 16, 2)
        try:
            assert listeners_on(port) == inodes_of(sets) | {os.fstat(neighbour.fileno()).st_ino}
            assert len(inodes_of(sets)) == 2
        finally:
            close_all(sets)


@pytest.mark.parametrize(
    "theirs, mine, overlap",
    (
        (("127.0.0.1", 80), [("127.0.0.1", 80)], True),
        (("0.0.0.0", 80), [("127.0.0.1", 80)], True),
        (("127.0.0.1", 80), [("0.0.0.0", 80)], True),
        (("127.0.0.2", 80), [("127.0.0.1", 80)], False),
        (("127.0.0.1", 81), [("127.0.0.1", 80)], False),
        (("::", 80), [("127.0.0.1", 80)], False),  # ours are IPV6_V6ONLY, and theirs another family
        (("::1", 80), [("127.0.0.1", 80), ("::1", 80)], True),
    ),
)
def test_which_listeners_would_take_our_connections(theirs, mine, overlap):
    address, port = theirs
    assert (
        supervisor._overlap((ipaddress.ip_address(address), port), [(ipaddress.ip_address(a), p) for a, p in mine])
        is overlap
    )
