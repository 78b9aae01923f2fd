"""The change log: every write and delete appends entries, the feed hands them out once in order,
history and as-of reads answer from them."""

import threading
import time

import pytest
from conftest import POSTGRES_ONLY
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, item


def headers(bot):
    return {"x-api-key": bot["apiKey"]}


def post(client, bot, *items, method="post"):
    response = getattr(client, method)("/api/bots/my-bot/state", json={"states": list(items)}, headers=headers(bot))
    assert response.status_code == 200, response.json
    return response.json["results"]


def changes(client, bot, after=0, **query):
    response = client.get("/api/bots/my-bot/changes", query_string={"after": after, **query}, headers=headers(bot))
    assert response.status_code == 200, response.json
    return response.json


def feed(client, bot, **query):
    """Every change of the bot, read from 0 a page at a time as a reader would."""
    seen, after = [], 0
    while True:
        page = changes(client, bot, after, **query)
        if not page["data"]:
            return seen, page["nextAfter"]
        seen += page["data"]
        after = page["nextAfter"]


def test_each_write_and_delete_is_one_entry_in_commit_order(client, bot, registered):
    post(client, bot, item(state={"n": 1}), item(ACCOUNT_1, TICKER_MSFT, {"n": 2}))
    post(client, bot, item(state={"m": 3}), method="patch")
    assert client.delete(f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}", headers=headers(bot)).status_code == 200
    seen, next_after = feed(client, bot)
    assert [(c["op"], c["accountId"], c["version"], c.get("state")) for c in seen] == [
        ("upsert", ACCOUNT_0, 1, {"n": 1}),
        ("upsert", ACCOUNT_1, 1, {"n": 2}),
        ("upsert", ACCOUNT_0, 2, {"n": 1, "m": 3}),  # the stored state, not the patch
        ("delete", ACCOUNT_0, 2, None),
    ]
    seqs = [c["seq"] for c in seen]
    assert seqs == sorted(set(seqs)) and next_after == seqs[-1]
    assert all(c["tickerId"] in (TICKER_AAPL, TICKER_MSFT) and c["at"].endswith("Z") for c in seen)


def test_a_poll_with_nothing_new_answers_where_it_was(client, bot, registered):
    post(client, bot, item())
    _, next_after = feed(client, bot)
    assert changes(client, bot, next_after) == {"data": [], "nextAfter": next_after}


def test_pages_of_the_feed_neither_skip_nor_repeat(client, bot, registered):
    for n in range(7):
        post(client, bot, item(state={"n": n}))
    one_page = changes(client, bot, limit=1000)["data"]
    seen, after = [], 0
    while page := changes(client, bot, after, limit=3)["data"]:
        seen += page
        after = page[-1]["seq"]
    assert seen == one_page and [c["state"]["n"] for c in seen] == list(range(7))


@pytest.mark.parametrize("field,value", (("accountId", ACCOUNT_1), ("tickerId", TICKER_MSFT)))
def test_the_feed_filters_by_account_or_ticker(client, bot, registered, field, value):
    post(client, bot, item(), item(ACCOUNT_1, TICKER_MSFT), item(ACCOUNT_0, TICKER_MSFT))
    seen, _ = feed(client, bot, **{field: value})
    assert seen and all(c[field] == value for c in seen)
    assert len(seen) == len([c for c in feed(client, bot)[0] if c[field] == value])


def test_a_bot_never_sees_another_bots_changes(client, bot, registered, storage):
    import keys

    other_key = keys.generate_key()
    storage.create_bot("other-bot", "Other", keys.hash_key(other_key))
    response = client.post(
        "/api/bots/other-bot/state", json={"states": [item(state={"secret": 1})]}, headers={"x-api-key": other_key}
    )
    assert response.status_code == 200
    post(client, bot, item(state={"mine": 1}))
    seen, _ = feed(client, bot)
    assert [c["state"] for c in seen] == [{"mine": 1}]
    for path, query in (
        ("changes", {}),
        (f"state/{ACCOUNT_0}/{TICKER_AAPL}/history", {}),
        (f"state/{ACCOUNT_0}/{TICKER_AAPL}", {"asOf": "2999-01-01T00:00:00Z"}),
    ):
        other = client.get(f"/api/bots/other-bot/{path}", query_string=query, headers=headers(bot))
        assert (other.status_code, other.json) == (403, {"message": "Invalid API key for this bot"}), path
    mine = client.get(
        f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}",
        query_string={"asOf": "2999-01-01T00:00:00Z"},
        headers=headers(bot),
    )
    assert mine.json["data"]["state"] == {"mine": 1}


