"""Read keys over HTTP on a real server (serve.py), on both backends: they read what a write key reads, their
writes get the read-only 403 only after the spec's checks and store nothing, rotation and revocation act on
one scope or one key at once, the CLI shows scopes, and the keys of a database made before scopes write."""

import pytest
import requests
import sqlite_utils
from conftest import execute_sql, start_server, stop_server
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN, item
from test_cli import cli, json_output

import idempotency
import keys
from backends.sqlite import SQLiteStorage
from backends.sqlite_schema import migrations
from operations import bots as operations
from records import KEY_FINGERPRINT_LENGTH, READ_SCOPE, WRITE_SCOPE
from schemas import INVALID_SLUG

TIMEOUT = 30
STATE = "/api/bots/my-bot/state"
ROW = f"{STATE}/{ACCOUNT_0}/{TICKER_AAPL}"
READ_ONLY = (403, {"message": "This API key is read-only"})
INVALID_KEY = (403, {"message": "Invalid API key for this bot"})
KEY_REQUIRED = (401, {"message": "API key required. Include x-api-key header."})
SCOPES_MIGRATION = "0009_admin_keys_and_key_scopes"


def bad_request(message):
    return 400, {"error": message, "code": "BAD_REQUEST"}


def send(url, method, path, api_key=None, body=None, **headers):
    """One request with `api_key` as x-api-key and `body` as JSON (bytes: as they are); the response."""
    if api_key is not None:
        headers["x-api-key"] = api_key
    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    return requests.request(method, url + path, headers=headers, timeout=TIMEOUT, **sent)


def call(url, method, path, api_key=None, body=None, **headers):
    """(status, JSON body) of send(...)."""
    response = send(url, method, path, api_key, body, **headers)
    return response.status_code, response.json()


def write(url, api_key, pairs, method="POST"):
    """Store a state for each (account, ticker) with a write key; the results' data."""
    status, answer = call(url, method, STATE, api_key, {"states": [item(*pair) for pair in pairs]})
    assert (status, answer["summary"]["failed"]) == (200, 0), answer
    return [result["data"] for result in answer["results"]]


def everything(database):
    """Every stored state, change-log entry and kept answer, read with the backend's own driver."""
    states = "SELECT CAST(id AS TEXT), version, CAST(state AS TEXT), CAST(updated_at AS TEXT) FROM user_bot_states"
    return (
        sorted(execute_sql(database, states)),
        execute_sql(database, "SELECT count(*), max(seq) FROM state_changes"),
        execute_sql(database, "SELECT count(*) FROM idempotent_requests"),
    )


def stored_keys(database):
    """fingerprint -> scope of every key the database holds, the fingerprint read off its stored hash."""
    return {
        h[:KEY_FINGERPRINT_LENGTH]: scope for h, scope in execute_sql(database, "SELECT key_hash, scope FROM bot_keys")
    }


@pytest.fixture
def read_key(storage, bot):
    """A read key of the bot, as operations.bots.add_key makes it: {apiKey, fingerprint}."""
    added = operations.add_key(storage, "my-bot", READ_SCOPE)
    assert added["scope"] == READ_SCOPE
    return {"apiKey": added["apiKey"], "fingerprint": added["fingerprint"]}


@pytest.fixture
def url(live_server, registered):
    return live_server.url


# What a read key reads

READS = (
    pytest.param(ROW, id="one row"),
    pytest.param(ROW + "?asOf={first}", id="one row as of its first write"),
    pytest.param(STATE, id="list"),
    pytest.param(f"{STATE}?accountId={ACCOUNT_1}&limit=1", id="a filtered page"),
    pytest.param("/api/bots/my-bot/changes", id="changes"),
    pytest.param("/api/bots/my-bot/changes?after=1&limit=1", id="changes after 1"),
    pytest.param(ROW + "/history", id="history"),
    pytest.param(ROW + "/history?limit=1", id="a page of history"),
    pytest.param("/api/bots/my-bot/tickers", id="tickers"),
    pytest.param("/api/bots/my-bot/tickers?symbol=AAPL", id="a ticker by symbol"),
    pytest.param("/api/bots/my-bot/accounts?limit=1", id="accounts"),
)


