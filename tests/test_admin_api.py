"""The admin API end to end, over HTTP on a real server (serve.py), on both backends: the admin key, and each
bots endpoint's answers and refusals as docs/admin-api.md words them."""

import datetime

import pytest
from admin_http import (
    ADMIN,
    BAD_NAME,
    FINGERPRINT_RULE,
    GRACE_RULE,
    INVALID,
    KEY_FIELDS,
    NOT_A_CURSOR,
    REQUIRED,
    admin_routes,
    as_bot,
    bad_name,
    refusal,
    registered_rows,
    request,
    rows,
    write_states,
)
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, item

import keys
from admin_api import MAX_ADMIN_BODY_BYTES
from operations import admin_keys
from operations.bots import MAX_GRACE_SECONDS
from schemas import MAX_NAME_LENGTH, MAX_SLUG_LENGTH

# The admin key

PAST_THE_KEY = refusal(400, NOT_A_CURSOR)  # the answer to the request the tests send, once its key is accepted


@pytest.mark.parametrize(
    "authorization,expected",
    (
        pytest.param(None, REQUIRED, id="no header"),
        pytest.param("Basic xxx", REQUIRED, id="basic"),
        pytest.param("Bearer ", REQUIRED, id="bearer with an empty token"),
        pytest.param("{admin}", REQUIRED, id="the admin key without a scheme"),
        pytest.param("Bearer {random}", INVALID, id="a random bsa_ key"),
        pytest.param("Bearer {bot}", INVALID, id="a bot's key"),
        pytest.param("Bearer {revoked}", INVALID, id="a revoked admin key"),
        pytest.param("bearer {admin}", PAST_THE_KEY, id="bearer in lowercase"),
        pytest.param("BEARER   {admin} ", PAST_THE_KEY, id="BEARER and spaces"),
    ),
)
def test_the_authorization_header_is_read_so(live_server, storage, bot, admin_key, authorization, expected):
    revoked = admin_keys.create_admin_key(storage, "leaver")["adminKey"]
    assert request(live_server.url, "GET", ADMIN + "/bots/my-bot", revoked).status_code == 200
    admin_keys.revoke_admin_key(storage, "leaver")  # on the running server: its next request is refused
    tokens = {"admin": admin_key, "random": keys.generate_key(keys.ADMIN_KEY_PREFIX), "bot": bot["apiKey"]}
    headers = {} if authorization is None else {"Authorization": authorization.format(revoked=revoked, **tokens)}
    response = request(live_server.url, "GET", ADMIN + "/bots?cursor=" + "x" * 20, headers=headers)
    assert (response.status_code, response.json()) == expected
    assert response.headers.get("WWW-Authenticate") == ("Bearer" if expected == REQUIRED else None)


@pytest.mark.parametrize(
    "body", (b"{not json", b"[" * (2 * MAX_ADMIN_BODY_BYTES)), ids=("invalid JSON", "twice the limit")
)
@pytest.mark.parametrize("expected", (REQUIRED, INVALID), ids=("no key", "a wrong key"))
def test_every_admin_route_checks_the_key_before_reading_the_body(
    app, live_server, database, bot, registered, expected, body
):
    key = None if expected == REQUIRED else keys.generate_key(keys.ADMIN_KEY_PREFIX)
    routes = list(admin_routes(app))
    for method, path in routes:
        response = request(live_server.url, method, path, key, body=body)
        assert (response.status_code, response.json()) == expected, (method, path)
    assert {method for method, _ in routes} == {"GET", "POST", "DELETE"}
    assert rows(database, "SELECT slug FROM bots") == [("my-bot",)]
    assert len(registered_rows(database, "accounts")) == len(registered_rows(database, "tickers")) == 2


def test_an_admin_key_never_works_on_a_bots_endpoints(live_server, bot, admin_key):
    assert as_bot(live_server.url, "GET", "/api/bots/my-bot/state", admin_key) == (
        403,
        {"message": "Invalid API key for this bot"},
    )
    response = request(live_server.url, "GET", "/api/bots/my-bot/state", admin_key)  # as Bearer: no x-api-key
    assert (response.status_code, response.json()) == (401, {"message": "API key required. Include x-api-key header."})


# Bots and their keys


