"""Key rotation with a grace period, revocation, and each key's last use, against a real server."""

import hashlib
import inspect
import json
import sqlite3
import time

import pytest
import requests
from conftest import botstate_env, execute_sql, holding_write_lock, run_python, start_server, stop_server
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, item

import keys
import storage as storage_interface
from storage import Credentials, DatabaseBusy, IdempotentWrite, StaleKey, StateWrite, open_storage

LATER, EARLIER = time.monotonic() + 3600, time.monotonic() - 1


WRITE_HASH, READ_HASH = keys.hash_key("k"), keys.hash_key("k", "read")


@pytest.mark.parametrize(
    "bot_keys,match",
    (
        (((WRITE_HASH, None, "write"),), (WRITE_HASH, "write")),
        (((READ_HASH, None, "read"),), (READ_HASH, "read")),
        (((WRITE_HASH, LATER, "write"),), (WRITE_HASH, "write")),
        (((WRITE_HASH, EARLIER, "write"),), None),
        ((("b" * 64, None, "write"),), None),
        ((), None),
        ((("b" * 64, None, "write"), (READ_HASH, LATER, "read")), (READ_HASH, "read")),
        (((WRITE_HASH, EARLIER, "write"), ("b" * 64, None, "write")), None),
        # A hash stored under the other scope's derivation is no key: a read key's never works as a write key's.
        (((WRITE_HASH, None, "read"),), None),
        (((READ_HASH, None, "write"),), None),
    ),
    ids=(
        "no expiry",
        "a read key",
        "in its grace period",
        "expired",
        "another key",
        "no keys",
        "second of two",
        "expired of two",
        "a write key's hash as a read key",
        "a read key's hash as a write key",
    ),
)
def test_a_key_works_with_its_scope_while_it_is_one_of_the_bots_and_not_expired(bot_keys, match):
    assert keys.matching(keys.hashes_of("k"), bot_keys) == match


def test_a_read_keys_stored_hash_is_not_the_sha256_an_older_server_matches():
    """A server from before scopes takes a key whose stored hash is the SHA-256 of the key: never a read key."""
    key = keys.generate_key()
    assert keys.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert keys.hash_key(key, "read") not in (hashlib.sha256(key.encode()).hexdigest(), keys.hash_key(key))


def flask_cli(database, *args):
    """Run the real `botstate ARGS --json` on `database`; its JSON answer."""
    env = {k: v for k, v in botstate_env(**database).items() if not k.startswith("FLASK_")}
    completed = run_python(["-m", "botstate", *args, "--json"], env)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def expire_old_keys(database):
    """End every grace period now, as if its time had passed."""
    execute_sql(database, "UPDATE bot_keys SET expires_at = '2000-01-01T00:00:00.000Z' WHERE expires_at IS NOT NULL")


