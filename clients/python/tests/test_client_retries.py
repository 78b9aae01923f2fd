"""Retries against a real server: a locked database, a connection cut after the commit, a rate limit."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from botstate_client import Client, NetworkError, RateLimited, Unavailable

from .botstate_server import Bot, Server, items, rows_of
from .cutting_proxy import CuttingProxy


@pytest.fixture
def proxy(server: Server) -> Iterator[CuttingProxy]:
    """A cutting proxy in front of the shared server."""
    address = urlsplit(server.url)
    assert address.hostname and address.port
    opened = CuttingProxy((address.hostname, address.port))
    yield opened
    opened.close()


def retries(caplog: pytest.LogCaptureFixture, status: str) -> int:
    """How many retries the client logged after `status` (e.g. `HTTP 503`, `no answer`)."""
    return sum(f"got {status}" in record.getMessage() for record in caplog.records)


def test_a_write_waits_out_a_locked_database(server: Server, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "botstate_client")
    states = items(server.take(1500), day=1)
    with server.locked(1.5):
        started = time.monotonic()
        result = client.write(states)
        took = time.monotonic() - started
    assert result.summary.succeeded == 1500 and [r.index for r in result.results] == list(range(1500))
    assert 1.4 < took < 10, took  # within the 10 s deadline, after the lock went
    assert retries(caplog, "HTTP 503") >= 1


def test_past_the_deadline_a_locked_database_is_unavailable(server: Server, bot: Bot) -> None:
    with server.locked(3.0), Client(server.url, bot.slug, bot.key, retry_deadline=0.5) as hasty:
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            hasty.write(items(server.take(1)))
        # Retry-After (1 s) is past the deadline: it gives up at once rather than sleep past it.
        assert time.monotonic() - started < 1.0
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (503, "SERVICE_UNAVAILABLE", 1.0)
    assert raised.value.message == "Database is busy, retry later"


def test_a_write_whose_answer_is_cut_is_retried_and_stored_once(
    server: Server, bot: Bot, client: Client, proxy: CuttingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "botstate_client")
    [(account, ticker)] = server.take(1)
    client.write([{"accountId": account, "tickerId": ticker, "state": {"fills": 1}}])
    proxy.cut_answer("PATCH")
    with Client(proxy.url, bot.slug, bot.key, retry_deadline=10) as through:
        result = through.merge(
            [{"accountId": account, "tickerId": ticker, "state": {"fills": 2}, "expectedVersion": 1}]
        )
    assert (proxy.cut, proxy.requests["PATCH"], proxy.connections) == (1, 2, 2)
    assert retries(caplog, "no answer") == 1
    # The retry got the first answer (replayed), not a version conflict from applying it again.
    [item] = result.results
    assert result.replayed and item.ok and item.row is not None and item.row.version == 2
    row = client.get(account, ticker)
    assert row is not None and (row.version, row.state) == (2, {"fills": 2})


def test_a_cut_chunk_of_a_long_write_is_retried_alone(
    server: Server, bot: Bot, client: Client, proxy: CuttingProxy
) -> None:
    pairs = server.take(2500)
    client.write(items(pairs, batch=1))
    proxy.cut_answer("PATCH", 2)
    with Client(proxy.url, bot.slug, bot.key, retry_deadline=10) as through:
        result = through.merge(items(pairs, batch=2))
    assert (proxy.cut, proxy.requests["PATCH"]) == (1, 4)  # three chunks, the second one twice
    assert result.summary.succeeded == 2500 and [r.index for r in result.results] == list(range(2500))
    assert result.replayed and {r.row.version for r in result.results if r.row} == {2}
    assert {(row.version, row.state["batch"]) for row in rows_of(client, pairs)} == {(2, 2)}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_reads_and_deletes_are_not_retried_without_an_answer(
    server: Server, bot: Bot, client: Client, proxy: CuttingProxy, method: str
) -> None:
    [(account, ticker)] = server.take(1)
    client.write([{"accountId": account, "tickerId": ticker, "state": {}}])
    proxy.cut_answer(method)
    with Client(proxy.url, bot.slug, bot.key, retry_deadline=10) as through, pytest.raises(NetworkError):
        getattr(through, method.lower())(account, ticker)
    assert (proxy.cut, proxy.requests[method]) == (1, 1)


def test_a_rate_limited_bot_gets_every_write_through(limited: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "botstate_client")
    bot = limited.new_bot()
    [pair] = limited.take(1)
    with Client(limited.url, bot.slug, bot.key, retry_deadline=10) as client:
        for tick in range(6):
            client.merge([{"accountId": pair[0], "tickerId": pair[1], "state": {"tick": tick}}])
        row = client.get(*pair)
    assert row is not None and (row.version, row.state) == (6, {"tick": 5})
    assert retries(caplog, "HTTP 429") >= 1


def test_past_the_deadline_a_rate_limited_bot_gets_rate_limited(limited: Server) -> None:
    bot = limited.new_bot()
    [pair] = limited.take(1)
    with Client(limited.url, bot.slug, bot.key, retry_deadline=0) as client, pytest.raises(RateLimited) as raised:
        for _ in range(10):
            client.get(*pair)
    assert (raised.value.status, raised.value.code) == (429, "TOO_MANY_REQUESTS")
    assert raised.value.message == "Rate limit exceeded: 4 per 1 second"
    assert raised.value.retry_after is not None and raised.value.retry_after >= 1
