"""The admin API end to end, over HTTP on a real server (serve.py), on both backends: bulk registration of accounts
and tickers, paging, cascading deletes, the rate limit, the log and the metrics."""

import collections
import itertools
import json
import math
import re
import uuid

import pytest
import requests
from admin_http import (
    ADMIN,
    BAD_NAME,
    EXCEEDED,
    LIST_KEYS,
    NOT_A_CURSOR,
    OTHER,
    REGISTERED,
    TIMEOUT,
    as_bot,
    bad_name,
    refusal,
    registered_rows,
    request,
    rows,
    write_states,
)
from conftest import start_server, stop_server
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN

import keys
from admin_api import MAX_ADMIN_BODY_BYTES
from operations import admin_keys
from operations.catalog import MAX_REGISTER
from schemas import MAX_PAGE_SIZE
from symbols import SYMBOL_RULE

# Each item and its outcome: True (created), False (registered already, unchanged) or the CONFLICT's message.
REGISTRATIONS = {
    "accounts": [
        ({"id": ACCOUNT_0, "name": "alice"}, True),
        ({"id": ACCOUNT_0, "name": "alice"}, False),
        ({"id": ACCOUNT_0}, False),
        ({"id": ACCOUNT_0, "name": "carol"}, f"Account {ACCOUNT_0} already exists with another name"),
        ({"id": ACCOUNT_1.upper()}, True),
        ({"id": ACCOUNT_1, "name": "bob"}, f"Account {ACCOUNT_1} already exists with another name"),
        ({"name": "dave"}, True),
    ],
    "tickers": [
        ({"symbol": "AAPL", "id": TICKER_AAPL}, True),
        ({"symbol": "MSFT"}, True),
        ({"symbol": "AAPL", "id": OTHER}, f"Ticker 'AAPL' already exists with id {TICKER_AAPL}"),
        ({"symbol": "GOOG", "id": TICKER_AAPL}, f"Ticker id {TICKER_AAPL} already belongs to 'AAPL'"),
        ({"symbol": "AAPL"}, False),
        ({"symbol": "AAPL", "id": TICKER_AAPL.upper()}, False),
        ({"symbol": "aapl", "id": OTHER}, True),
    ],
}


@pytest.mark.parametrize("kind", REGISTRATIONS)
def test_registering_answers_each_item_in_order_and_stores_the_successes(admin, database, kind):
    items = REGISTRATIONS[kind]
    status, answer = admin("POST", f"/{kind}", {kind: [sent for sent, _ in items]})
    failed = sum(isinstance(outcome, str) for _, outcome in items)
    assert (status, answer["success"]) == (200, True)
    assert answer["summary"] == {"total": len(items), "succeeded": len(items) - failed, "failed": failed}
    for index, ((sent, outcome), result) in enumerate(zip(items, answer["results"], strict=True)):
        if isinstance(outcome, str):
            assert result == {"status": "error", "index": index, "error": outcome, "code": "CONFLICT"}
        else:
            assert (result["status"], result["index"], result["created"]) == ("success", index, outcome)
            assert set(result["data"]) == {*REGISTERED[kind], "createdAt"}
            assert result["data"]["id"] == sent.get("id", result["data"]["id"]).lower()
    stored = {tuple(r["data"][k] for k in REGISTERED[kind]) for r in answer["results"] if r["status"] == "success"}
    assert registered_rows(database, kind) == stored
    again = [dict(zip(REGISTERED[kind], row, strict=True)) for row in sorted(stored, key=str)]
    status, repeated = admin("POST", f"/{kind}", {kind: again})
    assert status == 200 and [r["created"] for r in repeated["results"]] == [False] * len(again)
    assert registered_rows(database, kind) == stored