def test_history_lists_the_rows_versions_newest_first_with_its_delete(client, bot, registered):
    for n in range(3):
        post(client, bot, item(state={"n": n}))
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}"
    assert client.delete(path, headers=headers(bot)).status_code == 200
    whole = client.get(f"{path}/history", headers=headers(bot)).json
    assert [(c["op"], c["version"]) for c in whole["data"]] == [
        ("delete", 3),
        ("upsert", 3),
        ("upsert", 2),
        ("upsert", 1),
    ]
    assert whole["nextBefore"] is None
    seen, before = [], None
    while True:
        query = {"limit": 1} if before is None else {"limit": 1, "before": before}
        page = client.get(f"{path}/history", query_string=query, headers=headers(bot)).json
        seen += page["data"]
        if page["nextBefore"] is None:
            break
        before = page["nextBefore"]
    assert seen == whole["data"]


def test_a_row_created_again_has_a_history_of_its_own(client, bot, registered):
    post(client, bot, item(state={"first": 1}))
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}"
    client.delete(path, headers=headers(bot))
    post(client, bot, item(state={"second": 1}))
    history = client.get(f"{path}/history", headers=headers(bot)).json["data"]
    assert [(c["op"], c["version"], c["state"]) for c in history] == [("upsert", 1, {"second": 1})]


def test_history_of_a_row_that_never_was_is_404(client, bot, registered):
    response = client.get(f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}/history", headers=headers(bot))
    assert (response.status_code, response.json) == (404, {"error": "State not found", "code": "NOT_FOUND"})


def test_as_of_answers_at_the_exact_time_of_a_version_a_millisecond_before_and_before_the_first(
    client, bot, registered
):
    written = [post(client, bot, item(state={"n": n}))[0]["data"] for n in range(3)]
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}"

    def as_of(at):
        return client.get(path, query_string={"asOf": at}, headers=headers(bot))

    for version in written:
        exact = as_of(version["updatedAt"])
        assert exact.status_code == 200 and exact.json["data"]["version"] >= version["version"]
    second = written[1]
    before_second = as_of(millisecond_before(second["updatedAt"]))
    if second["updatedAt"] != written[0]["updatedAt"]:
        assert before_second.json["data"] == written[0]
    assert as_of(written[-1]["updatedAt"]).json["data"] == written[-1]
    first = as_of(millisecond_before(written[0]["createdAt"]))
    assert (first.status_code, first.json) == (404, {"error": "State not found", "code": "NOT_FOUND"})


def test_as_of_a_deleted_row_is_404_and_before_the_delete_is_the_row(client, bot, registered):
    row = post(client, bot, item())[0]["data"]
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}"
    client.delete(path, headers=headers(bot))
    deleted_at = feed(client, bot)[0][-1]["at"]
    gone = client.get(path, query_string={"asOf": deleted_at}, headers=headers(bot))
    assert gone.status_code == 404
    if deleted_at != row["updatedAt"]:
        assert client.get(path, query_string={"asOf": row["updatedAt"]}, headers=headers(bot)).json["data"] == row