# Every storage call that takes the key a request authenticated with, and so checks it in SQL.
KEY_CHECKED_CALLS = {
    "replace one": lambda s, bot, key: s.write_states(
        Credentials(bot, key), [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}")]
    ),
    "merge one": lambda s, bot, key: s.write_states(
        Credentials(bot, key), [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}")], merge=True
    ),
    "replace many": lambda s, bot, key: s.write_states(
        Credentials(bot, key), [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}"), StateWrite(ACCOUNT_1, TICKER_AAPL, "{}")]
    ),
    "merge many": lambda s, bot, key: s.write_states(
        Credentials(bot, key),
        [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}"), StateWrite(ACCOUNT_1, TICKER_AAPL, "{}")],
        merge=True,
    ),
    "replace with versions": lambda s, bot, key: s.write_states(
        Credentials(bot, key),
        [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}", 1), StateWrite(ACCOUNT_1, TICKER_AAPL, "{}", 1)],
    ),
    "replace one with an Idempotency-Key": lambda s, bot, key: s.write_states(
        Credentials(bot, key),
        [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}")],
        idempotent=IdempotentWrite("k", b"digest", lambda outcomes: b"answer"),
    ),
    "find an Idempotency-Key's answer": lambda s, bot, key: s.find_answer(Credentials(bot, key), "k"),
    "read one": lambda s, bot, key: s.read_state(Credentials(bot, key), ACCOUNT_0, TICKER_AAPL),
    "list": lambda s, bot, key: s.list_states(None, 10, credentials=Credentials(bot, key)),
    "list empty": lambda s, bot, key: s.list_states(None, 10, account_id=ACCOUNT_1, credentials=Credentials(bot, key)),
    "delete": lambda s, bot, key: s.delete_state(Credentials(bot, key), ACCOUNT_0, TICKER_AAPL),
    "changes": lambda s, bot, key: s.list_changes(Credentials(bot, key), 0, 10),
    "changes, none new": lambda s, bot, key: s.list_changes(Credentials(bot, key), 1, 10),
    "history": lambda s, bot, key: s.state_history(None, ACCOUNT_0, TICKER_AAPL, 10, credentials=Credentials(bot, key)),
    "as of": lambda s, bot, key: s.state_as_of(
        Credentials(bot, key), ACCOUNT_0, TICKER_AAPL, "2999-01-01T00:00:00.000Z"
    ),
    "the catalog's accounts": lambda s, bot, key: s.page_accounts(10, credentials=Credentials(bot, key)),
    "the catalog's tickers": lambda s, bot, key: s.page_tickers(10, symbol="AAPL", credentials=Credentials(bot, key)),
}


@pytest.mark.parametrize("call", KEY_CHECKED_CALLS.values(), ids=KEY_CHECKED_CALLS.keys())
def test_every_key_check_refuses_a_key_past_its_grace(database, storage, bot, registered, call):
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [StateWrite(ACCOUNT_0, TICKER_AAPL, '{"v":1}')])
    storage.replace_bot_key("my-bot", keys.hash_key(keys.generate_key()), grace_seconds=3600)
    call(storage, bot["id"], bot["keyHash"])  # in its grace period: works
    expire_old_keys(database)
    before = storage.list_states(bot["id"], 100)
    with pytest.raises(StaleKey):
        call(storage, bot["id"], bot["keyHash"])
    assert storage.list_states(bot["id"], 100) == before


def test_every_storage_method_that_acts_for_a_bot_is_in_the_key_checks():
    acting = {
        name
        for name, method in inspect.getmembers(storage_interface.Storage, inspect.isfunction)
        if "credentials" in inspect.signature(method).parameters
    }
    checked = {
        name for name in acting if any(f"s.{name}(" in inspect.getsource(call) for call in KEY_CHECKED_CALLS.values())
    }
    assert acting and checked == acting


def test_every_bot_route_is_a_bot_endpoint(app):
    # The decorator checks the slug, key, remembered login and rate limit: a route without it would skip them.
    bot_rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/bots/<slug>")]
    assert bot_rules
    for rule in bot_rules:
        assert getattr(app.view_functions[rule.endpoint], "bot_endpoint", False), rule.rule


def stored_last_use(database, key_hash):
    [(used,)] = execute_sql(database, "SELECT last_used_at FROM bot_keys WHERE key_hash = ?", [key_hash])
    return used


def test_a_last_use_that_cannot_be_stored_is_kept_for_the_next_flush(database, storage, bot):
    storage.record_key_use(bot["id"], bot["keyHash"])
    with holding_write_lock(database), pytest.raises(DatabaseBusy):
        storage.flush_key_uses()
    assert stored_last_use(database, bot["keyHash"]) is None
    storage.flush_key_uses()
    assert stored_last_use(database, bot["keyHash"]) is not None