@pytest.mark.parametrize("kind", REGISTRATIONS)
def test_a_registration_holds_up_to_the_most_items_and_one_more_is_refused_whole(admin, database, kind):
    too_many = [{"name": f"user {n}"} if kind == "accounts" else {"symbol": f"T{n}"} for n in range(MAX_REGISTER + 1)]
    refused = refusal(400, f"{kind} array cannot contain more than {MAX_REGISTER} items")
    assert admin("POST", f"/{kind}", {kind: too_many}) == refused
    assert registered_rows(database, kind) == set()
    status, answer = admin("POST", f"/{kind}", {kind: too_many[:MAX_REGISTER]})
    assert (status, answer["summary"]) == (200, {"total": MAX_REGISTER, "succeeded": MAX_REGISTER, "failed": 0})
    assert len(registered_rows(database, kind)) == MAX_REGISTER


A, T = {"name": "a"}, {"symbol": "A"}  # a valid item before the one refused
SYMBOL_REQUIRED, NAME_1 = f"tickers[1].symbol is required: {SYMBOL_RULE}", "accounts[1].name"


@pytest.mark.parametrize(
    "kind,body,message",
    (
        pytest.param("accounts", {}, "accounts is required and must be an array", id="no accounts"),
        pytest.param("accounts", {"accounts": A}, "accounts must be an array", id="not an array"),
        pytest.param("accounts", {"accounts": []}, "accounts array cannot be empty", id="empty"),
        pytest.param("accounts", {"accounts": [A, "b"]}, "accounts[1] must be an object", id="not an object"),
        pytest.param("accounts", {"accounts": [A, {"id": "nope"}]}, "accounts[1].id must be a valid UUID", id="bad id"),
        pytest.param("accounts", {"accounts": [A, {"id": 5}]}, "accounts[1].id must be a valid UUID", id="id 5"),
        pytest.param("accounts", {"accounts": [A, {"name": BAD_NAME}]}, bad_name(BAD_NAME, NAME_1), id="bad name"),
        pytest.param("accounts", {"accounts": [A, {"name": "n" * 201}]}, bad_name("n" * 41, NAME_1), id="long name"),
        pytest.param("tickers", {"tickers": [T, {}]}, SYMBOL_REQUIRED, id="no symbol"),
        pytest.param("tickers", {"tickers": [T, {"symbol": "A B"}]}, SYMBOL_REQUIRED, id="symbol with a space"),
        pytest.param("tickers", {"tickers": [T, {"symbol": "A,B"}]}, SYMBOL_REQUIRED, id="symbol with a comma"),
        pytest.param(
            "tickers", {"tickers": [T, {"symbol": "B", "id": "x"}]}, "tickers[1].id must be a valid UUID", id="id"
        ),
        pytest.param("tickers", [T], "Request body must be a JSON object", id="body an array"),
        pytest.param("tickers", b'{"tickers": [{"symbol": "A"}]', "Invalid JSON in request body", id="invalid JSON"),
    ),
)
def test_a_body_that_does_not_validate_is_refused_whole(admin, database, kind, body, message):
    assert admin("POST", f"/{kind}", body) == refusal(400, message)
    assert registered_rows(database, kind) == set()


@pytest.mark.parametrize("extra,expected", ((0, 200), (1, 413)), ids=("at the limit", "past it"))
@pytest.mark.parametrize("chunked", (False, True), ids=("with length", "chunked"))
def test_an_admin_body_is_at_most_its_limit(live_server, admin_key, database, extra, expected, chunked):
    empty = json.dumps({"accounts": [{"name": "a"}], "padding": ""}).encode()
    body = empty.replace(b'""', b'"' + b"x" * (MAX_ADMIN_BODY_BYTES - len(empty) + extra) + b'"')
    assert len(body) == MAX_ADMIN_BODY_BYTES + extra
    response = request(live_server.url, "POST", ADMIN + "/accounts", admin_key, body=iter([body]) if chunked else body)
    assert response.status_code == expected
    if extra:
        assert response.json() == {
            "error": f"Request body exceeds {MAX_ADMIN_BODY_BYTES} bytes",
            "code": "PAYLOAD_TOO_LARGE",
        }
    assert len(registered_rows(database, "accounts")) == (0 if extra else 1)