@pytest.mark.parametrize(
    "path,query,message",
    (
        ("changes", {"after": "-1"}, "after must be an integer from 0 to 9223372036854775807"),
        ("changes", {"after": "01"}, "after must be an integer from 0 to 9223372036854775807"),
        ("changes", {"after": "9223372036854775808"}, "after must be an integer from 0 to 9223372036854775807"),
        ("changes", {"limit": "0"}, "limit must be an integer from 1 to 1000"),
        ("changes", {"accountId": "x"}, "accountId must be a valid UUID"),
        (
            f"state/{ACCOUNT_0}/{TICKER_AAPL}/history",
            {"before": "0"},
            "before must be an integer from 1 to 9223372036854775807",
        ),
        (f"state/{ACCOUNT_0}/{TICKER_AAPL}/history", {"limit": "1001"}, "limit must be an integer from 1 to 1000"),
        (
            f"state/{ACCOUNT_0}/{TICKER_AAPL}",
            {"asOf": "yesterday"},
            "asOf must be an RFC 3339 date-time, e.g. 2026-11-24T21:00:00Z",
        ),
    ),
)
def test_bad_queries_are_400_naming_the_parameter(client, bot, registered, path, query, message):
    response = client.get(f"/api/bots/my-bot/{path}", query_string=query, headers=headers(bot))
    assert (response.status_code, response.json) == (400, {"error": message, "code": "BAD_REQUEST"})


def millisecond_before(stamp):
    """The stored time form one millisecond earlier."""
    import datetime

    moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ") - datetime.timedelta(milliseconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@POSTGRES_ONLY  # SQLite's writers take turns, so its seqs commit in order
def test_a_writer_that_commits_last_with_a_lower_seq_is_still_seen(client, bot, registered, database):
    import psycopg

    post(client, bot, item(state={"n": 0}))
    _, after = feed(client, bot)
    with psycopg.connect(database["DATABASE_URL"]) as slow:  # a transaction, held open on purpose
        slow.execute(
            "UPDATE user_bot_states SET state = '{\"slow\": 1}', version = version + 1"
            " WHERE user_broker_account_id = %s AND ticker_id = %s",
            [ACCOUNT_0, TICKER_AAPL],
        )
        (slow_seq,) = slow.execute("SELECT max(seq) FROM state_changes").fetchone()
        post(client, bot, item(ACCOUNT_1, TICKER_MSFT, {"fast": 1}))  # a higher seq, committed first
        waiting = changes(client, bot, after)
        assert waiting == {"data": [], "nextAfter": after}  # not past the slow writer's seq
        slow.commit()
    seen = changes(client, bot, after)["data"]
    assert [(c["seq"] == slow_seq, c.get("state")) for c in seen] == [(True, {"slow": 1}), (False, {"fast": 1})]
    assert seen[0]["seq"] < seen[1]["seq"]


def test_the_cli_shows_a_rows_history_newest_first(client, bot, registered, runner):
    for n in range(2):
        post(client, bot, item(state={"n": n}))
    args = ["states", "history", "my-bot", "--account", ACCOUNT_0, "--ticker", "AAPL"]
    shown = runner.invoke(args=[*args, "--json"])
    assert shown.exit_code == 0, shown.output
    import json

    assert [(c["version"], c["state"]) for c in json.loads(shown.output)] == [(2, {"n": 1}), (1, {"n": 0})]
    table = runner.invoke(args=args).stdout.splitlines()
    assert table[0].split() == ["SEQ", "OP", "VERSION", "AT", "STATE"]
    assert [line.split()[1:3] for line in table[1:]] == [["upsert", "2"], ["upsert", "1"]]
    assert runner.invoke(args=[*args[:3], "--account", ACCOUNT_0, "--ticker", "NOPE"]).exit_code == 1


def test_as_of_finds_a_row_deleted_and_created_again_as_it_was_in_each_life(client, bot, registered):
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}"
    first = post(client, bot, item(state={"life": 1}))[0]["data"]
    time.sleep(0.002)
    client.delete(path, headers=headers(bot))
    time.sleep(0.002)
    second = post(client, bot, item(state={"life": 2}))[0]["data"]
    deleted_at = [c["at"] for c in feed(client, bot)[0] if c["op"] == "delete"][0]

    def as_of(at):
        return client.get(path, query_string={"asOf": at}, headers=headers(bot))

    assert as_of(first["updatedAt"]).json["data"] == first
    assert as_of(deleted_at).status_code == 404
    assert as_of(second["updatedAt"]).json["data"] == second
    assert first["id"] != second["id"]


