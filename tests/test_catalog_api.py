"""The catalog a bot reads, over HTTP on a real server (serve.py), on both backends: GET /api/bots/:slug/tickers
(one symbol's, or a page by symbol) and /accounts (a page by id), their 400s as docs/api.md words them, the
spec's 401, 404 and 403 first, keys rotated away mid-walk, cursors of other lists, and the OpenAPI document."""

import uuid

import pytest
import requests
from conftest import BACKEND_INDEPENDENT
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, item

import keys
from operations import admin_keys
from operations import bots as operations
from schemas import CURSOR_INVALID, INVALID_SLUG, LIMIT_INVALID, MAX_PAGE_SIZE
from symbols import MAX_SYMBOL_LENGTH, SYMBOL_RULE

TIMEOUT = 30
BOT = "/api/bots/my-bot"
KINDS = ("tickers", "accounts")
# What each list is ordered by, and the fields of its rows as docs/api.md lists them.
ORDER_KEY = {"tickers": "symbol", "accounts": "id"}
FIELDS = {"tickers": ["id", "symbol", "createdAt"], "accounts": ["id", "name", "createdAt"]}
# Symbols that sort differently by case, by code point and as numbers.
SYMBOLS = ("AAPL", "aapl", "BRK.B", "MSFT", "T1", "T10", "T2", "Z", "ÄPFEL", "€URO", "7203.T", "A" * MAX_SYMBOL_LENGTH)
INVALID_KEY = (403, {"message": "Invalid API key for this bot"})


def bad_request(message):
    return 400, {"error": message, "code": "BAD_REQUEST"}


def call(url, path, api_key=None, **params):
    """GET `path` with `api_key` as x-api-key and `params` as its query: (status, JSON body)."""
    headers = {} if api_key is None else {"x-api-key": api_key}
    response = requests.get(url + path, headers=headers, params=params, timeout=TIMEOUT)
    return response.status_code, response.json()


def walk(url, kind, api_key, cursor=None, **params):
    """Every page of the list `kind` from `cursor` (None: the first), to the one whose nextCursor is null."""
    pages = []
    while True:
        status, page = call(url, f"{BOT}/{kind}", api_key, **params, **({} if cursor is None else {"cursor": cursor}))
        assert status == 200, page
        pages.append(page)
        cursor = page["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < len(SYMBOLS), "more pages than rows: the walk does not end"


@pytest.fixture
def catalog(storage):
    """Registered tickers (SYMBOLS) and accounts: each list's rows as storage lists them, in no promised order."""
    for symbol in SYMBOLS:
        storage.add_ticker(symbol, TICKER_AAPL if symbol == "AAPL" else str(uuid.uuid4()))
    for index in range(len(SYMBOLS)):
        storage.add_account(ACCOUNT_0 if index == 0 else str(uuid.uuid4()), f"account {index}")
    return {"tickers": storage.list_tickers(), "accounts": storage.list_accounts()}


@pytest.fixture
def url(live_server):
    return live_server.url


# One symbol


@pytest.mark.parametrize(
    "symbol,found",
    (
        pytest.param("AAPL", "AAPL", id="AAPL"),
        pytest.param("aapl", "aapl", id="another case is another symbol"),
        pytest.param("BRK.B", "BRK.B", id="with a dot"),
        pytest.param("ÄPFEL", "ÄPFEL", id="not ASCII"),
        pytest.param("A" * MAX_SYMBOL_LENGTH, "A" * MAX_SYMBOL_LENGTH, id="the longest"),
        pytest.param("GOOG", None, id="not registered"),
        pytest.param("AAP", None, id="a prefix"),
        pytest.param("AAP_", None, id="a LIKE wildcard"),
        pytest.param("AAP%", None, id="a LIKE percent"),
        pytest.param("Aapl", None, id="a case registered in none"),
    ),
)
@pytest.mark.parametrize("limit", ({}, {"limit": "1"}), ids=("default limit", "limit 1"))
def test_a_symbol_gives_exactly_its_ticker_or_nothing(url, bot, catalog, symbol, found, limit):
    """?symbol=S answers 200 with the one ticker registered as S (exact and case-sensitive), or []."""
    status, page = call(url, f"{BOT}/tickers", bot["apiKey"], symbol=symbol, **limit)
    expected = [row for row in catalog["tickers"] if row["symbol"] == found]
    assert (status, page) == (200, {"data": expected, "nextCursor": None})
    assert [list(row) for row in page["data"]] == [FIELDS["tickers"]] * len(expected)


def test_aapl_resolves_to_the_id_the_spec_writes_with(url, bot, registered):
    """The spec's AAPL, resolved by symbol, is the ticker id its examples write states with."""
    status, page = call(url, f"{BOT}/tickers", bot["apiKey"], symbol="AAPL")
    assert status == 200 and [row["id"] for row in page["data"]] == [TICKER_AAPL]


def test_a_ticker_registered_while_the_server_runs_is_found_at_once(url, storage, bot):
    """A symbol looked up before its ticker is registered gives [], and right after it that ticker."""
    assert call(url, f"{BOT}/tickers", bot["apiKey"], symbol="NEW") == (200, {"data": [], "nextCursor": None})
    storage.add_ticker("NEW", TICKER_AAPL)
    [registered] = [row for row in storage.list_tickers() if row["symbol"] == "NEW"]
    assert call(url, f"{BOT}/tickers", bot["apiKey"], symbol="NEW") == (200, {"data": [registered], "nextCursor": None})


# Paging


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "limit",
    (1, 2, 5, len(SYMBOLS) - 1, len(SYMBOLS), len(SYMBOLS) + 1, MAX_PAGE_SIZE, None),
    ids=("1", "2", "5", "all but one", "all", "all and one", "the largest", "default"),
)
def test_paging_gives_each_row_once_in_order(url, bot, catalog, kind, limit):
    """Pages of `limit` give every row once, in symbol or id order, full but the last, then a null nextCursor."""
    params = {} if limit is None else {"limit": str(limit)}
    pages = walk(url, kind, bot["apiKey"], **params)
    rows = [row for page in pages for row in page["data"]]
    assert rows == sorted(catalog[kind], key=lambda row: row[ORDER_KEY[kind]])
    size = limit or len(rows)
    assert [len(page["data"]) for page in pages[:-1]] == [size] * (len(pages) - 1)
    assert 0 < len(pages[-1]["data"]) <= size or rows == []
    assert all(list(row) == FIELDS[kind] for row in rows)


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_catalog_is_one_empty_page(url, bot, kind):
    """With nothing registered, a list is [] with a null nextCursor."""
    assert call(url, f"{BOT}/{kind}", bot["apiKey"]) == (200, {"data": [], "nextCursor": None})


