"""End-to-end tests: real HTTP (requests) against serve.py running under waitress.

Every expected status, body and message below is copied from the published spec
(/work/shared/spec/update-user-bot-state.txt); the spec is the contract word for word.
"""

import collections
import json
import math
import re
import time
import types
import uuid

import pytest
import requests
from conftest import start_server, stop_server
from spec_data import (
    ACCOUNT_0,
    ACCOUNT_1,
    ACCOUNT_2,
    THREE_ITEMS,
    TICKER_AAPL,
    TICKER_MSFT,
    TICKER_UNKNOWN,
    item,
)

import keys
from app import create_app
from version import VERSION

TIMEOUT = 10
ISO_MILLIS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JSON_TYPE = {"Content-Type": "application/json"}

# The bot's real key; replaced by the `bot` fixture's plaintext key when a request is sent.
GOOD_KEY = "<the bot's api key>"
STATE_PATH = "/api/bots/my-bot/state"

INVALID_SLUG = "Invalid slug format. Only alphanumeric characters, hyphens, and underscores are allowed."


def bad_request(message):
    return {"error": message, "code": "BAD_REQUEST"}


INVALID_JSON = bad_request("Invalid JSON in request body")
SLUG_ERROR = bad_request(INVALID_SLUG)
KEY_REQUIRED = {"message": "API key required. Include x-api-key header."}
KEY_INVALID = {"message": "Invalid API key for this bot"}


def body(*items, **extra):
    """The JSON text of a request with these items, as a client would send it."""
    return json.dumps({**extra, "states": list(items)})


def without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


def replaced(mapping, **changes):
    return {**mapping, **changes}


def raw_state_body(state_text, account=ACCOUNT_0, ticker=TICKER_AAPL):
    """Request bytes whose single item's state is `state_text` (bytes), untouched by any encoder."""
    head = f'{{"states":[{{"accountId":"{account}","tickerId":"{ticker}","state":'.encode()
    return head + state_text + b"}]}"


def canonical(value):
    """A JSON text that differs whenever key order, int vs float, or the sign of zero differs."""
    return json.dumps(value, ensure_ascii=False)


def resolve(headers, api_key):
    return {k: (api_key if v == GOOD_KEY else v) for k, v in headers.items()}


def post_table_row(live_server, bot, path, headers, data):
    """POST one row of an error table: its path, headers (GOOD_KEY resolved) and raw body."""
    return requests.post(
        live_server.url + path,
        data=data.encode("utf-8"),
        headers={**JSON_TYPE, **resolve(headers, bot["apiKey"])},
        timeout=TIMEOUT,
    )


