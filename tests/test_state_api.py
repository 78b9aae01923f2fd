"""Reading, merging and deleting one state, through the Flask test client (table-driven):
GET and DELETE of one state row, PATCH (RFC 7396 merge), versions, ETags and expectedVersion.
"""

import json

import pytest
from spec_data import ACCOUNT_0, ACCOUNT_1, RFC7396_EXAMPLES, TICKER_AAPL, TICKER_MSFT, item

import keys

ROW_KEYS = ["id", "botId", "userBrokerAccountId", "tickerId", "state", "version", "createdAt", "updatedAt"]
INVALID_SLUG = "Invalid slug format. Only alphanumeric characters, hyphens, and underscores are allowed."
KEY_REQUIRED = {"message": "API key required. Include x-api-key header."}
KEY_INVALID = {"message": "Invalid API key for this bot"}
STATE_NOT_FOUND = {"error": "State not found", "code": "NOT_FOUND"}
VERSION_INVALID = "states[0].expectedVersion must be an integer from 0 to 9223372036854775807"
WRITE_METHODS = ("POST", "PATCH")


def bad_request(message):
    return {"error": message, "code": "BAD_REQUEST"}


def conflict(expected, found):
    return f"Version conflict: expected {expected}, found {found}"


# Requests


def auth(bot):
    return {"x-api-key": bot["apiKey"]}


def write(client, bot, items, method="POST"):
    """POST or PATCH these items; the response."""
    return client.open(
        f"/api/bots/{bot['slug']}/state",
        method=method,
        data=json.dumps({"states": list(items)}),
        headers=auth(bot),
    )


def write_one(client, bot, state, method="POST", account=ACCOUNT_0, ticker=TICKER_AAPL, **extra):
    """Write one item that must succeed; its `data`."""
    response = write(client, bot, [{**item(account, ticker, state), **extra}], method)
    assert response.status_code == 200, response.get_data(as_text=True)
    [result] = response.get_json()["results"]
    assert result["status"] == "success", result
    return result["data"]


def row_path(slug, account=ACCOUNT_0, ticker=TICKER_AAPL):
    return f"/api/bots/{slug}/state/{account}/{ticker}"


def get_row(client, bot, account=ACCOUNT_0, ticker=TICKER_AAPL, **headers):
    return client.get(row_path(bot["slug"], account, ticker), headers={**auth(bot), **headers})


def delete_row(client, bot, account=ACCOUNT_0, ticker=TICKER_AAPL, **headers):
    return client.delete(row_path(bot["slug"], account, ticker), headers={**auth(bot), **headers})


def stored(client, bot, account=ACCOUNT_0, ticker=TICKER_AAPL):
    """The row as GET shows it now, or None when GET says it does not exist."""
    response = get_row(client, bot, account, ticker)
    if response.status_code == 404:
        assert response.get_json() == STATE_NOT_FOUND
        return None
    assert response.status_code == 200
    return response.get_json()["data"]


def row_at_version(client, bot, version, account=ACCOUNT_0, ticker=TICKER_AAPL):
    """Write the row `version` times (none for 0); the last write's data (or None)."""
    data = None
    for n in range(1, version + 1):
        data = write_one(client, bot, {"n": n}, account=account, ticker=ticker)
    return data


def same_json(a, b):
    """Equal, key order included."""
    return json.dumps(a) == json.dumps(b)


@pytest.fixture
def other_bot(storage):
    api_key = keys.generate_key()
    created = storage.create_bot("other-bot", "Other bot", keys.hash_key(api_key))
    return {"id": created["id"], "slug": "other-bot", "apiKey": api_key}


# GET one row