@pytest.mark.parametrize("name,shown", ((None, "b"), ("", "b"), ("B b", "B b"), ("absent", "b")))
def test_a_created_bot_is_shown_listed_and_its_key_writes(admin, live_server, registered, name, shown):
    status, created = admin("POST", "/bots", {"slug": "b"} if name == "absent" else {"slug": "b", "name": name})
    data = created["data"]
    assert status == 201 and set(data) == {"id", "slug", "name", "createdAt", "apiKey"}
    assert (data["slug"], data["name"]) == ("b", shown) and data["apiKey"].startswith(keys.KEY_PREFIX)
    write_states(live_server.url, "b", data["apiKey"], [(ACCOUNT_0, TICKER_AAPL)])
    bot = {**{k: v for k, v in data.items() if k != "apiKey"}, "states": 1}
    assert admin("GET", "/bots/b") == (200, {"data": bot})
    assert admin("GET", "/bots") == (200, {"data": [bot], "nextCursor": None})


SLUG_RULE = f"use only letters, digits, hyphens and underscores (at most {MAX_SLUG_LENGTH})"


@pytest.mark.parametrize(
    "body,expected",
    (
        pytest.param({"slug": "my-bot"}, (409, "Bot 'my-bot' already exists"), id="taken slug"),
        pytest.param({"slug": "bad slug"}, (400, f"invalid slug 'bad slug': {SLUG_RULE}"), id="bad slug"),
        pytest.param({"slug": "s" * 101}, (400, f"invalid slug {'s' * 100!r}: {SLUG_RULE}"), id="long slug"),
        pytest.param({"slug": ""}, (400, f"invalid slug '': {SLUG_RULE}"), id="empty slug"),
        pytest.param({}, (400, "slug is required and must be a string"), id="no slug"),
        pytest.param({"slug": 5}, (400, "slug must be a string"), id="slug 5"),
        pytest.param({"slug": "b", "name": BAD_NAME}, (400, bad_name(BAD_NAME)), id="bad name"),
        pytest.param({"slug": "b", "name": "n" * (MAX_NAME_LENGTH + 1)}, (400, bad_name("n" * 41)), id="long name"),
        pytest.param([{"slug": "b"}], (400, "Request body must be a JSON object"), id="not an object"),
        pytest.param(b'{"slug": "b"', (400, "Invalid JSON in request body"), id="invalid JSON"),
    ),
)
def test_a_refused_bot_is_not_created(admin, database, bot, body, expected):
    assert admin("POST", "/bots", body) == refusal(*expected)
    assert rows(database, "SELECT slug FROM bots") == [("my-bot",)]


@pytest.mark.parametrize(
    "body,scope,grace",
    (
        ({}, "write", 0),
        ({"graceSeconds": 60}, "write", 60),
        ({"graceSeconds": 60.0}, "write", 60),
        ({"graceSeconds": MAX_GRACE_SECONDS}, "write", MAX_GRACE_SECONDS),
        ({"scope": "read"}, "read", 0),
        ({"scope": "read", "graceSeconds": 60}, "read", 60),
    ),
    ids=("at once", "with grace", "grace as 60.0", "30 days of grace", "read keys", "read keys with grace"),
)
def test_a_rotation_replaces_the_keys_of_its_scope_only(admin, live_server, bot, body, scope, grace):
    _, added = admin("POST", "/bots/my-bot/keys", {"scope": "read"})
    status, rotated = admin("POST", "/bots/my-bot/rotate-key", body)
    data = rotated["data"]
    assert status == 200 and set(data) == {"id", "slug", "name", "apiKey", "scope", "oldKeysExpireAt"}
    assert (data["id"], data["slug"], data["name"], data["scope"]) == (bot["id"], "my-bot", "My bot", scope)
    if grace:
        expires = datetime.datetime.fromisoformat(data["oldKeysExpireAt"]) - datetime.datetime.now(datetime.UTC)
        assert abs(expires.total_seconds() - grace) < 10
    else:
        assert data["oldKeysExpireAt"] is None
    assert as_bot(live_server.url, "GET", "/api/bots/my-bot/state", data["apiKey"])[0] == 200
    for key_scope, key in {"write": bot["apiKey"], "read": added["data"]["apiKey"]}.items():
        status = as_bot(live_server.url, "GET", "/api/bots/my-bot/state", key)[0]
        assert status == (200 if key_scope != scope or grace else 403), key_scope