def assert_json(response, status, expected=None):
    """The response has this status, a JSON Content-Type and (if given) exactly this body."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    payload = response.json()
    if expected is not None:
        assert payload == expected
        assert list(payload) == list(expected)  # same keys in the spec's order
    return payload


def assert_alive(base_url):
    response = requests.get(base_url + "/healthz", timeout=TIMEOUT)
    assert_json(response, 200, {"status": "ok", "version": VERSION})


def post_state(base_url, api_key, data, path=STATE_PATH, headers=JSON_TYPE):
    return requests.post(base_url + path, data=data, headers={**headers, "x-api-key": api_key}, timeout=TIMEOUT)


# 1. The spec's 3-item example


def test_three_item_example_has_the_spec_shape(live_server, bot, registered, storage):
    response = requests.post(
        live_server.url + STATE_PATH,
        json={"states": THREE_ITEMS},
        headers={"x-api-key": bot["apiKey"]},
        timeout=TIMEOUT,
    )
    payload = assert_json(response, 200)

    assert list(payload) == ["success", "summary", "results"]
    assert payload["success"] is True
    assert payload["summary"] == {"total": 3, "succeeded": 2, "failed": 1}
    assert list(payload["summary"]) == ["total", "succeeded", "failed"]
    ok_0, ok_1, failed = payload["results"]

    for result, sent in ((ok_0, THREE_ITEMS[0]), (ok_1, THREE_ITEMS[1])):
        assert list(result) == ["status", "data", "accountId", "tickerId", "index"]  # the spec's, then index
        assert result["status"] == "success"
        assert result["accountId"] == sent["accountId"]
        assert result["tickerId"] == sent["tickerId"]
        data = result["data"]
        assert list(data) == [
            "id",
            "botId",
            "userBrokerAccountId",
            "tickerId",
            "state",
            "version",
            "createdAt",
            "updatedAt",
        ]
        assert str(uuid.UUID(data["id"])) == data["id"]
        assert data["botId"] == bot["id"]
        assert data["userBrokerAccountId"] == sent["accountId"]
        assert data["tickerId"] == sent["tickerId"]
        assert canonical(data["state"]) == canonical(sent["state"])
        assert ISO_MILLIS_UTC.match(data["createdAt"]), data["createdAt"]
        assert ISO_MILLIS_UTC.match(data["updatedAt"]), data["updatedAt"]
        stored = storage.get_state(bot["id"], sent["accountId"], sent["tickerId"])
        assert stored.id == data["id"]
        assert canonical(json.loads(stored.state_json)) == canonical(sent["state"])
    assert ok_0["data"]["id"] != ok_1["data"]["id"]

    assert failed == {
        "status": "error",
        "error": "Ticker not found",
        "accountId": ACCOUNT_2,
        "tickerId": TICKER_UNKNOWN,
        "index": 2,
        "code": "TICKER_NOT_FOUND",
    }
    assert list(failed) == ["status", "error", "accountId", "tickerId", "index", "code"]  # the spec's, then code
    assert [ok_0["index"], ok_1["index"]] == [0, 1]
    assert storage.count_states(bot["id"]) == 2


def test_posting_the_same_item_again_upserts(live_server, bot, registered, storage):
    def send(state):
        response = post_state(live_server.url, bot["apiKey"], body(item(state=state)), headers=JSON_TYPE)
        return assert_json(response, 200)["results"][0]["data"]

    first = send({"position": "long", "entryPrice": 145.0})
    time.sleep(0.01)  # timestamps have millisecond resolution
    second = send({"position": "flat"})

    assert second["id"] == first["id"]
    assert second["createdAt"] == first["createdAt"]
    assert second["updatedAt"] > first["updatedAt"]
    assert second["state"] == {"position": "flat"}
    stored = storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL)
    assert json.loads(stored.state_json) == {"position": "flat"}
    assert (stored.id, stored.created_at) == (first["id"], first["createdAt"])
    assert storage.count_states(bot["id"]) == 1


def test_the_same_pair_twice_in_one_request_keeps_the_last_state(live_server, bot, registered, storage):
    response = post_state(
        live_server.url,
        bot["apiKey"],
        body(item(state={"n": 1}), item(state={"n": 2})),
    )
    payload = assert_json(response, 200)
    assert payload["summary"] == {"total": 2, "succeeded": 2, "failed": 0}
    first, second = (result["data"] for result in payload["results"])
    assert first["id"] == second["id"]
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json) == {"n": 2}


# 2. Every error example of the spec, word for word


ERRORS = [
    # (id, path, headers, raw body, status, exact JSON body)
    ("invalid-json-truncated", STATE_PATH, {"x-api-key": GOOD_KEY}, '{"states": [', 400, INVALID_JSON),
    ("invalid-json-empty-body", STATE_PATH, {"x-api-key": GOOD_KEY}, "", 400, INVALID_JSON),
    ("invalid-json-form-data", STATE_PATH, {"x-api-key": GOOD_KEY}, "states=1", 400, INVALID_JSON),
    ("invalid-json-single-quotes", STATE_PATH, {"x-api-key": GOOD_KEY}, "{'states': []}", 400, INVALID_JSON),
    ("invalid-json-trailing-comma", STATE_PATH, {"x-api-key": GOOD_KEY}, '{"states": [],}', 400, INVALID_JSON),
    ("invalid-json-trailing-garbage", STATE_PATH, {"x-api-key": GOOD_KEY}, '{"states": []} x', 400, INVALID_JSON),
    ("missing-states", STATE_PATH, {"x-api-key": GOOD_KEY}, "{}", 400, bad_request("states must be an array")),
    (
        "states-null",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        '{"states": null}',
        400,
        bad_request("states must be an array"),
    ),
    (
        "states-object",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        '{"states": {}}',
        400,
        bad_request("states must be an array"),
    ),
    (
        "states-string",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        '{"states": "[]"}',
        400,
        bad_request("states must be an array"),
    ),
    (
        "body-is-array",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        json.dumps([item()]),
        400,
        bad_request("states must be an array"),
    ),
    ("body-is-null", STATE_PATH, {"x-api-key": GOOD_KEY}, "null", 400, bad_request("states must be an array")),
    (
        "empty-states",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        '{"states": []}',
        400,
        bad_request("states array cannot be empty"),
    ),
    (
        "accountId-missing",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(without(item(), "accountId")),
        400,
        bad_request("states[0].accountId is required and must be a string"),
    ),
    (
        "accountId-number",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), accountId=42)),
        400,
        bad_request("states[0].accountId is required and must be a string"),
    ),
    (
        "accountId-null",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), accountId=None)),
        400,
        bad_request("states[0].accountId is required and must be a string"),
    ),
    (
        "accountId-empty",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), accountId="")),
        400,
        bad_request("states[0].accountId is required and must be a string"),
    ),
    (
        "accountId-before-tickerId",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), accountId=None, tickerId=None)),
        400,
        bad_request("states[0].accountId is required and must be a string"),
    ),
    (
        "tickerId-missing",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(without(item(), "tickerId")),
        400,
        bad_request("states[0].tickerId is required and must be a string"),
    ),
    (
        "tickerId-number",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), tickerId=7)),
        400,
        bad_request("states[0].tickerId is required and must be a string"),
    ),
    (
        "tickerId-null",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), tickerId=None)),
        400,
        bad_request("states[0].tickerId is required and must be a string"),
    ),
    (
        "tickerId-of-second-item",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(item(), replaced(item(), tickerId=[])),
        400,
        bad_request("states[1].tickerId is required and must be a string"),
    ),
    (
        "state-null",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), state=None)),
        400,
        bad_request("states[0].state is required and must be an object"),
    ),
    (
        "state-array",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), state=[1, 2])),
        400,
        bad_request("states[0].state is required and must be an object"),
    ),
    (
        "state-string",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), state="long")),
        400,
        bad_request("states[0].state is required and must be an object"),
    ),
    (
        "state-number",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), state=150.25)),
        400,
        bad_request("states[0].state is required and must be an object"),
    ),
    (
        "state-boolean",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(replaced(item(), state=True)),
        400,
        bad_request("states[0].state is required and must be an object"),
    ),
    (
        "state-missing",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(without(item(), "state")),
        400,
        bad_request("states[0].state is required and must be an object"),
    ),
    (
        "state-of-second-item",
        STATE_PATH,
        {"x-api-key": GOOD_KEY},
        body(item(), replaced(item(), state=[])),
        400,
        bad_request("states[1].state is required and must be an object"),
    ),
    ("slug-with-space", "/api/bots/my%20bot/state", {"x-api-key": GOOD_KEY}, body(item()), 400, SLUG_ERROR),
    ("slug-with-bang", "/api/bots/bot!/state", {"x-api-key": GOOD_KEY}, body(item()), 400, SLUG_ERROR),
    ("slug-with-trailing-newline", "/api/bots/bot%0A/state", {"x-api-key": GOOD_KEY}, body(item()), 400, SLUG_ERROR),
    ("slug-with-dot", "/api/bots/my.bot/state", {"x-api-key": GOOD_KEY}, body(item()), 400, SLUG_ERROR),
    ("slug-non-ascii", "/api/bots/b%C3%B8t/state", {"x-api-key": GOOD_KEY}, body(item()), 400, SLUG_ERROR),
    ("missing-api-key", STATE_PATH, {}, body(item()), 401, KEY_REQUIRED),
    ("empty-api-key", STATE_PATH, {"x-api-key": ""}, body(item()), 401, KEY_REQUIRED),
    ("invalid-api-key", STATE_PATH, {"x-api-key": "your-api-key"}, body(item()), 403, KEY_INVALID),
    (
        "bot-not-found",
        "/api/bots/my-trading-bot/state",
        {"x-api-key": GOOD_KEY},
        body(item()),
        404,
        {"error": "Bot with slug 'my-trading-bot' not found", "code": "NOT_FOUND"},
    ),
]


@pytest.mark.parametrize(
    "path, headers, data, status, expected", [row[1:] for row in ERRORS], ids=[row[0] for row in ERRORS]
)
def test_spec_error_responses(live_server, bot, registered, storage, path, headers, data, status, expected):
    response = post_table_row(live_server, bot, path, headers, data)
    assert_json(response, status, expected)
    assert storage.count_states() == 0  # a refused request writes nothing


# Checks run in this order: slug format (400) -> key present (401) -> bot exists (404)
# -> key matches (403) -> JSON parses (400) -> body validates (400).
PRECEDENCE = [
    ("bad-slug-before-missing-key", "/api/bots/bot!/state", {}, "{", 400, SLUG_ERROR),
    ("bad-slug-before-wrong-key", "/api/bots/my%20bot/state", {"x-api-key": "wrong"}, "{", 400, SLUG_ERROR),
    ("missing-key-before-unknown-bot", "/api/bots/ghost/state", {}, body(item()), 401, KEY_REQUIRED),
    ("missing-key-before-invalid-json", STATE_PATH, {}, "{", 401, KEY_REQUIRED),
    (
        "unknown-bot-before-wrong-key",
        "/api/bots/ghost/state",
        {"x-api-key": "wrong"},
        "{",
        404,
        {"error": "Bot with slug 'ghost' not found", "code": "NOT_FOUND"},
    ),
    ("wrong-key-before-invalid-json", STATE_PATH, {"x-api-key": "wrong"}, "{", 403, KEY_INVALID),
    ("wrong-key-before-invalid-body", STATE_PATH, {"x-api-key": "wrong"}, '{"states": []}', 403, KEY_INVALID),
    ("invalid-json-before-validation", STATE_PATH, {"x-api-key": GOOD_KEY}, '{"states": [] ', 400, INVALID_JSON),
]


@pytest.mark.parametrize(
    "path, headers, data, status, expected",
    [row[1:] for row in PRECEDENCE],
    ids=[row[0] for row in PRECEDENCE],
)
def test_order_of_checks(live_server, bot, path, headers, data, status, expected):
    response = post_table_row(live_server, bot, path, headers, data)
    assert_json(response, status, expected)


# 3. A client written like the spec's Python example

SPEC_EXAMPLE_STATES = [
    {
        "accountId": "550e8400-e29b-41d4-a716-446655440000",
        "tickerId": "222e4567-e89b-12d3-a456-426614174002",
        "state": {"lastPrice": 150.25, "position": "long", "entryPrice": 145.00, "stopLoss": 140.00},
    },
    {
        "accountId": "550e8400-e29b-41d4-a716-446655440001",
        "tickerId": "444e4567-e89b-12d3-a456-426614174004",
        "state": {"indicators": {"rsi": 65.5, "macd": 1.2, "ema20": 148.50}, "signals": ["buy"]},
    },
]


def update_bot_state(base_url, bot_slug, api_key, states):
    """The spec's Python client, pointed at `base_url` and with a timeout."""
    url = f"{base_url}/api/bots/{bot_slug}/state"
    payload = {"states": states}
    headers = {"Content-Type": "application/json", "x-api-key": api_key}
    response = requests.post(url, json=payload, headers=headers, timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


def test_spec_python_client(live_server, bot, registered, storage):
    result = update_bot_state(live_server.url, bot["slug"], bot["apiKey"], SPEC_EXAMPLE_STATES)

    message = f"Updated {result['summary']['succeeded']} of {result['summary']['total']} states"
    assert message == "Updated 2 of 2 states"
    assert [r for r in result["results"] if r["status"] == "error"] == []
    for sent, result_item in zip(SPEC_EXAMPLE_STATES, result["results"], strict=False):
        assert canonical(result_item["data"]["state"]) == canonical(sent["state"])
        stored = storage.get_state(bot["id"], sent["accountId"], sent["tickerId"])
        assert canonical(json.loads(stored.state_json)) == canonical(sent["state"])


def test_spec_python_client_raises_http_error_on_a_wrong_key(live_server, bot, registered, storage):
    with pytest.raises(requests.HTTPError) as raised:
        update_bot_state(live_server.url, bot["slug"], "your-api-key", SPEC_EXAMPLE_STATES)
    assert_json(raised.value.response, 403, KEY_INVALID)
    assert storage.count_states() == 0


# 4. The body is JSON whatever the Content-Type says


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",  # what curl -d sends
        None,
        "text/plain",
        "application/json; charset=utf-8",
        "multipart/form-data; boundary=xyz",
    ],
)
def test_body_is_json_whatever_the_content_type(live_server, bot, registered, storage, content_type):
    # '&' and '=' would be mangled by any form parsing on the way.
    state = {"note": "a=1&b=2", "position": "long"}
    headers = {"x-api-key": bot["apiKey"]}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = requests.post(
        live_server.url + STATE_PATH,
        data=body(item(state=state)).encode("utf-8"),
        headers=headers,
        timeout=TIMEOUT,
    )
    assert response.request.headers.get("Content-Type") == content_type
    payload = assert_json(response, 200)
    assert payload["summary"] == {"total": 1, "succeeded": 1, "failed": 0}
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json) == state


