"""Per-item results carry fields beside the spec's: `index` on every result, and on a failure a
`code` for programs (a version conflict also carries `currentVersion`)."""

import pytest
from conftest import execute_sql
from spec_data import ACCOUNT_1, ACCOUNT_2, TICKER_MSFT, TICKER_UNKNOWN, item
from test_storage import REFUSE_BOOM

import schemas


def make_boom_fail(database, backend):
    for statement in REFUSE_BOOM[backend]:
        execute_sql(database, statement)


# One row per code: the item that fails, what the database needs first, and the fields beside `error`.
FAILURES = (
    ("TICKER_NOT_FOUND", item(ticker=TICKER_UNKNOWN), None, {}),
    ("ACCOUNT_NOT_FOUND", item(account=ACCOUNT_2), None, {}),
    ("VERSION_CONFLICT", {**item(), "expectedVersion": 7}, None, {"currentVersion": 1}),
    ("VERSION_CONFLICT", {**item(ticker=TICKER_MSFT), "expectedVersion": 3}, None, {"currentVersion": 0}),  # no row
    ("STATE_TOO_LARGE", item(state={"blob": "x" * 70_000}), None, {}),
    ("INTERNAL_ERROR", item(state={"v": "boom"}), make_boom_fail, {}),
)


def test_every_code_has_a_row():
    assert sorted({code for code, *_ in FAILURES}) == sorted(schemas.ITEM_ERROR_CODES)


@pytest.mark.parametrize("method", ("POST", "PATCH"))
@pytest.mark.parametrize(("code", "failing", "prepare", "extra"), FAILURES, ids=[row[0] for row in FAILURES])
def test_a_failed_item_carries_its_code_and_every_result_its_index(
    client, bot, registered, database, backend, method, code, failing, prepare, extra
):
    headers = {"x-api-key": bot["apiKey"]}
    url = f"/api/bots/{bot['slug']}/state"
    assert client.post(url, json={"states": [item(state={"v": 1})]}, headers=headers).status_code == 200
    if prepare is not None:
        prepare(database, backend)
    body = {"states": [item(ACCOUNT_1, TICKER_MSFT, {"v": "first"}), failing, item(ACCOUNT_1, TICKER_MSFT, {"v": 3})]}
    results = client.open(url, method=method, json=body, headers=headers).get_json()["results"]
    assert [result["index"] for result in results] == [0, 1, 2]
    assert [result["status"] for result in results] == ["success", "error", "success"]
    failed = results[1]
    assert {key: failed[key] for key in failed if key not in ("status", "error", "accountId", "tickerId", "index")} == {
        "code": code,
        **extra,
    }
    assert list(failed)[:5] == ["status", "error", "accountId", "tickerId", "index"]  # the spec's fields come first