def test_get_answers_the_row_in_the_documented_key_order(client, bot, registered):
    written = write_one(client, bot, {"position": "long", "qty": 100})
    response = get_row(client, bot)
    assert response.status_code == 200
    assert response.get_json() == {"data": written}
    data = response.get_json()["data"]
    assert list(data) == ROW_KEYS
    assert data["botId"] == bot["id"]
    assert (data["userBrokerAccountId"], data["tickerId"]) == (ACCOUNT_0, TICKER_AAPL)
    assert same_json(data["state"], {"position": "long", "qty": 100})
    assert data["version"] == 1


def test_etag_is_the_quoted_version(client, bot, registered):
    write_one(client, bot, {"n": 1})
    assert get_row(client, bot).headers["ETag"] == '"1"'
    write_one(client, bot, {"n": 2})
    second = get_row(client, bot)
    assert second.headers["ETag"] == '"2"'
    assert second.get_json()["data"]["version"] == 2


@pytest.mark.parametrize(
    "if_none_match,status",
    (
        ('"2"', 304),  # the current ETag
        ('"1"', 200),  # an old one
        ("*", 304),
        ('W/"2"', 304),  # If-None-Match uses weak comparison
        ('"1", "2"', 304),
        ('"3"', 200),
        ('W/"1"', 200),
    ),
)
def test_if_none_match(client, bot, registered, if_none_match, status):
    current = row_at_version(client, bot, 2)
    response = get_row(client, bot, **{"If-None-Match": if_none_match})
    assert response.status_code == status
    assert response.headers["ETag"] == '"2"'
    if status == 304:
        assert response.get_data() == b""
    else:
        assert response.get_json() == {"data": current}


def test_get_of_an_absent_row_is_404(client, bot, registered):
    write_one(client, bot, {"n": 1}, account=ACCOUNT_1, ticker=TICKER_MSFT)
    response = get_row(client, bot)
    assert response.status_code == 404
    assert response.get_json() == STATE_NOT_FOUND
    assert "ETag" not in response.headers


@pytest.mark.parametrize("method", ("GET", "DELETE"))
def test_uppercase_uuids_in_the_path_name_the_row(client, bot, registered, method):
    written = write_one(client, bot, {"n": 1})
    response = client.open(
        row_path(bot["slug"], ACCOUNT_0.upper(), TICKER_AAPL.upper()), method=method, headers=auth(bot)
    )
    assert response.status_code == 200
    assert response.get_json() == {"data": written}


@pytest.mark.parametrize("method", ("GET", "DELETE"))
@pytest.mark.parametrize(
    "account,ticker,message",
    (
        ("not-a-uuid", TICKER_AAPL, "accountId must be a valid UUID"),
        (ACCOUNT_0, "not-a-uuid", "tickerId must be a valid UUID"),
        ("x", "y", "accountId must be a valid UUID"),
        (ACCOUNT_0.replace("-", ""), TICKER_AAPL, "accountId must be a valid UUID"),
        ("{" + ACCOUNT_0 + "}", TICKER_AAPL, "accountId must be a valid UUID"),
        (ACCOUNT_0, TICKER_AAPL + "0", "tickerId must be a valid UUID"),
        (ACCOUNT_0, "g" + TICKER_AAPL[1:], "tickerId must be a valid UUID"),
    ),
)
def test_invalid_uuids_in_the_path_are_400(client, bot, registered, storage, method, account, ticker, message):
    write_one(client, bot, {"n": 1})
    response = client.open(row_path(bot["slug"], account, ticker), method=method, headers=auth(bot))
    assert response.status_code == 400
    assert response.get_json() == bad_request(message)
    assert storage.count_states() == 1


AUTH_TARGETS = {
    "POST": "/api/bots/{slug}/state",
    "PATCH": "/api/bots/{slug}/state",
    "GET": "/api/bots/{slug}/state/" + ACCOUNT_0 + "/" + TICKER_AAPL,
    "DELETE": "/api/bots/{slug}/state/" + ACCOUNT_0 + "/" + TICKER_AAPL,
}


