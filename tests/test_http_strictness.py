"""What the HTTP layer refuses from hostile clients: deep states, invented methods, odd paths, strict
query parameters, forged cursors and entity-tag lists. One row per case."""

import base64
import http.client
import json
import re
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from conftest import start_server, stop_server
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, item

import config
import jsoncodec
import metrics
import schemas

STATE_URL = "/api/bots/b/state"
ROW_URL = f"{STATE_URL}/{ACCOUNT_0}/{TICKER_AAPL}"


def nested(depth, leaf=None):
    """A state object nested `depth` levels deep (the state itself is level 1), `leaf` innermost."""
    state = {} if leaf is None else leaf
    for _ in range(depth - 1):
        state = {"n": state}
    return state


def send(client, bot, method, items):
    """POST or PATCH `items`, the body written by the standard library (the test client's orjson stops at 254)."""
    return client.open(
        STATE_URL, method=method, data=json.dumps({"states": items}), headers={"x-api-key": bot["apiKey"]}
    )


def stored_state_text(client, bot):
    """The state of the (ACCOUNT_0, AAPL) row exactly as GET answers it."""
    response = client.get(ROW_URL, headers={"x-api-key": bot["apiKey"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    raw = response.get_data(as_text=True)
    return raw[raw.index('"state":') + len('"state":') : raw.index(',"version":')]


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# 1. Deep states: the depth setting stops where the encoder does, and where a write body read in pieces does.
DEEPEST_SETTING = config.INT_RANGES["MAX_STATE_DEPTH"][1]


def test_the_encoders_limit_is_the_depth_settings_cap():
    assert jsoncodec.dumps(nested(jsoncodec.MAX_DEPTH)) == compact(nested(jsoncodec.MAX_DEPTH))
    with pytest.raises(TypeError, match="Recursion limit"):
        jsoncodec.dumps(nested(jsoncodec.MAX_DEPTH + 1))


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_state_at_the_deepest_allowed_setting_is_stored_and_read_back_exactly(configured, method):
    client, bot, _ = configured(MAX_STATE_DEPTH=DEEPEST_SETTING)
    first = nested(DEEPEST_SETTING, {"a": 1.5, "z": "é"})
    response = send(client, bot, method, [item(state=first)])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["summary"]["succeeded"] == 1
    assert stored_state_text(client, bot) == compact(first)
    # Again onto the stored row: PATCH merges at the deepest level (pgstorage re-serializes the merge).
    second = nested(DEEPEST_SETTING, {"a": None, "b": True})
    response = send(client, bot, method, [item(state=second)])
    assert response.get_json()["summary"]["succeeded"] == 1, response.get_data(as_text=True)
    expected = nested(DEEPEST_SETTING, {"z": "é", "b": True}) if method == "PATCH" else second
    assert stored_state_text(client, bot) == compact(expected)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_one_level_past_the_deepest_setting_is_the_depth_400(configured, method):
    client, bot, storage = configured(MAX_STATE_DEPTH=DEEPEST_SETTING)
    response = send(client, bot, method, [item(state=nested(DEEPEST_SETTING + 1))])
    assert response.status_code == 400
    assert response.get_json() == {
        "error": f"states[0].state is nested more than {DEEPEST_SETTING} levels deep",
        "code": "BAD_REQUEST",
    }
    assert storage.count_states() == 0


# 2. Metrics labels come from fixed sets.


def label_values(text, label):
    return set(re.findall(rf'^botstate_\w+\{{[^}}]*\b{label}="([^"]*)"', text, re.M))


def test_fifty_invented_methods_make_no_series_beyond_other(configured):
    client, _, _ = configured(METRICS=1)
    for n in range(50):
        assert client.open("/healthz", method=f"XA{n:03d}").status_code == 405
        assert client.open("/nowhere", method=f"XB{n:03d}").status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    assert label_values(text, "method") == {"other"}
    requests_series = re.findall(r"^botstate_requests_total\{.*\} (\S+)$", text, re.M)
    assert sorted(float(value) for value in requests_series) == [50.0, 50.0]  # /healthz 405 and (no route) 404


@pytest.mark.parametrize(
    "method,label",
    [
        ("GET", "GET"),
        ("HEAD", "HEAD"),
        ("POST", "POST"),
        ("PUT", "PUT"),
        ("PATCH", "PATCH"),
        ("DELETE", "DELETE"),
        ("OPTIONS", "OPTIONS"),
        ("CONNECT", "CONNECT"),
        ("TRACE", "TRACE"),
        ("get", "other"),
        ("XAAAA", "other"),
        ("PROPFIND", "other"),
        ("GET2", "other"),
        ("", "other"),
    ],
)
def test_method_labels(method, label):
    assert metrics.method_label(method) == label


class _NoRetries:
    retries = 0


@pytest.mark.parametrize(
    "error,outcome",
    [
        ("Ticker not found", "Ticker not found"),
        ("Account not found", "Account not found"),
        ("Version conflict: expected 1, found 2", "Version conflict"),
        ("Version conflict: expected 99, found 0", "Version conflict"),
        ("State exceeds 65536 bytes", "State exceeds 65536 bytes"),
        ("Failed to update state", "Failed to update state"),
        ("State exceeds 1 bytes", "other"),
        ("Something new: with a colon", "other"),
        ("succeeded", "succeeded"),
    ],
)
def test_item_outcome_labels(error, outcome):
    assert metrics.Metrics(_NoRetries(), 65536).outcome(error) == outcome


# 3. No path is answered with a redirect.

ODD_PATHS = [
    ("POST", "/api//bots/b/state"),
    ("POST", "//api/bots/b/state"),
    ("POST", "/api/bots//b/state"),
    ("POST", "/api/bots/b//state"),
    ("POST", "/api/bots/b/state/"),
    ("POST", "/api/bots/b/state//"),
    ("PATCH", "/api//bots/b/state"),
    ("GET", "/api/bots/b/state/"),
    ("GET", "/api//bots/b/state"),
    ("GET", f"/api/bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}/"),
    ("GET", f"/api/bots/b/state/{ACCOUNT_0}//{TICKER_AAPL}"),
    ("GET", f"/api/bots/b//state/{ACCOUNT_0}/{TICKER_AAPL}"),
    ("DELETE", f"/api//bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}"),
    ("DELETE", f"/api/bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}//"),
    ("GET", "//healthz"),
    ("GET", "///healthz"),
    ("GET", "/healthz/"),
    ("GET", "/healthz//"),
    ("HEAD", "/healthz/"),
    ("GET", "/openapi.json/"),
    ("GET", "//openapi.json"),
    ("GET", "/openapi.json//"),
    ("GET", "/metrics/"),
    ("GET", "//metrics"),
    ("GET", "/metrics//"),
    ("GET", "/nowhere/"),
    ("GET", "//"),
]


def assert_json_not_redirect(status, content_type, location, path):
    assert not 300 <= status < 400, path
    assert location is None, path
    # werkzeug ignores leading slashes: //metrics is /metrics itself, in Prometheus's format.
    routed_to_metrics = status == 200 and path.lstrip("/") == "metrics"
    assert content_type.startswith("application/json") or routed_to_metrics, path


@pytest.mark.parametrize("method,path", ODD_PATHS)
def test_odd_paths_get_json_and_never_a_redirect(configured, method, path):
    client, bot, _ = configured(METRICS=1)
    response = client.open(
        "/",
        method=method,
        headers={"x-api-key": bot["apiKey"], "Host": "evil.example"},
        environ_overrides={"PATH_INFO": path, "REQUEST_URI": path, "RAW_URI": path},
    )
    assert_json_not_redirect(response.status_code, response.content_type, response.headers.get("Location"), path)


def test_odd_paths_get_json_and_never_a_redirect_from_a_real_server(tmp_path, database, bot):
    process, url, _ = start_server(database, log_path=tmp_path / "server.log", METRICS=1)
    try:
        address = urlsplit(url)
        for method, path in ODD_PATHS:
            path = path.replace("/bots/b/", "/bots/my-bot/")
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            connection.request(method, path, headers={"Host": "evil.example", "x-api-key": bot["apiKey"]})
            response = connection.getresponse()
            response.read()
            connection.close()
            assert_json_not_redirect(
                response.status, response.getheader("Content-Type", ""), response.getheader("Location"), path
            )
    finally:
        stop_server(process)


# 4-6. Query parameters are read strictly.

LIMIT = "limit must be an integer from 1 to 1000"
TIMESTAMP = "updatedSince must be an RFC 3339 date-time, e.g. 2026-11-24T21:00:00Z"
CURSOR = "cursor is not a cursor this service returned"


def old_format_cursor(account, ticker):
    """A cursor as the service made them before: the two ids in base64url, 43 characters, unsigned."""
    return base64.urlsafe_b64encode(uuid.UUID(account).bytes + uuid.UUID(ticker).bytes).rstrip(b"=").decode()


def edited(cursor, position):
    """`cursor` with one bit of its decoded byte at `position` flipped."""
    raw = bytearray(base64.urlsafe_b64decode(cursor))
    raw[position] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


def resigned(body):
    """A cursor made of `body` with the right MAC: what the format checks besides the MAC."""
    return base64.urlsafe_b64encode(body + schemas._cursor_mac(body)).decode()


GOOD = schemas.encode_cursor(ACCOUNT_0, TICKER_AAPL)
IDS = uuid.UUID(ACCOUNT_0).bytes + uuid.UUID(TICKER_AAPL).bytes


QUERIES = [
    # limit: ASCII digits, no sign, space, underscore or leading zero (one spelling per number)
    ("limit", " 1 ", LIMIT),
    ("limit", "1 ", LIMIT),
    ("limit", "1_000", LIMIT),
    ("limit", "+5", LIMIT),
    ("limit", "-0", LIMIT),
    ("limit", "\u0665", LIMIT),  # Arabic-indic five
    ("limit", "\uff15", LIMIT),  # fullwidth five
    ("limit", "05", LIMIT),
    ("limit", "0", LIMIT),
    ("limit", "1e2", LIMIT),
    ("limit", "0x10", LIMIT),
    ("limit", "5\n", LIMIT),
    ("limit", "1001", LIMIT),
    ("limit", "9" * 5000, LIMIT),
    ("limit", "1", None),
    ("limit", "1000", None),
    # updatedSince: ASCII digits, seconds 00-60 (60 only as a leap second), offsets to 23:59
    ("updatedSince", "2026-01-01T00:00:99Z", TIMESTAMP),
    ("updatedSince", "2026-01-01T00:00:61Z", TIMESTAMP),
    ("updatedSince", "2026-01-01T00:00:60Z", TIMESTAMP),  # no leap second there
    ("updatedSince", "2026-06-30T23:59:60+01:00", TIMESTAMP),  # 22:59:60 UTC
    ("updatedSince", "2026-01-01T00:00:00+99:99", TIMESTAMP),
    ("updatedSince", "2026-01-01T00:00:00+24:00", TIMESTAMP),
    ("updatedSince", "2026-01-01T00:00:00-23:60", TIMESTAMP),
    ("updatedSince", "\u0662\u0660\u0662\u0666-01-01T00:00:00Z", TIMESTAMP),  # Arabic-indic year
    ("updatedSince", "2026-01-01T00:00:\uff10\uff10Z", TIMESTAMP),  # fullwidth seconds
    ("updatedSince", "2026-01-01T00:00:00.\u0661Z", TIMESTAMP),
    ("updatedSince", "2026-01-01T00:00:00+0\u0661:00", TIMESTAMP),
    ("updatedSince", "2026-06-30T23:59:60Z", None),  # a leap second, read as :59
    ("updatedSince", "2026-12-31T18:59:60-05:00", None),  # 23:59:60 UTC
    ("updatedSince", "2026-11-24T21:00:00.123456789+23:59", None),
    ("updatedSince", "2026-11-24t21:00:00z", None),
    # cursor: only what encode_cursor made
    ("cursor", "A" * 43, CURSOR),
    ("cursor", "A" * 60, CURSOR),
    ("cursor", base64.urlsafe_b64encode(bytes(range(1, 46))).decode(), CURSOR),  # 45 arbitrary bytes
    ("cursor", old_format_cursor(ACCOUNT_0, TICKER_AAPL), CURSOR),
    ("cursor", edited(GOOD, 0), CURSOR),  # the version byte
    ("cursor", edited(GOOD, 5), CURSOR),  # the account
    ("cursor", edited(GOOD, 32), CURSOR),  # the ticker
    ("cursor", edited(GOOD, 40), CURSOR),  # the MAC
    ("cursor", GOOD[:-1], CURSOR),
    ("cursor", GOOD[:-4], CURSOR),
    ("cursor", GOOD + "A", CURSOR),
    ("cursor", GOOD + "AAAA", CURSOR),
    ("cursor", GOOD + "=", CURSOR),
    ("cursor", GOOD.swapcase(), CURSOR),
    ("cursor", resigned(b"\x02" + IDS), CURSOR),  # an unknown version, rightly signed
    ("cursor", GOOD, None),
]


@pytest.mark.parametrize("name,value,message", QUERIES, ids=[f"{name}={value[:24]!r}" for name, value, _ in QUERIES])
def test_query_parameters_are_read_strictly(configured, name, value, message):
    client, bot, _ = configured()
    response = client.get(STATE_URL, query_string={name: value}, headers={"x-api-key": bot["apiKey"]})
    if message is None:
        assert response.status_code == 200, response.get_json()
    else:
        assert response.status_code == 400, value
        assert response.get_json() == {"error": message, "code": "BAD_REQUEST"}


def test_a_leap_second_reads_as_its_minutes_59th_second():
    loaded = schemas.StateQuerySchema().load({"updatedSince": "2016-12-31T23:59:60.5Z"})
    assert loaded["updatedSince"] == "2016-12-31T23:59:59.500Z"


def test_a_returned_cursor_pages_on_other_server_processes_and_after_restarts(tmp_path, database, bot, registered):
    headers = {"x-api-key": bot["apiKey"]}
    first, url_first, _ = start_server(database, log_path=tmp_path / "first.log")
    try:
        body = {
            "states": [
                item(a, t, {"n": i}) for i, (a, t) in enumerate([(ACCOUNT_0, TICKER_AAPL), (ACCOUNT_1, TICKER_MSFT)])
            ]
        }
        assert (
            requests.post(f"{url_first}/api/bots/my-bot/state", json=body, headers=headers, timeout=10).status_code
            == 200
        )
        page = requests.get(
            f"{url_first}/api/bots/my-bot/state", params={"limit": 1}, headers=headers, timeout=10
        ).json()
    finally:
        stop_server(first)
    assert [row["tickerId"] for row in page["data"]] == [TICKER_AAPL]
    assert re.fullmatch(schemas.Cursor.PATTERN, page["nextCursor"])
    # Two processes started afterwards, running side by side, both take it.
    servers = [start_server(database, log_path=tmp_path / f"then{n}.log") for n in range(2)]
    try:
        for _, url, _ in servers:
            rest = requests.get(
                f"{url}/api/bots/my-bot/state",
                params={"limit": 1, "cursor": page["nextCursor"]},
                headers=headers,
                timeout=10,
            ).json()
            assert [(row["userBrokerAccountId"], row["tickerId"]) for row in rest["data"]] == [(ACCOUNT_1, TICKER_MSFT)]
            assert rest["nextCursor"] is None
    finally:
        for process, _, _ in servers:
            stop_server(process)


# 7. If-Match and If-None-Match: one parser, RFC 9110's comparisons.

NOT_A_TAG = 'Version conflict: expected a strong entity-tag such as "3", found 3'


@pytest.fixture
def row_at_version_3(configured):
    client, bot, _ = configured()
    for n in range(3):
        assert send(client, bot, "POST", [item(state={"n": n})]).status_code == 200
    return client, bot


@pytest.mark.parametrize(
    "header,status",
    [
        ('"3"', 304),
        ('W/"3"', 304),  # weak comparison
        ('"1", "3"', 304),
        (' "3" ', 304),
        ('"1",,"3"', 304),  # empty list elements are allowed
        (', "3",', 304),
        ('\t"1" ,\t"3"', 304),
        ("*", 304),
        (" * ", 304),
        ("3", 200),  # not an entity-tag: matches nothing
        ("W/3", 200),
        ('w/"3"', 200),  # W/ is case-sensitive
        ('"3', 200),
        ('3"', 200),
        ('"1" "3"', 200),  # no comma between the tags
        ('"3"x', 200),
        ('*, "3"', 200),
        ('"3 "', 200),  # a space is not an etagc
        ('"03"', 200),
        ('""', 200),
        ("", 200),
        ('"1"', 200),
    ],
)
def test_if_none_match(row_at_version_3, header, status):
    client, bot = row_at_version_3
    response = client.get(ROW_URL, headers={"x-api-key": bot["apiKey"], "If-None-Match": header})
    assert response.status_code == status
    assert response.headers["ETag"] == '"3"'
    if status == 304:
        assert response.get_data() == b""
    else:
        assert response.get_json()["data"]["version"] == 3


@pytest.mark.parametrize(
    "header,status,message",
    [
        ('"3"', 200, None),
        ('"1", "3"', 200, None),
        (' "3" ', 200, None),
        ('"1",,"3"', 200, None),
        (', "3",', 200, None),
        ("*", 200, None),
        ("3", 412, NOT_A_TAG),  # not an entity-tag: before, "expected 3, found 3"
        ("W/3", 412, NOT_A_TAG),
        ('W/"3"', 412, NOT_A_TAG),  # strong comparison: a weak tag never matches
        ('w/"3"', 412, NOT_A_TAG),
        ('"1" "3"', 412, NOT_A_TAG),
        ('*, "3"', 412, NOT_A_TAG),
        ('"3"x', 412, NOT_A_TAG),
        ('""', 412, NOT_A_TAG),
        ("", 412, NOT_A_TAG),
        ('"1"', 412, "Version conflict: expected 1, found 3"),
        ('"1", "2"', 412, "Version conflict: expected 1 or 2, found 3"),
        ('W/"3", "2"', 412, "Version conflict: expected 2, found 3"),
        ('"03"', 412, "Version conflict: expected 03, found 3"),
        ('"abc"', 412, "Version conflict: expected abc, found 3"),
    ],
)
def test_delete_with_if_match(row_at_version_3, header, status, message):
    client, bot = row_at_version_3
    response = client.delete(ROW_URL, headers={"x-api-key": bot["apiKey"], "If-Match": header})
    assert response.status_code == status, response.get_json()
    if message is not None:
        assert response.get_json() == {"error": message, "code": "PRECONDITION_FAILED"}
        assert response.headers["ETag"] == '"3"'
    remaining = client.get(ROW_URL, headers={"x-api-key": bot["apiKey"]}).status_code
    assert remaining == (404 if status == 200 else 200)