# 5. States round-trip exactly; anything that is not strict JSON is refused

ROUND_TRIPS = [
    # (id, state as raw JSON text, the value it must come back as)
    ("key-order", b'{"z":1,"a":2,"m":3}', {"z": 1, "a": 2, "m": 3}),
    (
        "nested-key-order",
        b'{"b":{"y":1,"x":[{"q":1,"p":2}]},"a":null}',
        {"b": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": None},
    ),
    (
        "unicode",
        '{"café":"é","emoji":"🚀📈","cjk":"株式会社","rtl":"שלום"}'.encode(),
        {"café": "é", "emoji": "🚀📈", "cjk": "株式会社", "rtl": "שלום"},
    ),
    ("escaped-surrogate-pair", b'{"e":"\\ud83d\\ude80","k":"\\u00e9"}', {"e": "🚀", "k": "é"}),
    ("control-characters", b'{"s":"line\\nbreak\\t\\u0000end"}', {"s": "line\nbreak\t\x00end"}),
    (
        "big-integer",
        b'{"n":' + str(10**299 + 7).encode() + b',"neg":-' + str(10**299).encode() + b"}",
        {"n": 10**299 + 7, "neg": -(10**299)},
    ),
    (
        "floats",
        b'{"a":0.1,"b":150.25,"c":-0.0,"d":1e-300,"e":1.7976931348623157e308,"f":5e-324,"g":0.30000000000000004}',
        {"a": 0.1, "b": 150.25, "c": -0.0, "d": 1e-300, "e": 1.7976931348623157e308, "f": 5e-324, "g": 0.1 + 0.2},
    ),
    ("int-vs-float", b'{"i":145,"f":145.0}', {"i": 145, "f": 145.0}),
    (
        "nested",
        b'{"indicators":{"rsi":65.5,"macd":{"line":1.2,"hist":[-0.1,0.2]}},"signals":["buy",[],{}],"ok":true,"none":null}',
        {
            "indicators": {"rsi": 65.5, "macd": {"line": 1.2, "hist": [-0.1, 0.2]}},
            "signals": ["buy", [], {}],
            "ok": True,
            "none": None,
        },
    ),
    ("empty-object", b"{}", {}),
]


@pytest.mark.parametrize("state_text, expected", [row[1:] for row in ROUND_TRIPS], ids=[row[0] for row in ROUND_TRIPS])
def test_state_round_trips_over_http(live_server, bot, registered, storage, state_text, expected):
    response = post_state(live_server.url, bot["apiKey"], raw_state_body(state_text))
    payload = assert_json(response, 200)
    assert payload["summary"] == {"total": 1, "succeeded": 1, "failed": 0}

    echoed = payload["results"][0]["data"]["state"]
    stored = json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json)
    assert canonical(echoed) == canonical(expected)
    assert canonical(stored) == canonical(expected)
    if "c" in expected:  # -0.0 == 0.0, so check the sign itself
        assert math.copysign(1.0, echoed["c"]) == -1.0
        assert math.copysign(1.0, stored["c"]) == -1.0


