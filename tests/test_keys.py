"""Key rotation with a grace period, revocation, and each key's last use, against a real server."""

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

import keys
from conftest import ROOT, start_server, stop_server
from spec_data import ACCOUNT_0, TICKER_AAPL, item

LATER, EARLIER = time.time() + 3600, time.time() - 1


@pytest.mark.parametrize(
    "bot_keys,works",
    (
        ((("a" * 64, None),), True),
        ((("a" * 64, LATER),), True),
        ((("a" * 64, EARLIER),), False),
        ((("b" * 64, None),), False),
        ((), False),
        ((("b" * 64, None), ("a" * 64, LATER)), True),
        ((("a" * 64, EARLIER), ("b" * 64, None)), False),
    ),
    ids=("no expiry", "in its grace period", "expired", "another key", "no keys", "second of two", "expired of two"),
)
def test_a_key_works_while_it_is_one_of_the_bots_and_not_expired(bot_keys, works):
    assert keys.works("a" * 64, bot_keys) is works


def flask_cli(database, *args):
    """Run the real `flask ARGS --json` on `database`; its JSON answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTSTATE_", "FLASK_"))}
    env["BOTSTATE_DATABASE"] = str(database)
    completed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", *args, "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def expire_old_keys(database):
    """End every grace period now, as if its time had passed."""
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("UPDATE bot_keys SET expires_at = '2000-01-01T00:00:00.000Z' WHERE expires_at IS NOT NULL")


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


def test_rotation_with_grace_then_revocation_on_a_running_server(live_server, storage, bot, registered):
    database = storage.path
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
    """fingerprint -> lastUsedAt of each working key of my-bot, as `flask bots keys` shows them."""
    return {k["fingerprint"]: k["lastUsedAt"] for k in flask_cli(database, "bots", "keys", "my-bot")}


def test_each_key_records_its_last_use(tmp_path, storage, bot, registered):
    database = storage.path
    unused_key = flask_cli(database, "bots", "rotate-key", "my-bot", "--grace", "3600")["apiKey"]
    used, unused = bot["keyHash"][:12], keys.hash_key(unused_key)[:12]
    process, base_url, _ = start_server(database)
    try:
        assert statuses(base_url, bot["apiKey"])[0] == 200
        # The server stores last uses every few seconds, not per request.
        deadline = time.monotonic() + 30
        while last_uses(database)[used] is None and time.monotonic() < deadline:
            time.sleep(0.5)
        first_use = last_uses(database)[used]
        assert first_use is not None
        assert statuses(base_url, bot["apiKey"])[0] == 200
    finally:
        stop_server(process)  # stopping stores what is left
    after = last_uses(database)
    assert after[used] > first_use
    assert after[unused] is None
