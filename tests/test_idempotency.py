"""Idempotency-Key on POST and PATCH: a repeat gets the first answer and writes nothing, on both backends,
across apps on one database and across restarts; another body gets 422, a repeat while the first runs 409."""

import threading
import time

import pytest
from conftest import execute_sql, holding_write_lock, settings_of
from spec_data import ACCOUNT_0, TICKER_AAPL

import idempotency
import keys
from app import create_app

URL = "/api/bots/b/state"


def body(**state):
    return {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": state or {"v": 1}}]}


def send(client, bot, key, json=None, method="POST", **headers):
    """A write with `key` as its Idempotency-Key (None: without one)."""
    if key is not None:
        headers[idempotency.HEADER] = key
    return client.open(
        URL, method=method, json=body() if json is None else json, headers={"x-api-key": bot["apiKey"], **headers}
    )


def stored_version(storage):
    bot_id = storage.get_bot("b")["id"]
    row = storage.get_state(bot_id, ACCOUNT_0, TICKER_AAPL)
    return None if row is None else row.version


@pytest.mark.parametrize("method", ("POST", "PATCH"))
def test_a_repeat_gets_the_first_answer_byte_for_byte_and_writes_nothing(configured, method):
    client, bot, storage = configured()
    first = send(client, bot, "order-1", method=method)
    assert first.status_code == 200 and idempotency.REPLAYED_HEADER not in first.headers
    changes = storage.count_changes()
    again = send(client, bot, "order-1", method=method)
    assert (again.status_code, again.get_data()) == (200, first.get_data())
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert again.mimetype == "application/json"
    assert stored_version(storage) == 1 and storage.count_changes() == changes
    assert send(client, bot, "order-2", method=method).get_json()["results"][0]["data"]["version"] == 2


def test_an_answer_with_failed_items_is_kept_as_it_was(configured):
    client, bot, storage = configured()
    conflicting = {"states": [{**body()["states"][0], "expectedVersion": 5}]}
    first = send(client, bot, "k", json=conflicting)
    assert first.get_json()["summary"]["failed"] == 1
    send(client, bot, None)  # the row now exists at version 1: the conflict would read "found 1"
    again = send(client, bot, "k", json=conflicting)
    assert again.get_data() == first.get_data() and "found 0" in again.get_json()["results"][0]["error"]


# One row per request that differs from the first (a POST of body()) while using its key.
DIFFERENT = (
    ("another body", {"json": body(v=2)}),
    ("the same body as PATCH", {"method": "PATCH"}),
)


@pytest.mark.parametrize(("case", "request_args"), DIFFERENT, ids=[row[0] for row in DIFFERENT])
def test_the_key_with_another_request_gets_422_and_writes_nothing(configured, case, request_args):
    client, bot, storage = configured()
    first = send(client, bot, "k")
    reused = send(client, bot, "k", **request_args)
    assert reused.status_code == 422
    assert reused.get_json() == {
        "error": "Idempotency-Key was used with a different request body",
        "code": "UNPROCESSABLE_ENTITY",
    }
    assert stored_version(storage) == 1
    assert send(client, bot, "k").get_data() == first.get_data()  # the first request's repeat still replays


# One row per header value: what it is read as (a key) or the 400 it gets.
KEYS = (
    ("a key", "abc", "abc"),
    ("a quoted string, as the IETF draft writes it", '"abc"', "abc"),
    ("escapes in a quoted string", r'"a\"b\\c"', 'a"b\\c'),
    ("spaces around it", "  abc ", "abc"),
    ("255 characters", "k" * 255, "k" * 255),
    ("256 characters", "k" * 256, idempotency.KEY_TOO_LONG),
    ("256 characters quoted", '"' + "k" * 256 + '"', idempotency.KEY_TOO_LONG),
    ("empty", "", idempotency.KEY_EMPTY),
    ("an empty quoted string, as it is", '""', '""'),
    ("only spaces", "   ", idempotency.KEY_EMPTY),
    ("not ASCII", "clé", idempotency.KEY_NOT_ASCII),
    ("a control character", "a\x7fb", idempotency.KEY_NOT_ASCII),
)


@pytest.mark.parametrize(("case", "header", "read_as"), KEYS, ids=[row[0] for row in KEYS])
def test_the_header_is_read_strictly(configured, case, header, read_as):
    client, bot, storage = configured()
    response = send(client, bot, header)
    if read_as.startswith(idempotency.HEADER):
        assert response.status_code == 400
        assert response.get_json() == {"error": read_as, "code": "BAD_REQUEST"}
        assert stored_version(storage) is None and storage.count_answers() == 0
        return
    assert response.status_code == 200
    assert send(client, bot, read_as).headers.get(idempotency.REPLAYED_HEADER) == "true"


def test_the_spec_checks_come_before_the_header(configured):
    client, _, _ = configured()
    response = client.post(URL, json=body(), headers={idempotency.HEADER: "k" * 300})
    assert (response.status_code, response.get_json()) == (
        401,
        {"message": "API key required. Include x-api-key header."},
    )
    response = client.post(URL, json=body(), headers={idempotency.HEADER: "k" * 300, "x-api-key": "wrong"})
    assert response.status_code == 403


def test_only_a_200_is_kept_so_a_refused_request_can_be_sent_again_with_its_key(configured):
    client, bot, storage = configured(BUSY_TIMEOUT_MS=50)
    assert send(client, bot, "k", json={"states": []}).status_code == 400
    with holding_write_lock(settings_of(storage)):
        assert send(client, bot, "k").status_code == 503
    assert storage.count_answers() == 0 and stored_version(storage) is None
    response = send(client, bot, "k")
    assert response.status_code == 200 and idempotency.REPLAYED_HEADER not in response.headers
    assert stored_version(storage) == 1


def test_keys_are_per_bot(configured):
    client, bot, storage = configured()
    other_key = keys.generate_key()
    storage.create_bot("other", "other", keys.hash_key(other_key))
    send(client, bot, "shared")
    response = client.post(
        "/api/bots/other/state", json=body(), headers={"x-api-key": other_key, idempotency.HEADER: "shared"}
    )
    assert response.status_code == 200 and idempotency.REPLAYED_HEADER not in response.headers
    assert response.get_json()["results"][0]["data"]["botId"] == storage.get_bot("other")["id"]


def test_the_answer_holds_across_a_restart(configured, new_database):
    client, bot, storage = configured()
    first = send(client, bot, "k")
    storage.close()
    app = create_app(settings_of(storage))
    try:
        again = send(app.test_client(), bot, "k")
        assert again.get_data() == first.get_data() and again.headers[idempotency.REPLAYED_HEADER] == "true"
    finally:
        app.extensions["botstate.storage"].close()


def test_a_revoked_key_gets_no_answer_replayed(configured):
    client, bot, storage = configured()
    send(client, bot, "k")
    storage.replace_bot_key("b", "0" * 64)
    response = send(client, bot, "k")
    assert (response.status_code, response.get_json()) == (403, {"message": "Invalid API key for this bot"})


def test_an_answer_past_its_day_is_gone_and_pruned(configured):
    client, bot, storage = configured()
    send(client, bot, "old")
    send(client, bot, "new")
    execute_sql(
        settings_of(storage),
        "UPDATE idempotent_requests SET created_at = ? WHERE idem = 'old'",
        ("2020-01-01T00:00:00.000Z",),
    )
    again = send(client, bot, "old")
    assert again.status_code == 200 and idempotency.REPLAYED_HEADER not in again.headers
    assert stored_version(storage) == 3  # written afresh, and its answer kept anew
    execute_sql(
        settings_of(storage),
        "UPDATE idempotent_requests SET created_at = ? WHERE idem = 'new'",
        ("2020-01-01T00:00:00.000Z",),
    )
    assert storage.prune_answers(batch=1) == 1
    assert storage.count_answers() == 1 and send(client, bot, "old").headers[idempotency.REPLAYED_HEADER] == "true"


def test_deleting_a_bot_deletes_its_answers(configured):
    client, bot, storage = configured()
    send(client, bot, "k")
    assert storage.count_answers(storage.get_bot("b")["id"]) == 1
    storage.delete_bot("b")
    assert storage.count_answers() == 0


def in_background(work):
    """Run work() in a thread; a function that waits for it and gives its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()

    def joined():
        thread.join(timeout=30)
        return result[0]

    return joined


def wait_until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_repeat_while_the_first_runs_gets_409_then_the_first_answer(configured):
    client, bot, storage = configured(BUSY_TIMEOUT_MS=20_000)
    app_running = client.application.extensions["botstate.idempotency"]
    with holding_write_lock(settings_of(storage)):
        first = in_background(lambda: send(client, bot, "k"))
        wait_until(lambda: app_running._held)
        repeat = send(client, bot, "k")
        assert repeat.status_code == 409 and repeat.headers["Retry-After"] == "1"
        assert repeat.get_json() == {"error": "A request with this Idempotency-Key is in progress", "code": "CONFLICT"}
        # Another body too: the first may yet fail and keep nothing, so only a kept answer can tell a 422.
        assert send(client, bot, "k", json=body(v=2)).status_code == 409
    first = first()
    assert first.status_code == 200 and stored_version(storage) == 1
    assert send(client, bot, "k").get_data() == first.get_data()


def test_two_server_processes_apply_a_key_once(configured, backend):
    """Two apps on one database, each with its own memory of running keys: the repeat sent to the
    second while the first runs gets the 409 (PostgreSQL: the key's lock) or waits its turn and
    gets the first answer (SQLite: the write lock takes them in turn)."""
    client, bot, storage = configured(BUSY_TIMEOUT_MS=20_000)
    second_app = create_app({**settings_of(storage), "BUSY_TIMEOUT_MS": 20_000})
    second = second_app.test_client()
    try:
        with holding_write_lock(settings_of(storage)):
            first = in_background(lambda: send(client, bot, "k"))
            wait_until(lambda: client.application.extensions["botstate.idempotency"]._held)
            if backend == "postgresql":
                wait_until(lambda: key_locks(storage) == 1)
                repeat = send(second, bot, "k")
                assert repeat.status_code == 409
                repeat = None
            else:
                repeat = in_background(lambda: send(second, bot, "k"))
                time.sleep(0.2)  # both wait for the write lock now
        answers = [first()] + ([] if repeat is None else [repeat()])
        assert {response.status_code for response in answers} == {200}
        assert len({response.get_data() for response in answers}) == 1
        assert stored_version(storage) == 1 and storage.count_answers() == 1
    finally:
        second_app.extensions["botstate.storage"].close()


def key_locks(storage):
    """How many Idempotency-Key locks (the two-key advisory locks) PostgreSQL holds now."""
    sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
    return execute_sql(settings_of(storage), sql)[0][0]


def test_the_answer_replays_over_http(live_server, bot, registered):
    import urllib.request

    def post(key):
        request = urllib.request.Request(
            f"{live_server.url}/api/bots/{bot['slug']}/state",
            data=b'{"states": [{"accountId": "%s", "tickerId": "%s", "state": {"v": 1}}]}'
            % (ACCOUNT_0.encode(), TICKER_AAPL.encode()),
            method="POST",
            headers={"x-api-key": bot["apiKey"], "Content-Type": "application/json", idempotency.HEADER: key},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get(idempotency.REPLAYED_HEADER), response.read()

    status, replayed, first = post("over-http")
    assert (status, replayed) == (200, None)
    assert post("over-http") == (200, "true", first)


def test_a_first_request_that_fails_leaves_the_key_free_for_another_body(configured):
    client, bot, storage = configured(BUSY_TIMEOUT_MS=50)
    with holding_write_lock(settings_of(storage)):
        assert send(client, bot, "k").status_code == 503
    assert send(client, bot, "k", json=body(v=2)).status_code == 200  # nothing was kept for the first


def test_answer_pruning_goes_on_when_pruning_the_change_log_fails(configured, monkeypatch):
    client, bot, storage = configured()
    send(client, bot, "old")
    execute_sql(settings_of(storage), "UPDATE idempotent_requests SET created_at = '2020-01-01T00:00:00.000Z'")

    def broken(**kwargs):
        raise RuntimeError("the change log is broken")

    monkeypatch.setattr(storage, "prune_changes", broken)
    storage.start_pruning(interval=0.01)
    try:
        wait_until(lambda: storage.count_answers() == 0)
    finally:
        storage.stop_pruning()


def test_a_replay_is_marked_in_the_request_log(configured, caplog):
    client, bot, _ = configured()
    send(client, bot, "k")
    caplog.clear()
    with caplog.at_level("INFO", logger="botstate"):
        send(client, bot, "k")
    [line] = [record.getMessage() for record in caplog.records if record.getMessage().startswith("POST ")]
    assert line.endswith(" replayed") and caplog.records[-1].request["replayed"] is True