@pytest.mark.parametrize("method", tuple(AUTH_TARGETS))
@pytest.mark.parametrize(
    "slug,key,status,expected",
    (
        ("bad.slug", "good", 400, bad_request(INVALID_SLUG)),
        ("my-bot", None, 401, KEY_REQUIRED),
        ("my-bot", "", 401, KEY_REQUIRED),
        ("my-bot", "   ", 401, KEY_REQUIRED),
        ("x", "good", 404, {"error": "Bot with slug 'x' not found", "code": "NOT_FOUND"}),
        ("my-bot", "bsk_wrong", 403, KEY_INVALID),
        ("other-bot", "good", 403, KEY_INVALID),  # my-bot's key does not open another bot
    ),
)
def test_auth_errors_are_the_same_as_for_post(client, bot, other_bot, registered, method, slug, key, status, expected):
    before = write_one(client, bot, {"n": 1})
    headers = {} if key is None else {"x-api-key": bot["apiKey"] if key == "good" else key}
    response = client.open(
        AUTH_TARGETS[method].format(slug=slug),
        method=method,
        data=json.dumps({"states": [item(state={"n": 2})]}),
        headers=headers,
    )
    assert response.status_code == status
    assert response.get_json() == expected
    assert stored(client, bot) == before


def item_answer(response):
    """(status, the one item's error or its version) of a one-item write."""
    [result] = response.get_json()["results"]
    return response.status_code, result.get("error", result.get("data", {}).get("version"))