SCOPE_RULE = "scope must be one of write, read, got '{}'"


@pytest.mark.parametrize(
    "path,body,message",
    (
        pytest.param("rotate-key", {"graceSeconds": -1}, GRACE_RULE, id="negative grace"),
        pytest.param("rotate-key", {"graceSeconds": MAX_GRACE_SECONDS + 1}, GRACE_RULE, id="grace past 30 days"),
        pytest.param("rotate-key", {"graceSeconds": "60"}, GRACE_RULE, id="grace '60'"),
        pytest.param("rotate-key", {"graceSeconds": 1.5}, GRACE_RULE, id="grace 1.5"),
        pytest.param("rotate-key", {"graceSeconds": True}, GRACE_RULE, id="grace true"),
        pytest.param("rotate-key", {"scope": "admin"}, SCOPE_RULE.format("admin"), id="rotate admin"),
        pytest.param("rotate-key", {"scope": 5}, SCOPE_RULE.format("5"), id="rotate 5"),
        pytest.param("rotate-key", b"{", "Invalid JSON in request body", id="rotate invalid JSON"),
        pytest.param("keys", {"scope": "admin"}, SCOPE_RULE.format("admin"), id="add admin"),
        pytest.param("keys", {"scope": 5}, SCOPE_RULE.format("5"), id="add 5"),
        pytest.param("keys", [], "Request body must be a JSON object", id="add with an array"),
    ),
)
def test_a_refused_rotation_or_added_key_changes_no_key(admin, live_server, bot, path, body, message):
    before = admin("GET", "/bots/my-bot/keys")
    assert admin("POST", f"/bots/my-bot/{path}", body) == refusal(400, message)
    assert admin("GET", "/bots/my-bot/keys") == before
    assert as_bot(live_server.url, "GET", "/api/bots/my-bot/state", bot["apiKey"])[0] == 200


@pytest.mark.parametrize("body,scope", (({}, "write"), ({"scope": "write"}, "write"), ({"scope": "read"}, "read")))
def test_an_added_key_works_beside_the_others_with_its_scope(admin, live_server, bot, registered, body, scope):
    [first] = admin("GET", "/bots/my-bot/keys")[1]["data"]
    status, added = admin("POST", "/bots/my-bot/keys", body)
    data = added["data"]
    assert status == 201 and set(data) == {"slug", "apiKey", "createdAt", "lastUsedAt", *KEY_FIELDS}
    assert (data["slug"], data["scope"], data["expiresAt"], data["lastUsedAt"]) == ("my-bot", scope, None, None)
    listed = admin("GET", "/bots/my-bot/keys")[1]["data"]  # newest first
    assert [[key[k] for k in KEY_FIELDS] for key in listed] == [[key[k] for k in KEY_FIELDS] for key in (data, first)]
    url, states = live_server.url, {"states": [item()]}
    assert as_bot(url, "GET", "/api/bots/my-bot/state", data["apiKey"])[0] == 200
    status, written = as_bot(url, "POST", "/api/bots/my-bot/state", data["apiKey"], states)
    assert (status, written) == ((403, {"message": "This API key is read-only"}) if scope == "read" else (200, written))
    assert as_bot(url, "POST", "/api/bots/my-bot/state", bot["apiKey"], states)[0] == 200