DEEP = 100_000
NOT_JSON = [
    ("NaN", b'{"x":NaN}'),
    ("Infinity", b'{"x":Infinity}'),
    ("minus-Infinity", b'{"x":-Infinity}'),
    ("lone-high-surrogate", b'{"x":"\\ud800"}'),
    ("lone-low-surrogate-in-key", b'{"\\udc00":1}'),
    ("high-surrogate-then-text", b'{"x":"\\ud83dA"}'),
    ("invalid-utf8-byte", b'{"x":"\xff"}'),
    ("overlong-utf8", b'{"x":"\xc0\xaf"}'),
    ("utf8-encoded-surrogate", b'{"x":"\xed\xa0\x80"}'),
    ("5000-digit-integer", b'{"x":' + b"9" * 5000 + b"}"),
    ("1e999", b'{"x":1e999}'),
    ("minus-1e999", b'{"x":-1e999}'),
    ("100000-deep-nesting", b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}"),
]


@pytest.mark.parametrize("state_text", [row[1] for row in NOT_JSON], ids=[row[0] for row in NOT_JSON])
def test_non_strict_json_is_refused(live_server, bot, registered, storage, state_text):
    response = post_state(live_server.url, bot["apiKey"], raw_state_body(state_text))
    assert_json(response, 400, INVALID_JSON)
    assert storage.count_states() == 0
    assert_alive(live_server.url)