def test_a_reader_past_every_seq_handed_out_is_told_to_resync(client, bot, registered):
    post(client, bot, item())
    _, last = feed(client, bot)
    ahead = client.get("/api/bots/my-bot/changes", query_string={"after": last + 1}, headers=headers(bot))
    assert (ahead.status_code, ahead.json) == (
        410,
        {"error": f"No change has a seq past {last}; list the states to resync", "code": "GONE"},
    )


def test_history_pages_stay_whole_after_an_import_took_a_row_back(client, bot, registered, storage, runner, tmp_path):
    for n in range(3):
        post(client, bot, item(state={"n": n}))
    exported = tmp_path / "older.jsonl"
    assert runner.invoke(args=["states", "export", "-o", str(exported)]).exit_code == 0
    for n in range(3, 6):
        post(client, bot, item(state={"n": n}))
    assert runner.invoke(args=["states", "import", str(exported)]).exit_code == 0
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}/history"
    whole = client.get(path, headers=headers(bot)).json["data"]
    seen, before = [], None
    while True:
        page = client.get(
            path, query_string={"limit": 1, **({} if before is None else {"before": before})}, headers=headers(bot)
        ).json
        seen += page["data"]
        if page["nextBefore"] is None:
            break
        before = page["nextBefore"]
    assert seen == whole and len({c["seq"] for c in seen}) == len(seen)
    assert whole[0]["state"] == {"n": 2} and whole[0]["version"] == 3  # the row as imported, its history anew


def test_as_of_a_moment_the_row_existed_but_was_not_logged_says_it_is_not_kept(client, bot, registered, database):
    from conftest import execute_sql

    row = post(client, bot, item())[0]["data"]
    # As a row carried over by the migration: its first logged version is later than its creation.
    execute_sql(database, "UPDATE user_bot_states SET created_at = ?", ("2020-01-01T00:00:00.000Z",))
    execute_sql(database, "UPDATE state_changes SET created_at = ?", ("2020-01-01T00:00:00.000Z",))
    path = f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}"
    answer = client.get(path, query_string={"asOf": "2021-01-01T00:00:00Z"}, headers=headers(bot))
    assert answer.status_code == 404
    assert answer.json["error"] == f"State history before {row['updatedAt']} is no longer kept"


@POSTGRES_ONLY  # SQLite's writers take turns
def test_a_row_created_while_its_delete_runs_comes_after_the_delete_in_the_feed(client, bot, registered, database):
    import psycopg

    post(client, bot, item(state={"n": 1}))
    _, after = feed(client, bot)
    # Between the row's removal and the log's entry for it, a second: a trigger that runs first.
    with psycopg.connect(database["DATABASE_URL"], autocommit=True) as setup:
        setup.execute(
            "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(1); RETURN OLD; END $$"
        )
        setup.execute(
            "CREATE TRIGGER a_slow_delete AFTER DELETE ON user_bot_states FOR EACH ROW EXECUTE FUNCTION slow_delete()"
        )

    def delete():  # as delete_state does it: the row's lock, then the delete
        with psycopg.connect(database["DATABASE_URL"]) as conn:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"{bot['id']}/{ACCOUNT_0}/{TICKER_AAPL}"]
            )
            conn.execute(
                "DELETE FROM user_bot_states WHERE user_broker_account_id = %s AND ticker_id = %s",
                [ACCOUNT_0, TICKER_AAPL],
            )

    deleting = threading.Thread(target=delete)
    deleting.start()
    time.sleep(0.3)
    post(client, bot, item(state={"n": "again"}))  # a lone write of the same row, while the delete runs
    deleting.join(timeout=10)
    seen = [(c["op"], c["version"]) for c in changes(client, bot, after)["data"]]
    assert seen == [("delete", 1), ("upsert", 1)]