# Refused queries

LIMIT = bad_request("limit " + LIMIT_INVALID.format(min=1, max=MAX_PAGE_SIZE))
CURSOR = bad_request(f"cursor {CURSOR_INVALID}")
SYMBOL = bad_request(f"symbol must be {SYMBOL_RULE}")
REFUSED = (
    pytest.param({"limit": "0"}, LIMIT, id="limit 0"),
    pytest.param({"limit": str(MAX_PAGE_SIZE + 1)}, LIMIT, id="limit past the largest"),
    pytest.param({"limit": ""}, LIMIT, id="empty limit"),
    pytest.param({"limit": "abc"}, LIMIT, id="limit not a number"),
    pytest.param({"limit": "+5"}, LIMIT, id="limit with a sign"),
    pytest.param({"limit": "05"}, LIMIT, id="limit with a leading zero"),
    pytest.param({"limit": "-1"}, LIMIT, id="negative limit"),
    pytest.param({"cursor": "xyz"}, CURSOR, id="cursor too short"),
    pytest.param({"cursor": "A" * 60}, CURSOR, id="cursor made up"),
    pytest.param({"cursor": ""}, CURSOR, id="empty cursor"),
)
SYMBOL_REFUSED = (
    pytest.param({"symbol": ""}, SYMBOL, id="empty symbol"),
    pytest.param({"symbol": "A B"}, SYMBOL, id="symbol with a space"),
    pytest.param({"symbol": "A" * (MAX_SYMBOL_LENGTH + 1)}, SYMBOL, id="symbol too long"),
    pytest.param({"symbol": "A,B"}, SYMBOL, id="symbol with a comma"),
    pytest.param({"symbol": "A\tB"}, SYMBOL, id="symbol with a tab"),
    pytest.param({"symbol": "A\u200bB"}, SYMBOL, id="symbol with a zero-width space"),
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("params,expected", REFUSED)
def test_an_invalid_limit_or_cursor_gets_400(url, bot, catalog, kind, params, expected):
    """limit and cursor are read strictly, with the documented messages."""
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], **params) == expected


@pytest.mark.parametrize("params,expected", SYMBOL_REFUSED)
def test_an_invalid_symbol_gets_400(url, bot, catalog, params, expected):
    """symbol must be a symbol a ticker could be registered with."""
    assert call(url, f"{BOT}/tickers", bot["apiKey"], **params) == expected


@pytest.mark.parametrize("source,target", (("accounts", "tickers"), ("tickers", "accounts")))
def test_a_cursor_of_another_list_gets_400(url, bot, catalog, source, target):
    """A nextCursor of /accounts is refused by /tickers, and the other way round."""
    status, page = call(url, f"{BOT}/{source}", bot["apiKey"], limit="1")
    assert status == 200 and page["nextCursor"] is not None
    assert call(url, f"{BOT}/{target}", bot["apiKey"], cursor=page["nextCursor"]) == CURSOR


@pytest.mark.parametrize("kind", KINDS)
def test_a_cursor_of_the_admin_bots_list_gets_400(url, storage, bot, catalog, kind):
    """A nextCursor of /api/admin/bots, whose slug could be a symbol, is refused by either list."""
    storage.create_bot("other-bot", "Other", keys.hash_key(keys.generate_key()))
    admin_key = admin_keys.create_admin_key(storage, "platform")["adminKey"]
    response = requests.get(
        f"{url}/api/admin/bots",
        params={"limit": "1"},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200 and response.json()["nextCursor"] is not None
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], cursor=response.json()["nextCursor"]) == CURSOR