# Lists


def fill_lists(storage):
    """Bots, accounts and tickers whose keys sort apart by case and punctuation: each list's keys."""
    made = {"bots": ["b-1", "B_2", "a", "Z", "_x", "m9", "0", "a-"], "accounts": [str(uuid.uuid4()) for _ in range(7)]}
    made["tickers"] = ["AAPL", "aapl", "BRK.B", "BRK-B", "Z", "0", "_", "Ä"]
    for slug in made["bots"]:
        storage.create_bot(slug, slug, keys.hash_key(keys.generate_key()))
    for account in made["accounts"]:
        storage.add_account(account, None)
    for symbol in made["tickers"]:
        storage.add_ticker(symbol, str(uuid.uuid4()))
    return made


def walk(admin, kind, limit):
    """Every page of the list `kind`, `limit` rows a page, following nextCursor until it is null."""
    pages, cursor = [], None
    while cursor is not None or not pages:
        status, page = admin("GET", f"/{kind}?limit={limit}" + ("" if cursor is None else f"&cursor={cursor}"))
        assert status == 200, page
        pages.append(page["data"])
        cursor = page["nextCursor"]
    return pages


@pytest.mark.parametrize("kind", LIST_KEYS)
def test_a_list_pages_through_every_row_once_in_order(admin, storage, kind):
    made = fill_lists(storage)[kind]
    status, whole = admin("GET", f"/{kind}?limit={MAX_PAGE_SIZE}")
    assert (status, whole["nextCursor"]) == (200, None)
    assert [row[LIST_KEYS[kind]] for row in whole["data"]] == sorted(made)
    assert admin("GET", f"/{kind}")[1] == whole  # the default page holds them all
    for limit in (1, 3, len(made) - 1, len(made), len(made) + 1):
        pages = walk(admin, kind, limit)
        assert len(pages) == math.ceil(len(made) / limit), limit
        assert all(len(page) == limit for page in pages[:-1]), limit
        assert [row for page in pages for row in page] == whole["data"], limit


def test_a_cursor_of_one_list_is_refused_by_every_other(admin, storage):
    fill_lists(storage)
    cursors = {kind: admin("GET", f"/{kind}?limit=1")[1]["nextCursor"] for kind in LIST_KEYS}
    for given, taker in itertools.permutations(LIST_KEYS, 2):
        assert admin("GET", f"/{taker}?cursor={cursors[given]}") == refusal(400, NOT_A_CURSOR), (given, taker)
    for kind, cursor in cursors.items():
        tampered = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
        for bad in (tampered, "abc", "x" * 300, cursor + "A"):
            assert admin("GET", f"/{kind}?cursor={bad}") == refusal(400, NOT_A_CURSOR), (kind, bad)
        assert admin("GET", f"/{kind}?cursor={cursor}&limit=1")[0] == 200


@pytest.mark.parametrize(
    "query,message",
    (
        *(
            (f"limit={limit}", f"limit must be an integer from 1 to {MAX_PAGE_SIZE}")
            for limit in ("0", "1001", "x", "1.5")
        ),
        ("symbol=A%20B", f"symbol must be {SYMBOL_RULE}"),
    ),
)
def test_a_list_query_out_of_range_is_refused(admin, query, message):
    for kind in LIST_KEYS if query.startswith("limit") else ("tickers",):
        assert admin("GET", f"/{kind}?{query}") == refusal(400, message), kind


@pytest.mark.parametrize("symbol,found", (("AAPL", ["AAPL"]), ("aapl", ["aapl"]), ("GOOG", []), ("BRK.B", ["BRK.B"])))
def test_a_symbol_filter_gives_that_ticker_or_none(admin, storage, symbol, found):
    fill_lists(storage)
    status, page = admin("GET", f"/tickers?symbol={symbol}&limit=1")
    assert (status, [row["symbol"] for row in page["data"]], page["nextCursor"]) == (200, found, None)


