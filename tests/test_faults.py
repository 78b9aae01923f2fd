"""Faults between the request and the database: each answers clearly and writes nothing."""

import os
import sqlite3
import threading
import time

import pytest
from spec_data import ACCOUNT_0, TICKER_AAPL, item

from keys import generate_key, hash_key


def post(client, bot, states):
    return client.post(f"/api/bots/{bot['slug']}/state", json={"states": states}, headers={"x-api-key": bot["apiKey"]})


@pytest.mark.sqlite_only("SQLite's file and write lock")
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


@pytest.mark.sqlite_only("SQLite's file and write lock")
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
    assert post(client, bot, [item()]).status_code == 200  # the lock released, the next one writes


@pytest.mark.parametrize(
    "change,status,body,rows_left",
    (
        (
            lambda s: s.replace_bot_key("b", hash_key(generate_key())),
            403,
            {"message": "Invalid API key for this bot"},
            ['{"v":1}'],
        ),
        (lambda s: s.delete_bot("b"), 404, {"error": "Bot with slug 'b' not found", "code": "NOT_FOUND"}, []),
        (
            lambda s: (s.delete_bot("b"), s.create_bot("b", "b", hash_key(generate_key()))),
            403,
            {"message": "Invalid API key for this bot"},
            [],
        ),
    ),
    ids=("key rotated", "bot deleted", "bot deleted and made again"),
)
@pytest.mark.parametrize("remembered", (False, True), ids=("read", "remembered"))
@pytest.mark.parametrize("method", ("POST", "PATCH", "DELETE", "GET"))
def test_a_key_rotated_or_bot_deleted_mid_request_writes_nothing(
    configured, monkeypatch, change, status, body, rows_left, method, remembered
):
    # Regression: the key was checked before the write transaction, so a request
    # authenticated just before `bots rotate-key` or `bots delete` still wrote.
    # A bot remembered from an earlier request is the same case: the change
    # happened after the key was last read.
    client, bot, storage = configured()
    post(client, bot, [item(state={"v": 1})])
    if remembered:
        change(storage)
    else:
        client.application.extensions["botstate.bots"].clear()
        authenticated = storage.find_bot_credentials

        def then_change(slug):
            credentials = authenticated(slug)
            monkeypatch.setattr(storage, "find_bot_credentials", authenticated)
            change(storage)
            return credentials

        monkeypatch.setattr(storage, "find_bot_credentials", then_change)
    path = f"/api/bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}"
    if method in ("DELETE", "GET"):
        response = client.open(path, method=method, headers={"x-api-key": bot["apiKey"]})
    else:
        response = client.open(
            "/api/bots/b/state",
            method=method,
            json={"states": [item(state={"v": 2})]},
            headers={"x-api-key": bot["apiKey"]},
        )
    assert (response.status_code, response.get_json()) == (status, body)
    bot_now = storage.get_bot("b")
    rows = storage.list_states(bot_now["id"], 10)[0] if bot_now else []
    assert [row.state_json for row in rows] == rows_left


@pytest.mark.parametrize(
    "method,path,data",
    (
        ("POST", "/api/bots/b/state", b"{not json"),
        ("PATCH", "/api/bots/b/state", b'{"states": []}'),
        ("GET", "/api/bots/b/state/not-a-uuid/" + TICKER_AAPL, None),
        ("DELETE", "/api/bots/b/state/" + ACCOUNT_0 + "/not-a-uuid", None),
    ),
    ids=("invalid JSON", "invalid body", "invalid account in path", "invalid ticker in path"),
)
def test_a_remembered_login_of_a_deleted_bot_answers_404_before_400(configured, method, path, data):
    # The bot is remembered from the first request; a bad request must still get
    # the answer a fresh read gives, as the order of checks says.
    client, bot, storage = configured()
    assert post(client, bot, [item()]).status_code == 200
    storage.delete_bot("b")
    response = client.open(path, method=method, data=data, headers={"x-api-key": bot["apiKey"]})
    assert (response.status_code, response.get_json()) == (
        404,
        {"error": "Bot with slug 'b' not found", "code": "NOT_FOUND"},
    )


def wait_for_status(client, bot, status, seconds=10):
    """POST until the answer has `status` (the checkpoint thread notices file changes every few ms)."""
    deadline = time.monotonic() + seconds
    while True:
        response = post(client, bot, [item(state={"v": "probe"})])
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


@pytest.mark.sqlite_only("SQLite's file and write lock")
def test_a_database_file_removed_under_open_connections_is_503_until_it_is_back(configured, tmp_path):
    # Regression: connections opened before the file was removed kept writing into
    # the removed file, answering 200 for writes nobody could ever read again.
    client, bot, storage = configured()
    assert post(client, bot, [item(state={"v": 1})]).status_code == 200
    backup = sqlite3.connect(tmp_path / "backup.db")
    with sqlite3.connect(storage.path) as live:
        live.backup(backup)
    backup.close()
    storage.start_checkpoints(interval=0.01)
    assert post(client, bot, [item(state={"v": 2})]).status_code == 200  # connections are open now
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(storage.path + suffix):
            os.remove(storage.path + suffix)
    gone = wait_for_status(client, bot, 503)
    assert gone.get_json() == {"error": "Database is unavailable, retry later", "code": "SERVICE_UNAVAILABLE"}
    assert not os.path.exists(storage.path)
    os.replace(tmp_path / "backup.db", storage.path)
    assert wait_for_status(client, bot, 200).status_code == 200
    row = storage.get_state(storage.get_bot("b")["id"], ACCOUNT_0, TICKER_AAPL)
    assert row.state_json == '{"v":"probe"}' and row.version == 2  # the backup's version 1, then the probe
    storage.close()