@pytest.mark.parametrize(
    "request_, answer",
    (
        ("POST expectedVersion 2", (200, conflict(2, 0))),
        ("PATCH expectedVersion 2", (200, conflict(2, 0))),
        ("POST expectedVersion 0", (200, 1)),
        ("DELETE If-Match 2", (404, STATE_NOT_FOUND)),
        ("GET If-None-Match 2", (404, STATE_NOT_FOUND)),
    ),
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_versions_do_not_reveal_another_bots_row(client, bot, other_bot, registered, request_, answer):
    theirs = row_at_version(client, other_bot, 2)
    method, _, version = request_.split()
    if method in WRITE_METHODS:
        response = write(client, bot, [{**item(state={"probe": 1}), "expectedVersion": int(version)}], method)
        assert item_answer(response) == answer
    else:
        header = "If-Match" if method == "DELETE" else "If-None-Match"
        response = client.open(row_path(bot["slug"]), method=method, headers={**auth(bot), header: f'"{version}"'})
        assert (response.status_code, response.get_json()) == answer
    assert stored(client, other_bot) == theirs


def test_another_bots_row_is_invisible(client, bot, other_bot, registered):
    write_one(client, other_bot, {"owner": "other"})
    response = get_row(client, bot)
    assert response.status_code == 404
    assert response.get_json() == STATE_NOT_FOUND
    # ...and the same key is a separate row for each bot.
    mine = write_one(client, bot, {"owner": "me"})
    theirs = stored(client, other_bot)
    assert mine["version"] == 1 and mine["id"] != theirs["id"]
    assert theirs["state"] == {"owner": "other"} and theirs["botId"] == other_bot["id"]
    assert stored(client, bot) == mine


# PATCH: RFC 7396 merge


@pytest.mark.parametrize("original,patch,result", RFC7396_EXAMPLES)
def test_patch_is_an_rfc7396_merge(client, bot, registered, original, patch, result):
    write_one(client, bot, original)
    merged = write_one(client, bot, patch, method="PATCH")
    assert merged["state"] == result and same_json(merged["state"], result)
    assert merged["version"] == 2
    assert stored(client, bot) == merged


@pytest.mark.parametrize(
    "patch,result",
    (
        ({"a": 1}, {"a": 1}),
        ({"a": None}, {}),
        ({"a": 1, "b": None, "c": {"d": None, "e": 2}}, {"a": 1, "c": {"e": 2}}),
        ({"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ({"a": [None, {"b": None}]}, {"a": [None, {"b": None}]}),  # arrays replace as they are
        ({}, {}),
    ),
)
def test_patch_of_a_missing_row_applies_to_an_empty_object(client, bot, registered, patch, result):
    created = write_one(client, bot, patch, method="PATCH")
    assert same_json(created["state"], result)
    assert created["version"] == 1
    assert stored(client, bot) == created


def test_patch_keeps_existing_keys_in_order_and_appends_new_ones(client, bot, registered):
    write_one(client, bot, {"z": 1, "a": 2, "m": {"y": 1, "b": 2}, "gone": 0})
    response = write(
        client, bot, [item(state={"new": 4, "a": 20, "m": {"c": 3, "y": 10}, "gone": None, "b": 5})], "PATCH"
    )
    expected = {"z": 1, "a": 20, "m": {"y": 10, "b": 2, "c": 3}, "new": 4, "b": 5}
    assert '"state":{"z":1,"a":20,"m":{"y":10,"b":2,"c":3},"new":4,"b":5}' in response.get_data(as_text=True)
    assert same_json(stored(client, bot)["state"], expected)


POSITION = {
    "position": "long",
    "entryPrice": 150.25,
    "quantity": 100,
    "stopLoss": 145.0,
    "takeProfit": 160.0,
    "openedAt": "2026-11-24T14:30:00.000Z",
}
END_OF_DAY = {"endOfDayPrice": 152.5, "unrealizedPnl": 225.0, "lastUpdate": "2026-11-24T21:00:00.000000"}


@pytest.mark.parametrize(
    "method,result",
    (
        ("PATCH", {**POSITION, **END_OF_DAY}),  # the position survives the end-of-day update
        ("POST", END_OF_DAY),  # POST still replaces the whole state
    ),
)
def test_spec_end_of_day_update(client, bot, registered, method, result):
    write_one(client, bot, POSITION)
    data = write_one(client, bot, END_OF_DAY, method=method)
    assert same_json(data["state"], result)
    assert same_json(stored(client, bot)["state"], result)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_post_and_patch_answer_the_same_shape_with_versions(client, bot, registered, method):
    bodies = []
    for n in (1, 2):
        response = write(client, bot, [item(state={"n": n})], method)
        assert response.status_code == 200
        bodies.append(response.get_json())
    first, second = (body["results"][0]["data"] for body in bodies)
    for body, data, version in ((bodies[0], first, 1), (bodies[1], second, 2)):
        assert body == {
            "success": True,
            "summary": {"total": 1, "succeeded": 1, "failed": 0},
            "results": [
                {"status": "success", "data": data, "accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "index": 0}
            ],
        }
        assert list(data) == ROW_KEYS
        assert data["version"] == version
        assert data["state"] == {"n": version}
        assert (data["botId"], data["userBrokerAccountId"], data["tickerId"]) == (bot["id"], ACCOUNT_0, TICKER_AAPL)
    assert (second["id"], second["createdAt"]) == (first["id"], first["createdAt"])
    assert second["updatedAt"] >= first["updatedAt"]


def test_every_post_and_patch_adds_one_to_the_version(client, bot, registered):
    for version, method in enumerate(("POST", "PATCH", "PATCH", "POST", "PATCH"), start=1):
        data = write_one(client, bot, {"step": version}, method=method)
        assert data["version"] == version
        response = get_row(client, bot)
        assert response.headers["ETag"] == f'"{version}"'
        assert response.get_json()["data"] == data


# expectedVersion


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize(
    "writes_before,expected,error,version_after",
    (
        (0, None, None, 1),  # no expectedVersion: last write wins
        (3, None, None, 4),
        (0, 0, None, 1),  # 0: create only
        (1, 0, conflict(0, 1), 1),
        (1, 1, None, 2),  # the right version
        (2, 2, None, 3),
        (2, 5, conflict(5, 2), 2),  # a wrong version
        (2, 1, conflict(1, 2), 2),
        (0, 3, conflict(3, 0), 0),  # a version of a row that does not exist
        (0, 1, conflict(1, 0), 0),
    ),
)
def test_expected_version(client, bot, registered, method, writes_before, expected, error, version_after):
    before = row_at_version(client, bot, writes_before)
    sent = item(state={"n": "new"})
    if expected is not None:
        sent["expectedVersion"] = expected
    response = write(client, bot, [sent], method)
    assert response.status_code == 200
    [result] = response.get_json()["results"]
    after = stored(client, bot)
    if error is None:
        assert result["status"] == "success"
        assert result["data"]["version"] == version_after
        assert result["data"]["state"] == {"n": "new"}
        assert after == result["data"]
    else:
        assert result == {
            "status": "error",
            "error": error,
            "accountId": ACCOUNT_0,
            "tickerId": TICKER_AAPL,
            "index": 0,
            "code": "VERSION_CONFLICT",
            "currentVersion": version_after,  # what is stored: the version to retry with
        }
        assert after == before  # nothing of the item was written
        assert (after or {"version": 0})["version"] == version_after


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_a_version_conflict_fails_alone(client, bot, registered, method):
    before = row_at_version(client, bot, 2)
    items = [
        item(ACCOUNT_1, TICKER_MSFT, {"n": "first"}),
        {**item(state={"n": "conflict"}), "expectedVersion": 5},
        {**item(ACCOUNT_0, TICKER_MSFT, {"n": "third"}), "expectedVersion": 0},
    ]
    body = write(client, bot, items, method).get_json()
    assert body["summary"] == {"total": 3, "succeeded": 2, "failed": 1}
    assert [r["status"] for r in body["results"]] == ["success", "error", "success"]
    assert body["results"][1] == {
        "status": "error",
        "error": conflict(5, 2),
        "accountId": ACCOUNT_0,
        "tickerId": TICKER_AAPL,
        "index": 1,
        "code": "VERSION_CONFLICT",
        "currentVersion": 2,
    }
    assert stored(client, bot) == before
    assert stored(client, bot, ACCOUNT_1, TICKER_MSFT)["state"] == {"n": "first"}
    assert stored(client, bot, ACCOUNT_0, TICKER_MSFT)["state"] == {"n": "third"}


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize(
    "value",
    (-1, "1", "0", True, False, 1.5, 2**63, 1e20, 1e300, [1], {"v": 1}),
    ids=repr,
)
def test_invalid_expected_versions_are_400(client, bot, registered, storage, method, value):
    response = write(client, bot, [{**item(), "expectedVersion": value}], method)
    assert response.status_code == 400
    assert response.get_json() == bad_request(VERSION_INVALID)
    assert storage.count_states() == 0


@pytest.mark.parametrize("method", WRITE_METHODS)
@pytest.mark.parametrize(
    "writes_before,expected,version_after",
    ((5, 5.0, 6), (0, 0.0, 1), (1, 1.0, 2), (2, 2**63 - 1, None)),
    ids=("5.0", "0.0", "1.0", "max"),
)
def test_integral_expected_versions_are_accepted(
    client, bot, registered, method, writes_before, expected, version_after
):
    row_at_version(client, bot, writes_before)
    response = write(client, bot, [{**item(state={"n": "new"}), "expectedVersion": expected}], method)
    assert response.status_code == 200
    [result] = response.get_json()["results"]
    if version_after is None:  # valid but not the stored version: a conflict, not a 400
        assert result["error"] == conflict(expected, writes_before)
    else:
        assert result["status"] == "success"
        assert result["data"]["version"] == version_after


# DELETE


def test_delete_answers_the_deleted_row_then_it_is_gone(client, bot, registered, storage):
    write_one(client, bot, {"n": 1})
    row = stored(client, bot)
    response = delete_row(client, bot)
    assert response.status_code == 200
    assert response.get_json() == {"data": row}
    assert list(response.get_json()["data"]) == ROW_KEYS
    assert stored(client, bot) is None
    again = delete_row(client, bot)
    assert again.status_code == 404
    assert again.get_json() == STATE_NOT_FOUND
    assert storage.count_states() == 0


def test_delete_removes_only_the_named_row(client, bot, registered, storage):
    write_one(client, bot, {"n": 1})
    kept = write_one(client, bot, {"n": 2}, account=ACCOUNT_1, ticker=TICKER_MSFT)
    assert delete_row(client, bot).status_code == 200
    assert stored(client, bot, ACCOUNT_1, TICKER_MSFT) == kept
    assert storage.count_states() == 1


def test_a_row_written_after_delete_starts_again_at_version_1(client, bot, registered):
    row_at_version(client, bot, 3)
    assert delete_row(client, bot).status_code == 200
    data = write_one(client, bot, {"n": "again"}, expectedVersion=0)
    assert data["version"] == 1


@pytest.mark.parametrize(
    "if_match,status,message",
    (
        ('"3"', 200, None),  # the current ETag
        ("*", 200, None),
        ('"1", "3"', 200, None),  # one of the tags matches
        ('"7"', 412, conflict(7, 3)),
        ('"2"', 412, conflict(2, 3)),
        ('"1", "2"', 412, None),
        ('W/"3"', 412, None),  # If-Match uses strong comparison: a weak tag never matches
        ('""', 412, None),  # the empty tag
        ("abc", 412, None),
        ('"abc"', 412, None),
        ('"99999999999999999999999"', 412, None),
        ('"-3"', 412, None),
        ('"03"', 412, None),  # entity tags compare as strings: "03" is not "3"
        ('"\u00b3"', 412, None),  # superscript three: str.isdigit() says yes, int() says no
        ("W/", 412, None),
        ('"', 412, None),  # malformed: not "*" nor a list of tags, so the condition is false
        ('"3', 412, None),
    ),
)
def test_delete_with_if_match(client, bot, registered, if_match, status, message):
    current = row_at_version(client, bot, 3)
    response = delete_row(client, bot, **{"If-Match": if_match})
    assert response.status_code == status
    if status == 200:
        assert response.get_json() == {"data": current}
        assert stored(client, bot) is None
    else:
        body = response.get_json()
        assert body["code"] == "PRECONDITION_FAILED"
        assert body["error"].startswith("Version conflict: expected ")
        assert body["error"].endswith(", found 3")
        if message is not None:
            assert body == {"error": message, "code": "PRECONDITION_FAILED"}
        assert response.headers["ETag"] == '"3"'
        assert stored(client, bot) == current


def test_if_match_on_an_absent_row_is_404(client, bot, registered):
    response = delete_row(client, bot, **{"If-Match": '"1"'})
    assert response.status_code == 404
    assert response.get_json() == STATE_NOT_FOUND


@pytest.mark.parametrize("if_match", (None, "*", '"1"'))
def test_another_bots_row_cannot_be_deleted(client, bot, other_bot, registered, if_match):
    theirs = write_one(client, other_bot, {"owner": "other"})
    headers = {} if if_match is None else {"If-Match": if_match}
    response = delete_row(client, bot, **headers)
    assert response.status_code == 404
    assert response.get_json() == STATE_NOT_FOUND
    assert stored(client, other_bot) == theirs


def test_deleting_a_bot_leaves_no_state_rows(client, bot, other_bot, registered, storage):
    write_one(client, bot, {"n": 1})
    write_one(client, bot, {"n": 2}, account=ACCOUNT_1, ticker=TICKER_MSFT)
    theirs = write_one(client, other_bot, {"owner": "other"})
    assert storage.count_states(bot["id"]) == 2
    storage.delete_bot(bot["slug"])
    assert storage.count_states(bot["id"]) == 0
    assert storage.count_states() == 1
    assert stored(client, other_bot) == theirs