def test_deep_nesting_as_the_whole_body_is_refused(live_server, bot):
    response = post_state(live_server.url, bot["apiKey"], b"[" * DEEP + b"]" * DEEP)
    assert_json(response, 400, INVALID_JSON)
    assert_alive(live_server.url)


# 6. Limits, with the real waitress in front

LIMIT_BODY = 65536
LIMIT_STATES = 5
LIMIT_STATE_BYTES = 200
TOO_LARGE = {"error": f"Request body exceeds {LIMIT_BODY} bytes", "code": "PAYLOAD_TOO_LARGE"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A server with small limits, its bot and the spec's accounts and tickers."""
    path = tmp_path_factory.mktemp("limits") / "limits.db"
    seed_app = create_app({"DATABASE": str(path)})
    storage = seed_app.extensions["botstate.storage"]
    api_key = keys.generate_key()
    created = storage.create_bot("my-bot", "Limited bot", keys.hash_key(api_key))
    for account_id in (ACCOUNT_0, ACCOUNT_1):
        storage.add_account(account_id, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    storage.add_ticker("MSFT", TICKER_MSFT)
    process, url, log_path = start_server(
        path,
        MAX_BODY_BYTES=LIMIT_BODY,
        MAX_STATES=LIMIT_STATES,
        MAX_STATE_BYTES=LIMIT_STATE_BYTES,
    )
    yield types.SimpleNamespace(url=url, api_key=api_key, bot_id=created["id"], storage=storage, log_path=log_path)
    stop_server(process)
    storage.close()


def padded_body(size):
    """A valid one-item request of exactly `size` bytes (padding in an ignored top-level key)."""
    empty = json.dumps({"pad": "", "states": [item()]}, separators=(",", ":")).encode()
    result = json.dumps({"pad": "x" * (size - len(empty)), "states": [item()]}, separators=(",", ":")).encode()
    assert len(result) == size
    return result


def test_body_at_the_limit_is_accepted(limited):
    response = post_state(limited.url, limited.api_key, padded_body(LIMIT_BODY))
    assert assert_json(response, 200)["summary"]["succeeded"] == 1


def test_body_just_over_the_limit_is_413(limited):
    response = post_state(limited.url, limited.api_key, padded_body(LIMIT_BODY + 1))
    assert_json(response, 413, TOO_LARGE)
    assert_alive(limited.url)


@pytest.mark.parametrize("past", [1, 1024 * 1024])
def test_body_up_to_1_mib_past_the_limit_gets_the_json_413(limited, past):
    # Issue 13: exactly limit + 1 MiB got waitress's plain-text 413.
    response = post_state(limited.url, limited.api_key, padded_body(LIMIT_BODY + past))
    assert_json(response, 413, TOO_LARGE)


def test_chunked_body_over_the_limit_is_413(limited):
    data = padded_body(LIMIT_BODY + 10_000)

    def chunks():
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    response = post_state(limited.url, limited.api_key, chunks())
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert_json(response, 413, TOO_LARGE)
    assert_alive(limited.url)


def test_chunked_body_under_the_limit_is_accepted(limited):
    data = padded_body(LIMIT_BODY - 100)
    response = post_state(limited.url, limited.api_key, iter([data[:1000], data[1000:]]))
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert assert_json(response, 200)["summary"]["succeeded"] == 1


def test_oversize_body_is_checked_after_authentication(limited):
    response = post_state(limited.url, "wrong-key", padded_body(LIMIT_BODY + 1))
    assert_json(response, 403, KEY_INVALID)


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_enormous_body_is_cut_off_and_the_server_survives(limited, transfer):
    size = 8 * 1024 * 1024  # past waitress' max_request_body_size (limit + 1 MiB)
    whole = b"[" + b" " * (size - 2) + b"]"
    data = whole
    if transfer == "chunked":
        data = (whole[start : start + 65536] for start in range(0, size, 65536))
    try:
        response = post_state(limited.url, limited.api_key, data)
    except requests.ConnectionError:
        pass  # waitress may close the connection while the body is still being sent
    else:
        assert 400 <= response.status_code < 500, response.status_code
    assert_alive(limited.url)


def test_more_states_than_allowed_is_400(limited):
    at_limit = post_state(limited.url, limited.api_key, body(*[item()] * LIMIT_STATES))
    assert assert_json(at_limit, 200)["summary"]["succeeded"] == LIMIT_STATES

    over = post_state(limited.url, limited.api_key, body(*[item()] * (LIMIT_STATES + 1)))
    assert_json(over, 400, bad_request(f"states array cannot contain more than {LIMIT_STATES} items"))


def test_state_over_the_byte_limit_fails_alone(limited):
    # Compact {"s":"…"} is 8 bytes plus the string; bytes, not characters, count.
    items = [
        item(ACCOUNT_0, TICKER_AAPL, {"s": "ok"}),
        item(ACCOUNT_0, TICKER_MSFT, {"s": "x" * (LIMIT_STATE_BYTES - 8 + 1)}),  # 201 bytes
        item(ACCOUNT_1, TICKER_AAPL, {"s": "x" * (LIMIT_STATE_BYTES - 8)}),  # exactly 200 bytes
        item(ACCOUNT_1, TICKER_MSFT, {"s": "é" * 100}),  # 108 characters, 208 bytes
    ]
    storage = limited.storage
    before = {
        (i["accountId"], i["tickerId"]): storage.get_state(limited.bot_id, i["accountId"], i["tickerId"]) for i in items
    }
    response = post_state(limited.url, limited.api_key, json.dumps({"states": items}, separators=(",", ":")))
    payload = assert_json(response, 200)
    assert payload["summary"] == {"total": 4, "succeeded": 2, "failed": 2}
    results = payload["results"]
    assert [r["status"] for r in results] == ["success", "error", "success", "error"]
    for index in (1, 3):
        assert results[index] == {
            "status": "error",
            "error": f"State exceeds {LIMIT_STATE_BYTES} bytes",
            "accountId": items[index]["accountId"],
            "tickerId": items[index]["tickerId"],
            "index": index,
            "code": "STATE_TOO_LARGE",
        }
        # the refused state was not written over whatever was there
        key = (items[index]["accountId"], items[index]["tickerId"])
        assert storage.get_state(limited.bot_id, *key) == before[key]
    for index in (0, 2):
        stored = storage.get_state(limited.bot_id, items[index]["accountId"], items[index]["tickerId"])
        assert json.loads(stored.state_json) == items[index]["state"]


# 7. Every response is JSON

ROUTING = [
    # (method, path, status, code)
    ("GET", "/nope", 404, "NOT_FOUND"),
    ("POST", "/api/bots/my-bot", 404, "NOT_FOUND"),
    ("POST", "/api/bots/my-bot/state/", 404, "NOT_FOUND"),
    ("PUT", STATE_PATH, 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", STATE_PATH, 405, "METHOD_NOT_ALLOWED"),
    ("OPTIONS", STATE_PATH, 405, "METHOD_NOT_ALLOWED"),
    ("POST", STATE_PATH + "/" + ACCOUNT_0 + "/" + TICKER_AAPL, 405, "METHOD_NOT_ALLOWED"),
    ("PUT", STATE_PATH + "/" + ACCOUNT_0 + "/" + TICKER_AAPL, 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/healthz", 405, "METHOD_NOT_ALLOWED"),
]


@pytest.mark.parametrize("method, path, status, code", ROUTING)
def test_routing_errors_are_json(live_server, bot, method, path, status, code):
    response = requests.request(method, live_server.url + path, headers={"x-api-key": bot["apiKey"]}, timeout=TIMEOUT)
    payload = assert_json(response, status)
    assert list(payload) == ["error", "code"]
    assert isinstance(payload["error"], str) and payload["error"]
    assert payload["code"] == code
    if status == 405:
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        expected = {"/healthz": {"GET", "HEAD"}, STATE_PATH: {"GET", "HEAD", "POST", "PATCH"}}.get(
            path, {"GET", "HEAD", "DELETE"}
        )
        assert allowed == expected


def test_healthz(live_server):
    assert_alive(live_server.url)


# 8. Odd API key headers


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda real: "k" * 10_240, id="10KB-key"),
        pytest.param(lambda real: "clé".encode("latin-1"), id="latin-1-bytes"),
        pytest.param(lambda real: "clé🔑".encode(), id="utf-8-bytes"),
        pytest.param(lambda real: b"\xff\xfe\x80", id="high-bytes"),
        pytest.param(lambda real: real + "x", id="real-key-plus-one"),
        pytest.param(lambda real: real[:-1], id="real-key-minus-one"),
        pytest.param(lambda real: real.upper(), id="real-key-upper-case"),
    ],
)
def test_odd_api_keys_are_403_json(live_server, bot, registered, storage, make_key):
    response = post_state(live_server.url, make_key(bot["apiKey"]), body(item()))
    assert_json(response, 403, KEY_INVALID)
    assert storage.count_states() == 0


def test_api_key_header_name_is_case_insensitive(live_server, bot, registered):
    response = requests.post(
        live_server.url + STATE_PATH,
        data=body(item()),
        headers={**JSON_TYPE, "X-API-KEY": bot["apiKey"]},
        timeout=TIMEOUT,
    )
    assert assert_json(response, 200)["summary"]["succeeded"] == 1


# 9. The request log

REQUEST_LINE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|OPTIONS) (/\S*) (\d{3})\b")