def test_a_flush_never_moves_a_last_use_back(app, database, storage, bot):
    # Two server processes on one database each store the last use they saw; the latest wins.
    other_process = open_storage(app.config)
    try:
        storage.record_key_use(bot["id"], bot["keyHash"])
        time.sleep(0.002)  # timestamps have millisecond resolution
        other_process.record_key_use(bot["id"], bot["keyHash"])
        other_process.flush_key_uses()
        latest = stored_last_use(database, bot["keyHash"])
        storage.flush_key_uses()
        assert stored_last_use(database, bot["keyHash"]) == latest
    finally:
        other_process.close()


def statuses(base_url, api_key):
    """The status of POST, PATCH, GET row, GET list and DELETE row with `api_key`."""
    url = f"{base_url}/api/bots/my-bot/state"
    row = f"{url}/{ACCOUNT_0}/{TICKER_AAPL}"
    headers = {"x-api-key": api_key}
    return [
        requests.post(url, json={"states": [item()]}, headers=headers, timeout=30).status_code,
        requests.patch(url, json={"states": [item()]}, headers=headers, timeout=30).status_code,
        requests.get(row, headers=headers, timeout=30).status_code,
        requests.get(url, headers=headers, timeout=30).status_code,
        requests.delete(row, headers=headers, timeout=30).status_code,
    ]


WORKS, REFUSED = [200] * 5, [403] * 5


def test_rotation_with_grace_then_revocation_on_a_running_server(live_server, database, bot, registered):
    assert statuses(live_server.url, bot["apiKey"]) == WORKS  # the server now remembers the old key
    new_key = flask_cli(database, "bots", "rotate-key", "my-bot", "--grace", "3600")["apiKey"]
    assert statuses(live_server.url, bot["apiKey"]) == WORKS
    assert statuses(live_server.url, new_key) == WORKS
    expire_old_keys(database)
    assert statuses(live_server.url, bot["apiKey"]) == REFUSED
    assert statuses(live_server.url, new_key) == WORKS

    newest_key = flask_cli(database, "bots", "rotate-key", "my-bot", "--grace", "3600")["apiKey"]
    assert statuses(live_server.url, new_key) == WORKS
    assert flask_cli(database, "bots", "revoke-key", "my-bot")["revoked"] == 1
    assert statuses(live_server.url, new_key) == REFUSED
    assert statuses(live_server.url, newest_key) == WORKS
    assert flask_cli(database, "bots", "revoke-key", "my-bot", "--all")["revoked"] == 1
    assert statuses(live_server.url, newest_key) == REFUSED


def last_uses(database):
    """fingerprint -> lastUsedAt of each working key of my-bot, as `botstate bots keys` shows them."""
    return {k["fingerprint"]: k["lastUsedAt"] for k in flask_cli(database, "bots", "keys", "my-bot")}


def test_each_key_records_its_last_use(database, bot, registered):
    unused_key = flask_cli(database, "bots", "rotate-key", "my-bot", "--grace", "3600")["apiKey"]
    used, unused = bot["keyHash"][:12], keys.hash_key(unused_key)[:12]
    process, base_url, _ = start_server(database)
    try:
        assert statuses(base_url, bot["apiKey"])[0] == 200
        # The server stores last uses every few seconds, not per request: watch the row (a `flask`
        # process per look would cost more than the wait), then read it as the CLI shows it.
        deadline = time.monotonic() + 30
        while stored_last_use(database, bot["keyHash"]) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first_use = last_uses(database)[used]
        assert first_use is not None
        assert statuses(base_url, bot["apiKey"])[0] == 200
    finally:
        stop_server(process)  # stopping stores what is left
    after = last_uses(database)
    assert after[used] > first_use
    assert after[unused] is None


def test_the_upkeep_thread_stores_key_uses_on_its_interval(storage, database, bot, monkeypatch):
    monkeypatch.setattr("backends.keyuses.KEY_USE_FLUSH_INTERVAL", 0.01)
    storage.start_upkeep()
    storage.record_key_use(bot["id"], bot["keyHash"])
    deadline = time.monotonic() + 10
    while stored_last_use(database, bot["keyHash"]) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stored_last_use(database, bot["keyHash"]) is not None


