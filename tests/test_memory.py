"""One write at the body limit costs the server a few times its size in memory, whatever its shape."""

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import start_server, stop_server
from spec_data import ACCOUNT_0, TICKER_AAPL

BODY_BYTES = 10 * 1024 * 1024 - 200  # the default limit, with room for the envelope
# Peak growth of the server's resident memory, as a multiple of the body.
MEMORY_BOUND = 8


def one_state(prefix, element, suffix):
    """A body of one item whose state repeats `element` to fill the body."""
    envelope = b'{"states":[{"accountId":"%s","tickerId":"%s","state":%s}]}'
    room = BODY_BYTES - len(envelope) - len(prefix) - len(suffix)
    state = prefix + b",".join([element] * (room // (len(element) + 1))) + suffix
    return envelope % (ACCOUNT_0.encode(), TICKER_AAPL.encode(), state)


# Each shape as one_state's arguments: the bodies are built by the test that sends them.
SHAPES = {
    # Issue 13: 1.5 million tiny containers took 41x the body (430 MB); wide ones 32x, flat ones 15x.
    "nested": (b'{"a":[', b"[[[]]]", b"]}"),
    "wide arrays": (b'{"a":[', b"[]", b"]}"),
    "wide objects": (b'{"a":[', b"{}", b"]}"),
    "flat numbers": (b'{"a":[', b"1.5", b"]}"),
    "flat strings": (b'{"a":[', b'"ab"', b"]}"),
    "many keys": (b"{", b'"k":1', b"}"),
    # Review of issue 13: a string of escapes made the structure scan's regex keep a mark per escape.
    "escapes": (b'{"a":"', b'\\"\\"', b'"}'),
}


def memory_bytes(pid, field):
    """A figure of /proc/PID/status in bytes (VmRSS: now, VmHWM: the peak since it was reset)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def post(base_url, api_key, body):
    """POST a raw body; (status, answer)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", "/api/bots/my-bot/state", body=body, headers={"x-api-key": api_key})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real server with a bot and its ids, on a SQLite file of its own."""
    from app import create_app
    from keys import generate_key, hash_key

    database = str(tmp_path_factory.mktemp("memory") / "botstate.db")
    storage = create_app({"DATABASE": database}).extensions["botstate.storage"]
    api_key = generate_key()
    storage.create_bot("my-bot", "My bot", hash_key(api_key))
    storage.add_account(ACCOUNT_0, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    storage.close()
    process, base_url, _ = start_server(database)
    post(base_url, api_key, b'{"states": []}')  # warm up
    yield process, base_url, api_key
    stop_server(process)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_write_at_the_body_limit_holds_a_few_times_its_size(served, shape):
    process, base_url, api_key = served
    body = one_state(*SHAPES[shape])
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # resets VmHWM to the present RSS
    before = memory_bytes(process.pid, "VmRSS")
    status, answer = post(base_url, api_key, body)
    growth = memory_bytes(process.pid, "VmHWM") - before
    assert status == 200 and b"State exceeds 65536 bytes" in answer
    assert growth <= MEMORY_BOUND * len(body), f"{shape}: {growth / len(body):.1f}x the body"
