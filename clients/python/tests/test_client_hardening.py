"""What a careless caller or an odd answer does: values that are not JSON, base URLs that are not URLs, answers that
are not botstate's, Retry-After values botstate never sends, and the key of a lost write."""

from __future__ import annotations

import decimal
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botstate_client import AsyncClient, Client, NetworkError, Unavailable, UnexpectedAnswer

from .botstate_server import Server, items, new_ids, start_server


@pytest.fixture(scope="module")
def seven(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that takes at most 7 items per write."""
    running = start_server(tmp_path_factory.mktemp("seven"), new_ids(20), new_ids(2), MAX_STATES="7")
    yield running
    running.stop()


# One row per value that JSON cannot carry, put in the second request's items.
NOT_JSON: tuple[tuple[str, Any], ...] = (
    ("a Decimal", decimal.Decimal("1.5")),
    ("NaN", math.nan),
    ("infinity", math.inf),
    ("a set", {1, 2}),
)


@pytest.mark.parametrize(("case", "value"), NOT_JSON, ids=[row[0] for row in NOT_JSON])
def test_a_value_that_is_not_json_in_a_later_chunk_stores_nothing(seven: Server, case: str, value: Any) -> None:
    bot = seven.new_bot()
    with Client(seven.url, bot.slug, bot.key) as client:
        pairs = seven.take(10)
        states = items(pairs)
        states[8]["state"] = {"price": value}
        with pytest.raises(TypeError, match=r"^states\[8\] cannot be sent as JSON"):
            client.write(states)
        assert [client.get(account, ticker) for account, ticker in pairs] == [None] * len(pairs)


@pytest.mark.parametrize("base_url", ["localhost:8080", "127.0.0.1:1", "ftp://example.com", "", "http://"])
def test_a_base_url_that_is_not_an_http_url_is_refused_at_once(base_url: str) -> None:
    for make in (Client, AsyncClient):
        with pytest.raises(ValueError, match="base_url must be an http:// or https:// URL"):
            make(base_url, "bot", "key")


class Fake:
    """A loopback HTTP server that answers every request with one (status, headers, body): what a proxy might send."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                fake.requests += 1
                self.send_response(status)
                for name, value in {**headers, "content-length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


JSON = {"content-type": "application/json"}
PAIR = {"accountId": "a", "tickerId": "b", "state": {}}
# One row per call of a 2xx answer of the wrong shape.
CALLS = (
    ("write", lambda client: client.write([PAIR])),
    ("get", lambda client: client.get("a", "b")),
    ("delete", lambda client: client.delete("a", "b")),
    ("iter_states", lambda client: list(client.iter_states())),
    ("changes", lambda client: next(iter(client.changes()))),
)


@pytest.mark.parametrize("body", [b"{}", b"[]", b'{"data": 7, "summary": "x", "results": 1, "nextCursor": 2}'])
@pytest.mark.parametrize(("call", "run"), CALLS, ids=[row[0] for row in CALLS])
def test_a_2xx_answer_botstate_does_not_send_is_an_unexpected_answer(call: str, run: Any, body: bytes) -> None:
    fake = Fake(200, JSON, body)
    try:
        with Client(fake.url, "bot", "key") as client, pytest.raises(UnexpectedAnswer, match="base URL"):
            run(client)
    finally:
        fake.close()


@pytest.mark.parametrize("retry_after", ["\u00b2", "1.5", "-3", "soon"])
def test_a_retry_after_botstate_never_sends_falls_back_to_the_backoff(retry_after: str) -> None:
    fake = Fake(503, {**JSON, "Retry-After": retry_after}, b'{"error": "busy", "code": "SERVICE_UNAVAILABLE"}')
    try:
        with Client(fake.url, "bot", "key", retry_deadline=1.0) as client, pytest.raises(Unavailable):
            client.get("a", "b")
        assert 2 <= fake.requests <= 6  # backed off: at least a retry, never a burst
    finally:
        fake.close()


def test_a_lost_write_names_its_key_so_it_can_be_sent_again_later() -> None:
    with Client("http://127.0.0.1:9", "bot", "key", retry_deadline=0) as client:
        with pytest.raises(NetworkError) as raised:
            client.write([PAIR], idempotency_key="eod-1")
        assert raised.value.idempotency_key == "eod-1"  # one request: the caller's key as it is
        with pytest.raises(NetworkError) as raised:
            client.get("a", "b")
        assert raised.value.idempotency_key is None