@pytest.mark.sqlite_only("SQLite's checkpoint thread")
def test_the_checkpoint_thread_outlives_a_failing_flush_and_keeps_the_use(database, storage, bot, monkeypatch):
    # Regression: an SQLite error other than busy or unavailable (here a missing
    # table) ended the thread, and with it checkpoints and the watch on the file.
    monkeypatch.setattr("backends.keyuses.KEY_USE_FLUSH_INTERVAL", 0)
    raw = sqlite3.connect(storage.path, isolation_level=None)
    try:
        storage.start_checkpoints(interval=0.01)
        raw.execute("ALTER TABLE bot_keys RENAME TO bot_keys_away")
        storage.record_key_use(bot["id"], bot["keyHash"])
        time.sleep(0.2)  # some flushes fail meanwhile
        assert storage._checkpointer.is_alive()
        raw.execute("ALTER TABLE bot_keys_away RENAME TO bot_keys")
        deadline = time.monotonic() + 10
        while stored_last_use(database, bot["keyHash"]) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stored_last_use(database, bot["keyHash"]) is not None
    finally:
        raw.close()


def test_a_wrong_key_costs_the_same_work_whether_or_not_the_slug_exists(client, storage, bot, registered, monkeypatch):
    # Timing is not asserted (shared machines); the work is: the same hashes and one read each,
    # so a wrong key for a real bot is not cheaper or dearer than any key for no bot.
    work = []
    hash_key, find = keys.hash_key, storage.find_bot_credentials
    monkeypatch.setattr(keys, "hash_key", lambda key, *scope: work.append("hash") or hash_key(key, *scope))
    monkeypatch.setattr(storage, "find_bot_credentials", lambda slug: work.append("read") or find(slug))
    url = "/api/bots/{}/state"
    assert client.get(url.format("my-bot"), headers={"x-api-key": bot["apiKey"]}).status_code == 200  # remembered now
    costs = {}
    for case, slug in (("wrong key", "my-bot"), ("unknown slug", "no-such-bot")):
        work.clear()
        response = client.get(url.format(slug), headers={"x-api-key": keys.generate_key()})
        costs[case] = (response.status_code, work.copy())
    hashes = ["hash"] * len(keys.KEY_SCOPES)  # one per scope
    assert costs == {"wrong key": (403, [*hashes, "read"]), "unknown slug": (404, [*hashes, "read"])}


@pytest.mark.parametrize(
    "write",
    (
        lambda s, credentials: s.write_states(credentials, [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}")]),
        lambda s, credentials: s.write_states(
            credentials, [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}"), StateWrite(ACCOUNT_1, TICKER_AAPL, "{}")]
        ),
        lambda s, credentials: s.write_states(credentials, [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}")], merge=True),
        lambda s, credentials: s.delete_state(credentials, ACCOUNT_0, TICKER_AAPL),
    ),
    ids=("replace one", "replace many", "merge one", "delete"),
)
def test_storage_writes_only_with_a_write_key_whatever_the_caller_remembered(storage, bot, registered, write):
    """A server that remembered a key as a write key, which is now a read key, still cannot write with it."""
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [StateWrite(ACCOUNT_0, TICKER_AAPL, '{"v":1}')])
    read_key = keys.generate_key()
    storage.add_bot_key("my-bot", keys.hash_key(read_key, "read"), "read")
    claimed = Credentials(bot["id"], keys.hash_key(read_key, "read"), "write")
    before = storage.list_states(bot["id"], 100)
    with pytest.raises(StaleKey):
        write(storage, claimed)
    assert storage.list_states(bot["id"], 100) == before
    assert storage.read_state(claimed, ACCOUNT_0, TICKER_AAPL).state_json == '{"v":1}'  # it reads