@pytest.mark.parametrize(
    "body,stopped",
    (({}, {"old"}), ({"all": True}, {"old", "new", "read"}), ({"fingerprint": "{read}"}, {"read"})),
    ids=("end the grace period", "all", "one fingerprint"),
)
def test_revoking_stops_the_keys_it_names(admin, live_server, bot, body, stopped):
    _, added = admin("POST", "/bots/my-bot/keys", {"scope": "read"})
    _, rotated = admin("POST", "/bots/my-bot/rotate-key", {"graceSeconds": 600})
    listed = [key["fingerprint"] for key in admin("GET", "/bots/my-bot/keys")[1]["data"]]
    read = added["data"]["fingerprint"]
    [old] = [key["fingerprint"] for key in admin("GET", "/bots/my-bot/keys")[1]["data"] if key["expiresAt"]]
    [new] = set(listed) - {old, read}
    fingerprints = {"old": old, "new": new, "read": read}
    api_keys = {"old": bot["apiKey"], "new": rotated["data"]["apiKey"], "read": added["data"]["apiKey"]}
    sent = {k: v.format(read=read) if isinstance(v, str) else v for k, v in body.items()}
    assert admin("POST", "/bots/my-bot/revoke-key", sent) == (
        200,
        {"data": {"slug": "my-bot", "revoked": len(stopped)}},
    )
    for name, key in api_keys.items():
        status = as_bot(live_server.url, "GET", "/api/bots/my-bot/state", key)[0]
        assert status == (403 if name in stopped else 200), name
    left = [key["fingerprint"] for key in admin("GET", "/bots/my-bot/keys")[1]["data"]]
    assert left == [f for f in listed if f not in {fingerprints[name] for name in stopped}]


NOT_BOTH = "name one key by its fingerprint, or every key: not both"
NO_KEY = "Bot 'my-bot' has no working key with fingerprint"


@pytest.mark.parametrize(
    "body,expected",
    (
        pytest.param({"all": True, "fingerprint": "0123456789ab"}, (400, NOT_BOTH), id="both"),
        pytest.param({"fingerprint": "0123456789AB"}, (400, FINGERPRINT_RULE), id="uppercase fingerprint"),
        pytest.param({"fingerprint": "0123456789a"}, (400, FINGERPRINT_RULE), id="short fingerprint"),
        pytest.param({"fingerprint": "0123456789ab"}, (404, f"{NO_KEY} 0123456789ab"), id="unknown"),
        pytest.param({"fingerprint": 5}, (400, FINGERPRINT_RULE), id="fingerprint 5"),
        pytest.param({"all": "yes"}, (400, "all must be true or false"), id="all not a boolean"),
    ),
)
def test_a_refused_revocation_stops_no_key(admin, live_server, bot, body, expected):
    before = admin("GET", "/bots/my-bot/keys")
    assert admin("POST", "/bots/my-bot/revoke-key", body) == refusal(*expected)
    assert admin("GET", "/bots/my-bot/keys") == before
    assert as_bot(live_server.url, "GET", "/api/bots/my-bot/state", bot["apiKey"])[0] == 200


def test_deleting_a_bot_deletes_it_and_every_state_it_stored(admin, live_server, database, bot, registered):
    pairs = [(ACCOUNT_0, TICKER_AAPL), (ACCOUNT_1, TICKER_MSFT)]
    write_states(live_server.url, "my-bot", bot["apiKey"], pairs)
    assert admin("DELETE", "/bots/my-bot") == (
        200,
        {"data": {"id": bot["id"], "slug": "my-bot", "deletedStates": len(pairs)}},
    )
    assert admin("GET", "/bots/my-bot") == refusal(404, "Bot 'my-bot' not found")
    assert admin("DELETE", "/bots/my-bot") == refusal(404, "Bot 'my-bot' not found")
    assert rows(database, "SELECT id FROM user_bot_states WHERE bot_id = ?", (bot["id"],)) == []
    assert rows(database, "SELECT bot_id FROM bot_keys WHERE bot_id = ?", (bot["id"],)) == []
    assert as_bot(live_server.url, "GET", "/api/bots/my-bot/state", bot["apiKey"])[0] == 404


@pytest.mark.parametrize(
    "slug", ("nope", "bad!slug", "s" * (MAX_SLUG_LENGTH + 1)), ids=("no such bot", "not a slug", "long")
)
def test_every_slug_route_answers_404_for_a_bot_that_does_not_exist(app, admin, database, bot, slug):
    routes = [(method, path.removeprefix(ADMIN)) for method, path in admin_routes(app) if "/bots/my-bot" in path]
    assert {method for method, _ in routes} == {"GET", "POST", "DELETE"}
    for method, path in routes:
        answer = admin(method, path.replace("my-bot", slug), {} if method == "POST" else None)
        assert answer == refusal(404, f"Bot {slug[:MAX_SLUG_LENGTH]!r} not found"), (method, path)
    assert rows(database, "SELECT slug FROM bots") == [("my-bot",)]


# Registering accounts and tickers