def test_log_has_one_line_per_request_and_no_secrets(live_server, bot, registered):
    marker = f"MARKER-{uuid.uuid4().hex}"
    wrong_key = f"wrong-{uuid.uuid4().hex}"
    url, good = live_server.url, bot["apiKey"]
    calls = [
        # (method, path, headers, body, expected status, path as logged)
        ("POST", STATE_PATH, {"x-api-key": good}, body(item(state={"secret": marker})), 200, STATE_PATH),
        (
            "POST",
            STATE_PATH,
            {"x-api-key": good},
            body(item(ticker=TICKER_UNKNOWN, state={"secret": marker})),
            200,
            STATE_PATH,
        ),
        ("POST", STATE_PATH, {}, body(item(state={"secret": marker})), 401, STATE_PATH),
        ("POST", STATE_PATH, {"x-api-key": wrong_key}, body(item(state={"secret": marker})), 403, STATE_PATH),
        ("POST", STATE_PATH, {"x-api-key": good}, '{"secret": "' + marker + '"', 400, STATE_PATH),
        ("POST", STATE_PATH, {"x-api-key": good}, body(replaced(item(), state=[marker])), 400, STATE_PATH),
        ("POST", "/api/bots/bot%0A/state", {"x-api-key": good}, body(item()), 400, "/api/bots/bot\\n/state"),
        ("GET", "/healthz", {}, None, 200, "/healthz"),
    ]
    for method, path, headers, data, status, _ in calls:
        response = requests.request(method, url + path, data=data, headers={**JSON_TYPE, **headers}, timeout=TIMEOUT)
        assert response.status_code == status, response.text

    expected = collections.Counter((m, logged, str(s)) for m, _, _, _, s, logged in calls)
    deadline = time.monotonic() + 5
    while True:
        text = live_server.log_path.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if REQUEST_LINE.search(line)]
        seen = collections.Counter(REQUEST_LINE.search(line).groups() for line in lines)
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == expected, text

    authenticated = [line for line in lines if f" {STATE_PATH} " in line]
    assert len(authenticated) == 6
    for line in authenticated:
        # the bot's slug is logged besides the path
        assert "my-bot" in line.replace(STATE_PATH, ""), line

    assert good not in text
    assert wrong_key not in text
    assert marker not in text
