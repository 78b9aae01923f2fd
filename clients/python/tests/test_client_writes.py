"""Writes of any length against a real server: chunking, indices in the caller's list, per-item errors, keys."""

from __future__ import annotations

import threading
import uuid

from botstate_client import BadRequest, Client, IdempotencyConflict

from .botstate_server import Server, items, rows_of


def test_a_2500_item_write_is_one_result_whose_indices_match(server: Server, client: Client) -> None:
    pairs = server.take(2500)
    result = client.write(items(pairs, price=1.5))
    assert result.summary.total == result.summary.succeeded == 2500 and result.summary.failed == 0
    assert [r.index for r in result.results] == list(range(2500))
    for r, (account, ticker) in zip(result.results, pairs, strict=True):
        assert r.ok and r.row is not None and (r.account_id, r.ticker_id) == (account, ticker)
        assert (r.row.account_id, r.row.ticker_id, r.row.state["n"], r.row.version) == (account, ticker, r.index, 1)
    assert len(result.rows) == 2500 and result.ok and not result.replayed


def test_per_item_failures_keep_their_place_across_chunks(server: Server, client: Client) -> None:
    states = items(server.take(2100))
    unknown = str(uuid.uuid4())
    for index in (5, 1000, 2099):
        states[index]["tickerId"] = unknown
    result = client.merge(states)
    assert (result.summary.total, result.summary.succeeded, result.summary.failed) == (2100, 2097, 3)
    assert [(f.index, f.code, f.error, f.ticker_id) for f in result.failures] == [
        (index, "TICKER_NOT_FOUND", "Ticker not found", unknown) for index in (5, 1000, 2099)
    ]


def test_version_conflicts_carry_the_stored_version(server: Server, client: Client) -> None:
    (account, ticker), other = server.take(2)
    client.write([{"accountId": account, "tickerId": ticker, "state": {"a": 1}}])
    result = client.merge(
        [
            {"accountId": account, "tickerId": ticker, "state": {"b": 2}, "expectedVersion": 5},
            {"accountId": other[0], "tickerId": other[1], "state": {"c": 3}, "expectedVersion": 0},
        ]
    )
    conflict, created = result.results
    assert (conflict.code, conflict.current_version, conflict.error) == (
        "VERSION_CONFLICT",
        1,
        "Version conflict: expected 5, found 1",
    )
    assert created.row is not None and created.row.version == 1
    row = client.get(account, ticker)
    assert row is not None and row.state == {"a": 1}


def test_merge_patches_and_write_replaces(server: Server, client: Client) -> None:
    [(account, ticker)] = server.take(1)
    pair = {"accountId": account, "tickerId": ticker}
    client.write([{**pair, "state": {"position": "long", "indicators": {"rsi": 60, "macd": 1.2}}}])
    client.merge([{**pair, "state": {"indicators": {"rsi": 65, "macd": None}}}])
    row = client.get(account, ticker)
    assert row is not None and (row.state, row.version) == ({"position": "long", "indicators": {"rsi": 65}}, 2)
    client.write([{**pair, "state": {"flat": True}}])
    row = client.get(account, ticker)
    assert row is not None and (row.state, row.version) == ({"flat": True}, 3)


def test_a_bad_item_in_a_later_chunk_is_named_by_its_index_in_the_callers_list(server: Server, client: Client) -> None:
    states = items(server.take(1500))
    states[1200]["accountId"] = "not-a-uuid"
    try:
        client.write(states)
    except BadRequest as error:
        assert error.message == "states[1200].accountId must be a valid UUID"
        assert error.partial is not None and error.partial.summary.succeeded == 1000
        assert [r.index for r in error.partial.results] == list(range(1000))
    else:
        raise AssertionError("the write was taken")


def test_an_empty_write_asks_nothing(client: Client) -> None:
    result = client.write([])
    assert (result.summary.total, result.results) == (0, [])


def test_a_callers_idempotency_key_makes_a_repeated_write_a_replay(server: Server, client: Client) -> None:
    pairs = server.take(1200)
    states = items(pairs, run="eod")
    key = f"eod-{uuid.uuid4()}"
    first = client.write(states, idempotency_key=key)
    again = client.write(states, idempotency_key=key)  # e.g. the bot restarted and sends its end of day again
    assert again.replayed and not first.replayed
    assert again == type(again)(first.summary, first.results, replayed=True)
    assert {row.version for row in rows_of(client, pairs)} == {1}
    try:
        client.write(items(pairs, run="other"), idempotency_key=key)
    except IdempotencyConflict as error:
        assert (error.status, error.code) == (422, "UNPROCESSABLE_ENTITY")
    else:
        raise AssertionError("a different body under a used key was taken")


def test_the_same_keyed_write_sent_twice_at_once_is_stored_once(server: Server, client: Client) -> None:
    # The second request meets the first still running (409 in progress), waits, and gets the first's answer.
    pairs = server.take(1000)
    states = items(pairs, blob="x" * 400)
    key = str(uuid.uuid4())
    results = []

    def send() -> None:
        results.append(client.write(states, idempotency_key=key))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2 and results[0].results == results[1].results
    assert {row.version for row in rows_of(client, pairs)} == {1}