@pytest.mark.parametrize("path", READS)
def test_a_read_key_reads_what_a_write_key_reads(url, bot, read_key, path):
    """Every GET with a read key answers 200 with the write key's body and ETag."""
    [first, _] = write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL), (ACCOUNT_1, TICKER_MSFT)])
    write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL)], method="PATCH")
    path = path.format(first=first["updatedAt"])
    as_writer, as_reader = (send(url, "GET", path, key) for key in (bot["apiKey"], read_key["apiKey"]))
    assert as_reader.status_code == 200, as_reader.text
    assert as_reader.json() == as_writer.json() and as_reader.headers.get("ETag") == as_writer.headers.get("ETag")
    assert as_reader.json()["data"], "a read of nothing would show nothing"


# What a read key may not write: each row's request, valid as far as the spec is concerned, and the write key's status.
WRITES = (
    pytest.param("POST", STATE, {"states": [item(ACCOUNT_1, TICKER_MSFT)]}, {}, 200, id="POST a new row"),
    pytest.param("POST", STATE, {"states": [item(), item(ACCOUNT_1)]}, {}, 200, id="POST over a stored row"),
    pytest.param("PATCH", STATE, {"states": [item(state={"merged": 1})]}, {}, 200, id="PATCH a stored row"),
    pytest.param("POST", STATE, {"states": [item(ticker=TICKER_UNKNOWN)]}, {}, 200, id="POST an item that fails"),
    pytest.param("POST", STATE, {"states": [{**item(), "expectedVersion": 5}]}, {}, 200, id="POST a conflict"),
    pytest.param("DELETE", ROW, None, {}, 200, id="DELETE a stored row"),
    pytest.param("DELETE", ROW, None, {"If-Match": '"1"'}, 200, id="DELETE with a matching If-Match"),
    pytest.param("DELETE", ROW, None, {"If-Match": '"7"'}, 412, id="DELETE with another If-Match"),
    pytest.param("DELETE", f"{STATE}/{ACCOUNT_1}/{TICKER_MSFT}", None, {}, 404, id="DELETE a row not stored"),
)


@pytest.mark.parametrize("method,path,body,headers,as_writer", WRITES)
def test_a_write_with_a_read_key_is_refused_and_stores_nothing(
    url, database, bot, read_key, method, path, body, headers, as_writer
):
    """POST, PATCH and DELETE with a read key get the read-only 403; no row, version, change or answer is kept."""
    write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL)])
    before = everything(database)
    assert call(url, method, path, read_key["apiKey"], body, **headers) == READ_ONLY
    assert everything(database) == before
    assert send(url, method, path, bot["apiKey"], body, **headers).status_code == as_writer  # the spec's answer


# Each row's request fails the checks of every row from its own on: a check answers only once the earlier pass.
BOT_NOT_FOUND, INVALID = "the unknown bot's 404", "the method's 400"
ORDER = (
    pytest.param("bad.slug", None, False, bad_request(INVALID_SLUG), id="an invalid slug"),
    pytest.param("my-bot", None, False, KEY_REQUIRED, id="no key"),
    pytest.param("no-such-bot", "read", False, BOT_NOT_FOUND, id="an unknown bot"),
    pytest.param("my-bot", "random", False, INVALID_KEY, id="a wrong key"),
    pytest.param("my-bot", "another bot's", False, INVALID_KEY, id="another bot's key"),
    pytest.param("my-bot", "read", False, INVALID, id="an invalid body or path"),
    pytest.param("my-bot", "read", True, READ_ONLY, id="a valid request"),
)
# Per method: the path and body of a valid request, those of an invalid one, and its 400's message.
REQUESTS = {
    "POST": ((STATE, {"states": [item()]}), (STATE, {"states": []}), "states array cannot be empty"),
    "PATCH": ((STATE, {"states": [item()]}), (STATE, b"{not json"), "Invalid JSON in request body"),
    "DELETE": ((ROW, None), (f"{STATE}/{ACCOUNT_0}/AAPL", None), "tickerId must be a valid UUID"),
}


