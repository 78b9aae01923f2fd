"""The plaintext API key is nowhere: not in the database file, its WAL, or the server's log."""

import requests
from conftest import stored_bytes
from spec_data import ACCOUNT_0, TICKER_AAPL, item

from keys import generate_key, hash_key


def test_no_plaintext_key_in_the_database_wal_or_log(live_server, database, storage, bot, registered):
    first_key, wrong_key, second_key = bot["apiKey"], generate_key(), generate_key()
    url = f"{live_server.url}/api/bots/my-bot/state"
    row = f"{url}/{ACCOUNT_0}/{TICKER_AAPL}"
    for key in (first_key, wrong_key):  # a right key and a wrong one, each on every endpoint
        assert requests.post(url, json={"states": [item()]}, headers={"x-api-key": key}).status_code in (200, 403)
        requests.patch(url, json={"states": [item()]}, headers={"x-api-key": key})
        requests.get(row, headers={"x-api-key": key})
        requests.get(url, headers={"x-api-key": key})
        requests.post(f"{live_server.url}/api/bots/no-such-bot/state", json={}, headers={"x-api-key": key})
    storage.replace_bot_key("my-bot", hash_key(second_key))
    assert requests.post(url, json={"states": [item()]}, headers={"x-api-key": first_key}).status_code == 403
    assert requests.post(url, json={"states": [item()]}, headers={"x-api-key": second_key}).status_code == 200
    requests.delete(row, headers={"x-api-key": second_key})
    stored = stored_bytes(database)
    log = live_server.log_path.read_bytes()
    assert b"POST /api/bots/my-bot/state 200" in log  # the log is the server's, and has its lines
    assert hash_key(second_key).encode() in stored  # the files are the database's, and searchable
    for key in (first_key, wrong_key, second_key):
        assert key.encode() not in stored
        assert key.encode() not in log
        assert key[4:].encode() not in stored + log  # not even without its prefix
