"""Faults between the request and the database: each answers clearly and writes nothing."""

import os
import sqlite3
import threading
import time

import pytest

from keys import generate_key, hash_key
from spec_data import ACCOUNT_0, TICKER_AAPL, item


def post(client, bot, states):
    return client.post(f"/api/bots/{bot['slug']}/state", json={"states": states}, headers={"x-api-key": bot["apiKey"]})


def test_a_deleted_database_file_is_503_and_not_recreated_empty(configured):
    # Regression: reconnecting used to create a new empty file, then "no such table" answered 500.
    client, bot, storage = configured()
    assert post(client, bot, [item()]).status_code == 200
    storage.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(storage.path + suffix):
            os.remove(storage.path + suffix)
    health = client.get("/healthz")
    write = post(client, bot, [item()])
    assert (health.status_code, health.get_json()) == (503, {"status": "unavailable"})
    assert write.status_code == 503
    assert write.get_json() == {"error": "Database is unavailable, retry later", "code": "SERVICE_UNAVAILABLE"}
    assert not os.path.exists(storage.path)


def test_a_locked_database_costs_one_busy_timeout_not_two(configured):
    # Regression: a writer queued behind another in this process waited for the
    # in-process lock, then again in SQLite: twice BOTSTATE_BUSY_TIMEOUT_MS.
    client, bot, storage = configured(BUSY_TIMEOUT_MS=1500)
    holder = sqlite3.connect(storage.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    answers = []

    def write():
        started = time.monotonic()
        status = post(client, bot, [item()]).status_code
        answers.append((status, time.monotonic() - started))

    writers = [threading.Thread(target=write) for _ in range(3)]
    try:
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [status for status, _ in answers] == [503, 503, 503]
    # Twice the timeout would be 3.0 s; the bound leaves a second for a slow machine.
    assert max(seconds for _, seconds in answers) < 2.5


@pytest.mark.parametrize(
    "change,status,body",
    (
        (lambda s: s.replace_bot_key("b", hash_key(generate_key())), 403, {"message": "Invalid API key for this bot"}),
        (lambda s: s.delete_bot("b"), 404, {"error": "Bot with slug 'b' not found", "code": "NOT_FOUND"}),
    ),
)
@pytest.mark.parametrize("method", ("POST", "PATCH", "DELETE"))
def test_a_key_rotated_or_bot_deleted_mid_request_writes_nothing(configured, monkeypatch, change, status, body, method):
    # Regression: the key was checked before the write transaction, so a request
    # authenticated just before `bots rotate-key` or `bots delete` still wrote.
    client, bot, storage = configured()
    post(client, bot, [item(state={"v": 1})])
    authenticated = storage.find_bot_credentials

    def then_change(slug):
        credentials = authenticated(slug)
        change(storage)
        return credentials

    monkeypatch.setattr(storage, "find_bot_credentials", then_change)
    if method == "DELETE":
        response = client.delete(f"/api/bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}", headers={"x-api-key": bot["apiKey"]})
    else:
        response = client.open("/api/bots/b/state", method=method, json={"states": [item(state={"v": 2})]}, headers={"x-api-key": bot["apiKey"]})
    assert (response.status_code, response.get_json()) == (status, body)
    rows = storage.list_states(storage.get_bot("b")["id"], 10)[0] if storage.get_bot("b") else []
    assert [row.state_json for row in rows] == ([] if status == 404 else ['{"v":1}'])