@pytest.mark.parametrize("method", REQUESTS)
@pytest.mark.parametrize("slug,key,valid,expected", ORDER)
def test_the_specs_checks_come_before_the_read_only_403(
    url, database, storage, bot, read_key, method, slug, key, valid, expected
):
    """Invalid slug 400, missing key 401, unknown bot 404, wrong key 403, bad body or path 400, then read-only 403."""
    write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL)])
    other = keys.generate_key()
    storage.create_bot("other-bot", "Other", keys.hash_key(other))
    api_key = {"read": read_key["apiKey"], "random": keys.generate_key(), "another bot's": other}.get(key)
    (good_path, good_body), (bad_path, bad_body), message = REQUESTS[method]
    path, body = (good_path, good_body) if valid else (bad_path, bad_body)
    if expected == BOT_NOT_FOUND:
        expected = (404, {"error": f"Bot with slug '{slug}' not found", "code": "NOT_FOUND"})
    elif expected == INVALID:
        expected = bad_request(message)
    before = everything(database)
    assert call(url, method, path.replace("/my-bot/", f"/{slug}/"), api_key, body) == expected
    assert everything(database) == before


def test_a_read_key_with_an_idempotency_key_is_refused_and_nothing_is_kept(url, database, storage, bot, read_key):
    """A read key's write with an Idempotency-Key gets 403 and keeps no answer, also for a key answered before."""
    body, header = {"states": [item()]}, {idempotency.HEADER: "order-1"}
    assert call(url, "POST", STATE, read_key["apiKey"], body, **header) == READ_ONLY
    assert storage.count_answers() == 0 and storage.count_states() == 0
    first = send(url, "POST", STATE, bot["apiKey"], body, **header)
    assert first.status_code == 200 and idempotency.REPLAYED_HEADER not in first.headers  # nothing was kept for it
    kept = everything(database)
    assert call(url, "POST", STATE, read_key["apiKey"], body, **header) == READ_ONLY  # not the write key's answer
    assert everything(database) == kept and storage.count_answers() == 1


# Stopping keys on a running server

# Every endpoint and method, valid and not: (method, path, body), and what a working read key gets.
EVERY_REQUEST = (
    pytest.param(("GET", ROW, None), 200, id="GET one row"),
    pytest.param(("GET", STATE, None), 200, id="list"),
    pytest.param(("GET", "/api/bots/my-bot/changes", None), 200, id="changes"),
    pytest.param(("GET", ROW + "/history", None), 200, id="history"),
    pytest.param(("GET", "/api/bots/my-bot/tickers?symbol=AAPL", None), 200, id="tickers"),
    pytest.param(("GET", "/api/bots/my-bot/accounts", None), 200, id="accounts"),
    pytest.param(("POST", STATE, {"states": [item()]}), READ_ONLY[0], id="POST"),
    pytest.param(("PATCH", STATE, {"states": [item()]}), READ_ONLY[0], id="PATCH"),
    pytest.param(("DELETE", ROW, None), READ_ONLY[0], id="DELETE"),
    pytest.param(("GET", STATE + "?limit=0", None), 400, id="list with a bad limit"),
    pytest.param(("GET", "/api/bots/my-bot/tickers?symbol=", None), 400, id="tickers with a bad symbol"),
    pytest.param(("POST", STATE, {"states": []}), 400, id="POST with a bad body"),
    pytest.param(("DELETE", f"{STATE}/{ACCOUNT_0}/AAPL", None), 400, id="DELETE with a bad path"),
)


def stop_by_rotation(runner, storage, read_key):
    operations.rotate_key(storage, "my-bot", scope=READ_SCOPE)


def stop_with_the_cli(runner, storage, read_key):
    assert json_output(cli(runner, "bots", "revoke-key", "my-bot", "--key", read_key["fingerprint"], "--json")) == {
        "slug": "my-bot",
        "revoked": 1,
    }


def stop_in_storage(runner, storage, read_key):
    assert storage.revoke_bot_keys("my-bot", fingerprint=read_key["fingerprint"]) == 1


def stop_every_key(runner, storage, read_key):
    every = len(storage.list_bot_keys("my-bot"))
    assert json_output(cli(runner, "bots", "revoke-key", "my-bot", "--all", "--json"))["revoked"] == every


STOPS = (
    pytest.param(stop_by_rotation, True, id="read key rotated away"),
    pytest.param(stop_with_the_cli, True, id="bots revoke-key --key"),
    pytest.param(stop_in_storage, True, id="revoked by fingerprint in storage"),
    pytest.param(stop_every_key, False, id="bots revoke-key --all"),
)


