"""Idle sockets and bodies that trickle in do not starve a normal client."""

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from conftest import start_server, stop_server
from spec_data import item


def open_idle(address, count):
    """`count` connected sockets that send nothing."""
    return [socket.create_connection(address, timeout=10) for _ in range(count)]


def trickle(address, stop, body=b'{"states": [' + b" " * 2000 + b"]}"):
    """Send a POST whose body comes a byte every 50 ms, until `stop` is set."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(
            b"POST /api/bots/my-bot/state HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for byte in body:
            if stop.is_set():
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(0.05)


@pytest.fixture
def server(database, bot, registered, request):
    settings = getattr(request, "param", {})
    process, base_url, log_path = start_server(database, **settings)
    yield base_url, bot
    stop_server(process)


def write(base_url, bot):
    return requests.post(
        f"{base_url}/api/bots/my-bot/state", json={"states": [item()]}, headers={"x-api-key": bot["apiKey"]}, timeout=20
    )


def test_idle_and_trickling_clients_leave_room_for_a_normal_one(server):
    base_url, bot = server
    address = (urlsplit(base_url).hostname, urlsplit(base_url).port)
    idle = open_idle(address, 50)
    stop = threading.Event()
    tricklers = [threading.Thread(target=trickle, args=(address, stop)) for _ in range(10)]
    for thread in tricklers:
        thread.start()
    try:
        time.sleep(0.3)  # the slow ones are all connected and sending
        answers = [write(base_url, bot).status_code for _ in range(20)]
    finally:
        stop.set()
        for thread in tricklers:
            thread.join()
        for sock in idle:
            sock.close()
    assert answers == [200] * 20


@pytest.mark.parametrize("server", [{"CONNECTION_LIMIT": 10, "CHANNEL_TIMEOUT": 1}], indirect=True)
def test_idle_clients_at_the_connection_limit_are_dropped_after_the_channel_timeout(server):
    base_url, bot = server
    address = (urlsplit(base_url).hostname, urlsplit(base_url).port)
    idle = open_idle(address, 10)
    try:
        assert write(base_url, bot).status_code == 200  # served once the idle ones time out
        for sock in idle:
            assert sock.recv(1) == b""  # the server closed it
    finally:
        for sock in idle:
            sock.close()