# Deleting accounts and tickers


@pytest.mark.parametrize(
    "kind,deleted,column,noun",
    (("accounts", ACCOUNT_0, "user_broker_account_id", "Account"), ("tickers", TICKER_AAPL, "ticker_id", "Ticker")),
    ids=("account", "ticker"),
)
def test_deleting_an_account_or_ticker_deletes_every_bots_states_of_it_in_their_feeds(
    admin, live_server, database, bot, registered, kind, deleted, column, noun
):
    _, other = admin("POST", "/bots", {"slug": "other"})
    url, api_keys = live_server.url, {"my-bot": bot["apiKey"], "other": other["data"]["apiKey"]}
    write_states(url, "my-bot", bot["apiKey"], itertools.product((ACCOUNT_0, ACCOUNT_1), (TICKER_AAPL, TICKER_MSFT)))
    write_states(url, "other", api_keys["other"], [(ACCOUNT_0, TICKER_AAPL), (ACCOUNT_1, TICKER_MSFT)])
    after = {
        slug: as_bot(url, "GET", f"/api/bots/{slug}/changes", key)[1]["nextAfter"] for slug, key in api_keys.items()
    }
    states = "SELECT b.slug, s.user_broker_account_id, s.ticker_id, s.version FROM user_bot_states s JOIN bots b"
    states += " ON b.id = s.bot_id"
    before = set(rows(database, states))
    going = set(rows(database, states + f" WHERE s.{column} = ?", (deleted,)))
    [shown] = [r for r in admin("GET", f"/{kind}")[1]["data"] if r["id"] == deleted]
    assert admin("DELETE", f"/{kind}/{deleted}") == (200, {"data": {**shown, "deletedStates": len(going)}})
    assert set(rows(database, states)) == before - going
    assert deleted not in {r["id"] for r in admin("GET", f"/{kind}")[1]["data"]}
    for slug, key in api_keys.items():
        changes = as_bot(url, "GET", f"/api/bots/{slug}/changes?after={after[slug]}", key)[1]["data"]
        seen = [(c["op"], c["accountId"], c["tickerId"], str(c["version"])) for c in changes]
        assert sorted(seen) == sorted(("delete", *row[1:]) for row in going if row[0] == slug), slug
    assert admin("DELETE", f"/{kind}/{deleted}") == refusal(404, f"{noun} {deleted} not found")


@pytest.mark.parametrize("kind,noun", (("accounts", "Account"), ("tickers", "Ticker")))
@pytest.mark.parametrize(
    "given,expected",
    (
        ("nope", (400, "id must be a valid UUID")),
        ("123", (400, "id must be a valid UUID")),
        (TICKER_UNKNOWN.upper(), (404, "{noun} {id} not found")),
    ),
    ids=("not a uuid", "a number", "unknown, in capitals"),
)
def test_deleting_an_id_that_is_not_registered_is_refused(admin, database, registered, kind, noun, given, expected):
    before = registered_rows(database, kind)
    assert admin("DELETE", f"/{kind}/{given}") == refusal(expected[0], expected[1].format(noun=noun, id=given.lower()))
    assert registered_rows(database, kind) == before


# The rate limit, the log and the metrics