@pytest.mark.parametrize("stop,write_key_works", STOPS)
def test_a_stopped_read_key_gets_403_at_once_on_a_running_server(
    url, runner, storage, bot, read_key, stop, write_key_works
):
    """Once rotated away or revoked, a read key remembered by the server gets Invalid API key everywhere."""
    write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL)])
    for request, working in (param.values for param in EVERY_REQUEST):  # the server remembers the key
        assert send(url, *request[:2], read_key["apiKey"], request[2]).status_code == working, request
    stop(runner, storage, read_key)
    for request, _ in (param.values for param in EVERY_REQUEST):
        assert call(url, *request[:2], read_key["apiKey"], request[2]) == INVALID_KEY, request
    status, _ = call(url, "GET", ROW, bot["apiKey"])
    assert status == (200 if write_key_works else INVALID_KEY[0])
    assert read_key["fingerprint"] not in {key["fingerprint"] for key in storage.list_bot_keys("my-bot")}


@pytest.mark.parametrize("stop", (stop_by_rotation, stop_in_storage), ids=("rotated away", "revoked"))
@pytest.mark.parametrize("request_sent,working", EVERY_REQUEST)
def test_the_first_request_after_a_read_key_stops_gets_403(
    url, runner, storage, bot, read_key, stop, request_sent, working
):
    """Whatever a stopped read key sends first, while the server still remembers it working, gets Invalid API key."""
    write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL)])
    assert send(url, *request_sent[:2], read_key["apiKey"], request_sent[2]).status_code == working
    stop(runner, storage, read_key)
    assert call(url, *request_sent[:2], read_key["apiKey"], request_sent[2]) == INVALID_KEY


@pytest.mark.parametrize("scope", (WRITE_SCOPE, READ_SCOPE))
def test_a_rotation_of_one_scope_leaves_the_other_scopes_keys_working(url, runner, bot, read_key, scope):
    """`bots rotate-key --scope S` stops the old keys of S only; the new key has scope S."""
    write(url, bot["apiKey"], [(ACCOUNT_0, TICKER_AAPL)])
    old = {WRITE_SCOPE: bot["apiKey"], READ_SCOPE: read_key["apiKey"]}
    rotated = json_output(cli(runner, "bots", "rotate-key", "my-bot", "--scope", scope, "--json"))
    assert (rotated["scope"], rotated["oldKeysExpireAt"]) == (scope, None)
    body = {"states": [item(state={"by": "new key"})]}
    assert call(url, "GET", ROW, old[scope]) == INVALID_KEY
    other_scope = READ_SCOPE if scope == WRITE_SCOPE else WRITE_SCOPE
    for api_key, key_scope in ((old[other_scope], other_scope), (rotated["apiKey"], scope)):
        assert send(url, "GET", ROW, api_key).status_code == 200, key_scope
        status, answer = call(url, "POST", STATE, api_key, body)
        if key_scope == READ_SCOPE:
            assert (status, answer) == READ_ONLY
        else:
            assert (status, answer["results"][0]["data"]["state"]) == (200, {"by": "new key"})


def may_write(url, api_key):
    """Whether a write with `api_key` is stored (True) or refused as read-only (False)."""
    status, answer = call(url, "POST", STATE, api_key, {"states": [item()]})
    assert (status, answer) == READ_ONLY or (status, answer["summary"]["failed"]) == (200, 0), answer
    return status == 200


@pytest.mark.parametrize("scope", (WRITE_SCOPE, READ_SCOPE))
def test_an_old_key_in_its_grace_period_keeps_its_scope_until_revoke_key_stops_it(
    url, runner, storage, bot, read_key, scope
):
    """During a rotation's grace an old key does what its scope allows; `bots revoke-key` stops it, and only it."""
    old = {WRITE_SCOPE: bot["apiKey"], READ_SCOPE: read_key["apiKey"]}
    fingerprints = {key["scope"]: key["fingerprint"] for key in storage.list_bot_keys("my-bot")}
    rotated = json_output(cli(runner, "bots", "rotate-key", "my-bot", "--scope", scope, "--grace", "600", "--json"))
    assert rotated["oldKeysExpireAt"] is not None
    working = {**old, "new": rotated["apiKey"]}
    assert {name: may_write(url, api_key) for name, api_key in working.items()} == {
        WRITE_SCOPE: True,
        READ_SCOPE: False,
        "new": scope == WRITE_SCOPE,
    }
    in_grace = [key["fingerprint"] for key in storage.list_bot_keys("my-bot") if key["expiresAt"] is not None]
    assert in_grace == [fingerprints[scope]]
    assert json_output(cli(runner, "bots", "revoke-key", "my-bot", "--json"))["revoked"] == len(in_grace)
    assert call(url, "GET", ROW, old[scope]) == INVALID_KEY
    for name in {*working} - {scope}:
        assert send(url, "GET", ROW, working[name]).status_code == 200, name