@pytest.mark.parametrize("kind", KINDS)
def test_a_cursor_of_the_state_list_gets_400(url, bot, registered, kind):
    """The state list's nextCursor is not a catalog cursor."""
    items = [item(), item(ACCOUNT_1, TICKER_MSFT)]
    response = requests.post(
        f"{url}{BOT}/state", json={"states": items}, headers={"x-api-key": bot["apiKey"]}, timeout=TIMEOUT
    )
    assert response.status_code == 200 and response.json()["summary"]["failed"] == 0
    status, page = call(url, f"{BOT}/state", bot["apiKey"], limit="1")
    assert status == 200 and page["nextCursor"] is not None
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], cursor=page["nextCursor"]) == CURSOR


# The spec's answers first

# Each row's request fails the checks of every row from its own on (the query too): the first check answers.
AUTH = (
    pytest.param("bad.slug", None, bad_request(INVALID_SLUG), id="an invalid slug"),
    pytest.param("my-bot", None, (401, {"message": "API key required. Include x-api-key header."}), id="no key"),
    pytest.param("my-bot", "", (401, {"message": "API key required. Include x-api-key header."}), id="an empty key"),
    pytest.param(
        "no-such-bot",
        "{mine}",
        (404, {"error": "Bot with slug 'no-such-bot' not found", "code": "NOT_FOUND"}),
        id="404",
    ),
    pytest.param("my-bot", "{random}", INVALID_KEY, id="a wrong key"),
    pytest.param("my-bot", "{other}", INVALID_KEY, id="another bot's key"),
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slug,api_key,expected", AUTH)
def test_the_specs_auth_answers_come_before_the_query_is_read(url, storage, bot, kind, slug, api_key, expected):
    """Invalid slug 400, missing key 401, unknown bot 404 and wrong key 403 answer before a bad query's 400."""
    other = keys.generate_key()
    storage.create_bot("other-bot", "Other", keys.hash_key(other))
    if api_key is not None:
        api_key = api_key.format(mine=bot["apiKey"], random=keys.generate_key(), other=other)
    assert call(url, f"/api/bots/{slug}/{kind}", api_key, limit="0", cursor="xyz", symbol="") == expected


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_rotated_away_mid_walk_gets_403_and_the_new_key_goes_on(url, storage, bot, catalog, kind):
    """Once the bot's key is rotated, the old one gets 403 (even with a bad query) and its cursor works with the new."""
    status, first = call(url, f"{BOT}/{kind}", bot["apiKey"], limit="2")
    assert status == 200 and first["nextCursor"] is not None
    new_key = operations.rotate_key(storage, "my-bot")["apiKey"]
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], limit="2", cursor=first["nextCursor"]) == INVALID_KEY
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], limit="0") == INVALID_KEY
    rest = walk(url, kind, new_key, limit="2", cursor=first["nextCursor"])
    rows = first["data"] + [row for page in rest for row in page["data"]]
    assert rows == sorted(catalog[kind], key=lambda row: row[ORDER_KEY[kind]])


@pytest.mark.parametrize("kind", KINDS)
def test_a_bot_deleted_mid_walk_gets_404(url, storage, bot, catalog, kind):
    """Once the bot is deleted, its next page (even with a bad query) is the spec's unknown-bot 404."""
    status, first = call(url, f"{BOT}/{kind}", bot["apiKey"], limit="1")
    assert status == 200 and first["nextCursor"] is not None
    operations.delete_bot(storage, "my-bot")
    gone = (404, {"error": "Bot with slug 'my-bot' not found", "code": "NOT_FOUND"})
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], limit="1", cursor=first["nextCursor"]) == gone
    assert call(url, f"{BOT}/{kind}", bot["apiKey"], limit="0") == gone


# The OpenAPI document


@BACKEND_INDEPENDENT
@pytest.mark.parametrize(
    "kind,parameters", (("tickers", ["slug", "symbol", "limit", "cursor"]), ("accounts", ["slug", "limit", "cursor"]))
)
def test_both_endpoints_are_in_the_openapi_document(url, kind, parameters):
    """/openapi.json documents GET of each list: its parameters, its page and the spec's error answers."""
    response = requests.get(url + "/openapi.json", timeout=TIMEOUT)
    assert response.status_code == 200
    document = response.json()
    operation = document["paths"][f"/api/bots/{{slug}}/{kind}"]
    assert list(operation) == ["get"]
    get = operation["get"]
    assert [parameter["name"] for parameter in get["parameters"]] == parameters
    assert {"200", "400", "401", "403", "404"} <= set(get["responses"])
    page = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = document["components"]["schemas"][page]
    assert set(schema["properties"]) == {"data", "nextCursor"}
    row = schema["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert set(document["components"]["schemas"][row]["properties"]) == set(FIELDS[kind])
