"""The admin API under concurrency, on a real server and both backends: overlapping registrations never deadlock,
a registration racing a delete of the same row never fails, and of deletes racing each other exactly one wins."""

import re
import threading
import uuid

import pytest
import requests
from conftest import start_server, stop_server

import keys
from operations import admin_keys

ROUNDS = 3


@pytest.fixture
def admin_server(database, storage):
    """A server with metrics on, on the test's database, and an admin key's headers for it."""
    headers = {"Authorization": f"Bearer {admin_keys.create_admin_key(storage, 'races')['adminKey']}"}
    process, url, _ = start_server(database, METRICS=1)
    yield url, headers
    stop_server(process)


def at_once(*calls):
    """Run each call in a thread of its own, started together; their results, in order."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(index, call):
        barrier.wait(timeout=30)
        results[index] = call()

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def retries(url):
    """The server's botstate_database_retries_total: write transactions the database aborted (deadlocks)."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    return float(re.search(r"^botstate_database_retries_total (\S+)$", text, re.M).group(1))


@pytest.mark.parametrize("kind", ["accounts", "tickers"])
def test_the_same_items_registered_in_opposite_orders_at_once_neither_deadlock_nor_fail(admin_server, kind):
    url, headers = admin_server
    for _ in range(ROUNDS):
        ids = [str(uuid.uuid4()) for _ in range(200)]
        items = [{"id": i} for i in ids] if kind == "accounts" else [{"symbol": f"S{i[:30]}", "id": i} for i in ids]

        def register(order):
            answer = requests.post(f"{url}/api/admin/{kind}", json={kind: order}, headers=headers, timeout=60)
            return answer.status_code, answer.json()

        (first, one), (second, other) = at_once(
            lambda order=items: register(order), lambda order=items[::-1]: register(order)
        )
        assert (first, second) == (200, 200)
        assert one["summary"]["failed"] == other["summary"]["failed"] == 0
        created = [r["created"] for r in one["results"]] + [r["created"] for r in other["results"]]
        assert created.count(True) == len(items)  # each made once, found by the other
    assert retries(url) == 0  # no transaction was aborted to break a deadlock


@pytest.mark.parametrize("kind", ["accounts", "tickers"])
def test_registering_while_the_same_row_is_deleted_never_fails(admin_server, kind):
    url, headers = admin_server
    row_id = str(uuid.uuid4())
    item = {"id": row_id, "name": "n"} if kind == "accounts" else {"id": row_id, "symbol": "RACE"}
    answers = []

    def register_and_delete(times):
        for _ in range(times):
            answers.append(requests.post(f"{url}/api/admin/{kind}", json={kind: [item]}, headers=headers, timeout=30))
            answers.append(requests.delete(f"{url}/api/admin/{kind}/{row_id}", headers=headers, timeout=30))

    at_once(*[lambda: register_and_delete(20)] * 4)
    assert answers and {a.status_code for a in answers} <= {200, 404}, [a.text for a in answers if a.status_code >= 500]
    registered = [a.json()["results"][0] for a in answers if a.request.method == "POST"]
    assert all(result["status"] == "success" for result in registered), registered


@pytest.mark.parametrize("kind", ["bots", "accounts", "tickers"])
def test_of_deletes_of_one_row_at_once_exactly_one_deletes_it(admin_server, kind, storage):
    url, headers = admin_server
    for round_number in range(ROUNDS):
        if kind == "bots":
            path = f"bots/gone-{round_number}"
            storage.create_bot(f"gone-{round_number}", "gone", keys.hash_key(keys.generate_key()))
        else:
            row_id = str(uuid.uuid4())
            path = f"{kind}/{row_id}"
            body = {kind: [{"id": row_id} if kind == "accounts" else {"id": row_id, "symbol": f"G{round_number}"}]}
            requests.post(f"{url}/api/admin/{kind}", json=body, headers=headers, timeout=30).raise_for_status()
        statuses = at_once(
            *[lambda path=path: requests.delete(f"{url}/api/admin/{path}", headers=headers, timeout=30).status_code] * 6
        )
        assert sorted(statuses) == [200] + [404] * 5, statuses


def test_keys_added_or_rotated_while_their_bot_is_deleted_get_their_key_or_404(admin_server, storage):
    url, headers = admin_server
    for round_number in range(ROUNDS * 3):
        slug = f"short-lived-{round_number}"
        storage.create_bot(slug, slug, keys.hash_key(keys.generate_key()))
        calls = [lambda slug=slug: requests.delete(f"{url}/api/admin/bots/{slug}", headers=headers, timeout=30)]
        for path, body in (("keys", {"scope": "read"}), ("rotate-key", {"graceSeconds": 60}), ("revoke-key", {})) * 2:
            calls.append(
                lambda slug=slug, path=path, body=body: requests.post(
                    f"{url}/api/admin/bots/{slug}/{path}", json=body, headers=headers, timeout=30
                )
            )
        answers = at_once(*calls)
        assert {a.status_code for a in answers} <= {200, 201, 404}, [a.text for a in answers if a.status_code >= 500]
        assert answers[0].status_code == 200 and storage.get_bot(slug) is None