# The CLI


@pytest.mark.parametrize(
    "args,scope", (([], WRITE_SCOPE), (["--scope", "write"], WRITE_SCOPE), (["--scope", "read"], READ_SCOPE))
)
def test_bots_add_key_prints_the_key_and_bots_keys_shows_each_scope(url, runner, database, bot, args, scope):
    """`bots add-key --json` prints apiKey, fingerprint and scope; `bots keys` shows every key's scope."""
    [first] = stored_keys(database)
    assert send(url, "GET", STATE, bot["apiKey"]).status_code == 200  # the server remembers the bot's keys
    added = json_output(cli(runner, "bots", "add-key", "my-bot", *args, "--json"))
    assert added["slug"] == "my-bot" and added["scope"] == scope and added["apiKey"].startswith(keys.KEY_PREFIX)
    assert stored_keys(database) == {first: WRITE_SCOPE, added["fingerprint"]: scope}
    listed = json_output(cli(runner, "bots", "keys", "my-bot", "--json"))
    assert {key["fingerprint"]: key["scope"] for key in listed} == stored_keys(database)
    assert [key for key in listed if key["fingerprint"] == added["fingerprint"]] == [
        {name: added[name] for name in ("fingerprint", "scope", "createdAt", "expiresAt", "lastUsedAt")}
    ]
    text = cli(runner, "bots", "keys", "my-bot").stdout
    assert f"{added['fingerprint']}\t{scope}\t" in text and f"{first}\t{WRITE_SCOPE}\t" in text
    status = send(url, "POST", STATE, added["apiKey"], {"states": [item()]}).status_code
    assert status == (200 if scope == WRITE_SCOPE else READ_ONLY[0])


# A database made before scopes


def test_the_keys_of_a_database_made_before_scopes_are_write_keys(tmp_path):
    """After the upgrade to key scopes, a key stored before it reads, writes and deletes, and is listed as write."""
    path = str(tmp_path / "old.db")
    assert SCOPES_MIGRATION in [migration.name for migration in migrations._migrations]
    old, api_key = sqlite_utils.Database(path), keys.generate_key()
    migrations.apply(old, stop_before=SCOPES_MIGRATION)
    old.execute(
        "INSERT INTO bots (id, slug, name, created_at) VALUES ('b', 'my-bot', 'Old', '2026-01-01T00:00:00.000Z')"
    )
    old.execute(
        "INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES ('b', ?, '2026-01-01T00:00:00.000Z')",
        [keys.hash_key(api_key)],
    )
    old.execute("INSERT INTO accounts VALUES (?, 'acct', '2026-01-01T00:00:00.000Z')", [ACCOUNT_0])
    old.execute("INSERT INTO tickers VALUES (?, 'AAPL', '2026-01-01T00:00:00.000Z')", [TICKER_AAPL])
    old.conn.close()
    process, url, _ = start_server(path)  # the server's start upgrades the database
    try:
        [written] = write(url, api_key, [(ACCOUNT_0, TICKER_AAPL)])
        assert call(url, "GET", ROW, api_key) == (200, {"data": written})
        assert call(url, "DELETE", ROW, api_key) == (200, {"data": written})
    finally:
        stop_server(process)
    assert execute_sql({"DATABASE": path}, "SELECT scope FROM bot_keys") == [(WRITE_SCOPE,)]
    storage = SQLiteStorage(path)
    try:
        assert SCOPES_MIGRATION in storage.schema_version()
        assert [key["scope"] for key in storage.list_bot_keys("my-bot")] == [WRITE_SCOPE]
    finally:
        storage.close()
