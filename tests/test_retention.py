"""What the change log keeps: BOTSTATE_HISTORY_DAYS and BOTSTATE_HISTORY_VERSIONS, pruning, and the 410 behind it."""

import pytest
from conftest import execute_sql, settings_of
from spec_data import ACCOUNT_0, TICKER_AAPL, TICKER_MSFT

ROW = f"state/{ACCOUNT_0}/{TICKER_AAPL}"


def write(client, bot, n):
    body = {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {"n": n}}]}
    response = client.post(f"/api/bots/{bot['slug']}/state", json=body, headers={"x-api-key": bot["apiKey"]})
    assert response.status_code == 200 and response.json["summary"]["succeeded"] == 1
    return response.json["results"][0]["data"]


def get(client, bot, path, **query):
    return client.get(f"/api/bots/{bot['slug']}/{path}", query_string=query, headers={"x-api-key": bot["apiKey"]})


def test_with_no_history_kept_only_each_rows_newest_version_stays(configured):
    client, bot, storage = configured(HISTORY_DAYS=0)
    rows = [write(client, bot, n) for n in range(4)]
    latest_seq = get(client, bot, "changes").json["nextAfter"]
    assert storage.prune_changes() == len(rows) - 1
    history = get(client, bot, f"{ROW}/history").json["data"]
    assert [(change["version"], change["state"]) for change in history] == [(rows[-1]["version"], {"n": 3})]
    assert get(client, bot, "changes", after=latest_seq).json == {"data": [], "nextAfter": latest_seq}  # kept up
    behind = get(client, bot, "changes", after=0)
    assert (behind.status_code, behind.json["code"]) == (410, "GONE")
    pruned = behind.json["error"].split("seq ")[1].split(" ")[0]
    assert behind.json["error"] == f"Changes up to seq {pruned} are no longer kept; list the states to resync"
    assert 0 < int(pruned) < latest_seq
    assert get(client, bot, "changes", after=pruned).status_code == 200


def test_versions_older_than_the_window_go_and_the_moments_before_it_say_so(configured):
    client, bot, storage = configured(HISTORY_DAYS=7)
    old = [write(client, bot, n) for n in range(3)]
    execute_sql(
        settings_of(storage), "UPDATE state_changes SET at = ? WHERE version < 3", ("2020-01-01T00:00:00.000Z",)
    )
    assert storage.prune_changes() == 1  # version 1: version 2, after it, is older than the window too
    kept = [change["version"] for change in get(client, bot, f"{ROW}/history").json["data"]]
    assert kept == [3, 2]  # version 2 was the state when the window began
    assert get(client, bot, ROW, asOf="2021-01-01T00:00:00Z").status_code == 404
    gone = get(client, bot, ROW, asOf="2019-01-01T00:00:00Z").json
    assert gone["code"] == "NOT_FOUND" and gone["error"].startswith("State history before ")
    assert gone["error"].endswith(" is no longer kept")
    assert get(client, bot, ROW, asOf=old[-1]["updatedAt"]).json["data"] == old[-1]


def test_a_cap_on_versions_keeps_each_rows_newest(configured):
    client, bot, storage = configured(HISTORY_VERSIONS=2)
    rows = [write(client, bot, n) for n in range(5)]
    assert storage.prune_changes() == 3
    history = get(client, bot, f"{ROW}/history").json["data"]
    assert [change["version"] for change in history] == [5, 4]
    assert get(client, bot, ROW, asOf=rows[0]["updatedAt"]).status_code == 404
    assert get(client, bot, ROW, asOf=rows[-1]["updatedAt"]).json["data"] == rows[-1]


def test_pruning_again_finds_nothing_more(configured):
    client, bot, storage = configured(HISTORY_DAYS=0)
    for n in range(3):
        write(client, bot, n)
    assert storage.prune_changes() == 2
    assert storage.prune_changes() == 0
    write(client, bot, 9)
    assert storage.prune_changes() == 1


def test_deleting_a_bot_deletes_its_log_and_no_seq_is_handed_out_twice(configured):
    client, bot, storage = configured()
    write(client, bot, 1)
    last = get(client, bot, "changes").json["nextAfter"]
    storage.delete_bot("b")
    assert storage.count_changes() <= 1  # at most the stand-in for the largest seq, of no bot
    import keys

    key = keys.generate_key()
    storage.create_bot("b", "b", keys.hash_key(key))
    again = {"slug": "b", "apiKey": key}
    write(client, again, 2)
    assert [change["seq"] > last for change in get(client, again, "changes").json["data"]] == [True]


def test_a_batch_undone_is_pruned_again_on_the_next_pass(configured, monkeypatch):
    client, bot, storage = configured(HISTORY_DAYS=0)
    for n in range(3):
        write(client, bot, n)
    real, failures = storage._mark_pruned, []

    def fail_once(*args):
        if not failures:
            failures.append(1)
            raise RuntimeError("the disk is full")
        return real(*args)

    monkeypatch.setattr(storage, "_mark_pruned", fail_once)
    with pytest.raises(RuntimeError):
        storage.prune_changes()
    assert storage.prune_changes() == 2  # the undone batch's entries, not skipped


def test_a_row_dated_ahead_of_the_clock_holds_no_other_row_back(configured):
    client, bot, storage = configured(HISTORY_DAYS=0)
    execute_sql(
        settings_of(storage),
        "INSERT INTO tickers (id, symbol, created_at) VALUES (?, 'MSFT', ?)",
        (TICKER_MSFT, "2026-01-01T00:00:00.000Z"),
    )
    write(client, bot, 0)
    body = {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_MSFT, "state": {"ahead": 1}}]}
    assert client.post("/api/bots/b/state", json=body, headers={"x-api-key": bot["apiKey"]}).status_code == 200
    execute_sql(
        settings_of(storage),
        "UPDATE state_changes SET at = ? WHERE ticker_id = ?",
        ("2099-01-01T00:00:00.000Z", TICKER_MSFT),
    )
    for n in range(1, 5):
        write(client, bot, n)
    storage.prune_changes()
    assert [change["version"] for change in get(client, bot, f"{ROW}/history").json["data"]] == [5]


def test_a_delete_kept_as_the_largest_goes_once_a_newer_entry_comes(configured):
    client, bot, storage = configured(HISTORY_DAYS=0)
    write(client, bot, 0)
    assert client.delete(f"/api/bots/b/{ROW}", headers={"x-api-key": bot["apiKey"]}).status_code == 200
    storage.prune_changes()
    execute_sql(
        settings_of(storage),
        "INSERT INTO tickers (id, symbol, created_at) VALUES (?, 'MSFT', ?)",
        (TICKER_MSFT, "2026-01-01T00:00:00.000Z"),
    )
    body = {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_MSFT, "state": {"other": 1}}]}
    assert client.post("/api/bots/b/state", json=body, headers={"x-api-key": bot["apiKey"]}).status_code == 200
    storage.prune_changes()
    assert get(client, bot, f"{ROW}/history").status_code == 404  # its delete, and the row, are gone
