"""Reads against a real server: one row, paging over 2,500 rows, deletes, the change feed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from botstate_client import Client, Gone, NotFound, PreconditionFailed

from .botstate_server import Server, items


def test_get_gives_the_row_with_its_version_and_etag_or_none(server: Server, client: Client) -> None:
    (account, ticker), (other, _) = server.take(51)[::50]
    assert client.get(account, ticker) is None
    client.write([{"accountId": account.upper(), "tickerId": ticker, "state": {"k": [1, "é", {"x": None}]}}])
    client.merge([{"accountId": account, "tickerId": ticker, "state": {"j": 2}}])
    row = client.get(account, ticker)
    assert row is not None
    assert (row.account_id, row.ticker_id, row.state, row.version, row.etag) == (
        account,
        ticker,
        {"k": [1, "é", {"x": None}], "j": 2},
        2,
        '"2"',
    )
    assert row.created_at <= row.updated_at and row.updated_at.tzinfo is not None
    assert client.get(other, ticker) is None


def test_paging_walks_2500_rows_once_each_in_order(server: Server, own_client: Client) -> None:
    pairs = server.take(2500)
    own_client.write(items(pairs))
    rows = list(own_client.iter_states())
    assert [(row.account_id, row.ticker_id) for row in rows] == sorted(pairs)
    assert sorted(row.state["n"] for row in rows) == list(range(2500))
    assert list(own_client.iter_states(page_size=999)) == rows  # three pages


def test_paging_filters(server: Server, own_client: Client) -> None:
    client = own_client
    pairs = server.take(120)  # accounts 0..2, 50 tickers each (the last has 20)
    client.write(items(pairs))
    account, ticker = pairs[0]
    assert len(list(client.iter_states(account_id=account, page_size=7))) == 50
    assert [row.account_id for row in client.iter_states(ticker_id=ticker)] == sorted({a for a, _ in pairs})
    assert len(list(client.iter_states(updated_since=datetime.now(UTC) + timedelta(hours=1)))) == 0
    assert len(list(client.iter_states(updated_since="2000-01-01T00:00:00Z"))) == 120
    with pytest.raises(ValueError, match="aware"):
        list(client.iter_states(updated_since=datetime.now()))


def test_delete_gives_the_deleted_row_and_checks_the_version(server: Server, client: Client) -> None:
    [(account, ticker)] = server.take(1)
    client.write([{"accountId": account, "tickerId": ticker, "state": {"a": 1}}])
    client.write([{"accountId": account, "tickerId": ticker, "state": {"a": 2}}])
    with pytest.raises(PreconditionFailed) as raised:
        client.delete(account, ticker, if_version=1)
    assert (raised.value.current_version, raised.value.message) == (2, "Version conflict: expected 1, found 2")
    deleted = client.delete(account, ticker, if_version=2)
    assert (deleted.version, deleted.state) == (2, {"a": 2})
    assert client.get(account, ticker) is None
    with pytest.raises(NotFound) as missing:
        client.delete(account, ticker)
    assert (missing.value.status, missing.value.message) == (404, "State not found")


def test_the_change_feed_resumes_from_a_stored_seq(server: Server, own_client: Client) -> None:
    client = own_client
    pairs = server.take(30)
    client.write(items(pairs))
    first = list(client.changes(page_size=7))
    assert [(c.op, c.version, c.account_id, c.ticker_id) for c in first] == [("upsert", 1, a, t) for a, t in pairs]
    assert [c.seq for c in first] == sorted({c.seq for c in first})
    seq = first[-1].seq  # what a reader stores
    client.merge([{"accountId": pairs[3][0], "tickerId": pairs[3][1], "state": {"more": True}}])
    client.delete(*pairs[4])
    later = list(client.changes(after=seq))
    assert [(c.op, c.version, c.ticker_id) for c in later] == [("upsert", 2, pairs[3][1]), ("delete", 1, pairs[4][1])]
    assert later[0].state == {"n": 3, "more": True} and later[1].state is None
    assert list(client.changes(after=later[-1].seq)) == []
    filtered = list(client.changes(account_id=pairs[0][0], ticker_id=pairs[3][1]))
    assert [c.version for c in filtered] == [1, 2]


def test_a_feed_position_past_the_end_is_gone(client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(Gone) as raised:
        list(client.changes(after=10**15))
    assert raised.value.code == "GONE" and raised.value.seq is not None and raised.value.seq < 10**15
    assert time.monotonic() - started < 2  # not retried