def test_each_admin_key_has_a_budget_of_its_own_apart_from_every_bots(database, storage, bot):
    first, second = (admin_keys.create_admin_key(storage, name)["adminKey"] for name in ("first", "second"))
    process, url, _ = start_server(database, RATE_LIMIT="3/minute")
    try:
        strangers = [request(url, "GET", ADMIN + "/bots", key).status_code for key in (None, bot["apiKey"]) * 3]
        firsts = [request(url, "GET", ADMIN + "/bots", first).status_code for _ in range(3)]
        refused = request(url, "POST", ADMIN + "/bots", first, body={"slug": "late"})
        seconds = [request(url, "GET", ADMIN + "/bots/my-bot", second).status_code for _ in range(4)]
        bots = [as_bot(url, "GET", "/api/bots/my-bot/state", bot["apiKey"])[0] for _ in range(4)]
    finally:
        stop_server(process)
    assert strangers == [401, 403] * 3  # without a working admin key, no budget is used
    assert (firsts, refused.status_code, refused.json()) == ([200] * 3, 429, EXCEEDED)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (seconds, bots) == ([200, 200, 200, 429], [200, 200, 200, 429])
    assert rows(database, "SELECT slug FROM bots") == [("my-bot",)]


def sample(text, name, **labels):
    """The value of one sample of the metrics exposition, or None."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    return None if match is None else float(match.group(1))


def logged_requests(log, log_format):
    """(method, path, status, admin key name or None) of each admin request line of a server's log."""
    if log_format == "json":
        entries = [json.loads(line) for line in log.splitlines()]
        return [(e["method"], e["path"], e["status"], e.get("admin")) for e in entries if ADMIN in e.get("path", "")]
    found = re.findall(r" INFO (\w+) (/api/admin/\S*) (\d{3}) [\d.]+ms(?: admin=(\S+))?$", log, re.M)
    return [(method, path, int(status), name or None) for method, path, status, name in found]


@pytest.mark.parametrize("log_format", ("text", "json"))
def test_metrics_count_admin_routes_and_the_log_names_the_admin_key_never_a_key(database, bot, admin_key, log_format):
    sent = [  # (method, path, admin key, body, status, route)
        ("GET", "/bots/my-bot", admin_key, None, 200, "/bots/<slug>"),
        ("GET", "/bots/nope", admin_key, None, 404, "/bots/<slug>"),
        ("GET", "/bots/my-bot", None, None, 401, "/bots/<slug>"),
        ("GET", "/bots/my-bot", bot["apiKey"], None, 403, "/bots/<slug>"),
        ("POST", "/bots", admin_key, {"slug": "made"}, 201, "/bots"),
        ("POST", "/bots/made/keys", admin_key, {"scope": "read"}, 201, "/bots/<slug>/keys"),
        ("POST", "/bots/made/rotate-key", admin_key, {}, 200, "/bots/<slug>/rotate-key"),
        ("POST", "/accounts", admin_key, {"accounts": [{"id": ACCOUNT_0}]}, 200, "/accounts"),
        ("DELETE", f"/accounts/{ACCOUNT_0}", admin_key, None, 200, "/accounts/<account_id>"),
    ]
    process, url, log_path = start_server(database, METRICS=1, LOG_FORMAT=log_format)
    try:
        answers = [request(url, method, ADMIN + path, key, body=body) for method, path, key, body, _, _ in sent]
        metrics = requests.get(f"{url}/metrics", timeout=TIMEOUT).text
    finally:
        stop_server(process)
    assert [answer.status_code for answer in answers] == [row[4] for row in sent]
    for (method, route, status), count in collections.Counter((r[0], r[5], r[4]) for r in sent).items():
        labels = {"method": method, "route": ADMIN + route, "status": str(status)}
        assert sample(metrics, "botstate_requests_total", **labels) == count, labels
    made_keys = [answer.json()["data"]["apiKey"] for answer in answers if "apiKey" in answer.json().get("data", ())]
    log = log_path.read_text()
    for secret in (admin_key, bot["apiKey"], *made_keys):
        assert secret not in metrics and secret not in log
    assert made_keys and "made" not in metrics and ACCOUNT_0 not in metrics
    assert logged_requests(log, log_format) == [
        (method, ADMIN + path, status, "platform" if key == admin_key else None)
        for method, path, key, _, status, _ in sent
    ]
