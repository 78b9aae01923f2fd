"""Writers colliding on a few keys, through real waitress servers sharing one SQLite file."""

import itertools
import json
import random
import threading

import pytest
import requests
from conftest import RELIABILITY, register_ids, run_in_threads, start_server, stop_server
from worker_processes import cpu_seconds, wait_for_workers

ACCOUNTS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
TICKERS = [f"10000000-0000-4000-8000-00000000000{i}" for i in range(2)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))


@pytest.fixture
def seeded(storage, bot):
    register_ids(storage, ACCOUNTS, TICKERS)
    return bot


def hammer(urls, api_key, threads=8, requests_per_thread=25):
    """Each thread posts 1-3 item requests round-robin over `urls`; returns every answer."""
    answers, lock = [], threading.Lock()

    def worker(number):
        session = requests.Session()
        for step in range(requests_per_thread):
            picks = [KEYS[(number + step + offset) % len(KEYS)] for offset in range(1 + step % 3)]
            states = [
                {"accountId": a, "tickerId": t, "state": {"writer": number, "step": step, "slot": i}}
                for i, (a, t) in enumerate(picks)
            ]
            url = urls[(number + step) % len(urls)]
            response = session.post(url, json={"states": states}, headers={"x-api-key": api_key}, timeout=30)
            with lock:
                answers.append((states, response.status_code, response.json()))

    run_in_threads(worker, threads, timeout=120)
    return answers


def check(answers, storage, bot):
    acknowledged = {key: [] for key in KEYS}
    for states, status, body in answers:
        assert status == 200, body
        assert body["summary"]["failed"] == 0, body
        for state in states:
            acknowledged[(state["accountId"], state["tickerId"])].append(state["state"])
    assert storage.count_states(bot["id"]) == len(KEYS)
    for (account, ticker), written in acknowledged.items():
        stored = json.loads(storage.get_state(bot["id"], account, ticker).state_json)
        assert stored in written


def test_threads_colliding_on_one_server(live_server, seeded, storage):
    url = f"{live_server.url}/api/bots/my-bot/state"
    answers = hammer([url], seeded["apiKey"])
    assert len(answers) == 8 * 25
    check(answers, storage, seeded)


def test_two_server_processes_on_one_database(live_server, database, seeded, storage):
    second, second_url, _ = start_server(database)
    try:
        urls = [f"{base}/api/bots/my-bot/state" for base in (live_server.url, second_url)]
        answers = hammer(urls, seeded["apiKey"])
    finally:
        stop_server(second)
    assert len(answers) == 8 * 25
    check(answers, storage, seeded)


def mixed_load(urls, api_key, threads=16, requests_per_thread=200, seed=5):
    """Each thread sends POSTs (1-2 items), PATCHes and GETs on KEYS; returns every (method, sent, status, body)."""
    answers, lock = [], threading.Lock()

    def worker(number):
        rng = random.Random(seed * 1000 + number)
        session = requests.Session()
        for step in range(requests_per_thread):
            url = urls[rng.randrange(len(urls))]
            method = rng.choice(("POST", "POST", "PATCH", "GET"))
            if method == "GET":
                account, ticker = rng.choice(KEYS)
                response = session.get(f"{url}/{account}/{ticker}", headers={"x-api-key": api_key}, timeout=30)
                sent = [(account, ticker)]
            else:
                picks = rng.sample(KEYS, 1 if method == "PATCH" else rng.choice((1, 2)))
                state = {f"w{number}": step} if method == "PATCH" else {"writer": number, "step": step}
                states = [{"accountId": a, "tickerId": t, "state": state} for a, t in picks]
                response = session.request(
                    method, url, json={"states": states}, headers={"x-api-key": api_key}, timeout=30
                )
                sent = states
            with lock:
                answers.append((method, sent, response.status_code, response.json()))

    run_in_threads(worker, threads, timeout=300)
    return answers


def check_versions(answers, storage, bot):
    """No 5xx; every write item succeeded; per row, acknowledged versions are 1..n exactly once,
    and the stored row is the one acknowledged last."""
    versions = {key: {} for key in KEYS}
    for method, _sent, status, body in answers:
        assert status in ((200, 404) if method == "GET" else (200,)), (method, status, body)
        if method == "GET":
            continue
        assert body["summary"]["failed"] == 0, body
        for result in body["results"]:
            data = result["data"]
            key = (data["userBrokerAccountId"], data["tickerId"])
            assert data["version"] not in versions[key], ("version given twice", key, data["version"])
            versions[key][data["version"]] = data["state"]
    for (account, ticker), written in versions.items():
        if not written:
            continue
        assert sorted(written) == list(range(1, len(written) + 1)), ("versions with gaps", account, ticker)
        row = storage.get_state(bot["id"], account, ticker)
        assert row.version == len(written)
        assert json.loads(row.state_json) == written[row.version]
    RELIABILITY["concurrent requests (16 threads)"] += len(answers)
    RELIABILITY["acknowledged versions checked for gaps"] += sum(len(written) for written in versions.values())


def test_sixteen_threads_mixing_writes_merges_and_reads(live_server, seeded, storage):
    url = f"{live_server.url}/api/bots/my-bot/state"
    answers = mixed_load([url], seeded["apiKey"])
    assert len(answers) == 16 * 200
    check_versions(answers, storage, seeded)
    assert "database is locked" not in live_server.log_path.read_text()


def test_sixteen_threads_on_two_server_processes(live_server, database, seeded, storage):
    second, second_url, second_log = start_server(database)
    try:
        urls = [f"{base}/api/bots/my-bot/state" for base in (live_server.url, second_url)]
        answers = mixed_load(urls, seeded["apiKey"], seed=6)
    finally:
        stop_server(second)
    assert len(answers) == 16 * 200
    check_versions(answers, storage, seeded)
    for log in (live_server.log_path, second_log):
        assert "database is locked" not in log.read_text()


def test_sixteen_threads_on_two_workers_of_one_server(database, seeded, storage):
    process, base_url, log_path = start_server(database, WORKERS=2)
    try:
        workers = wait_for_workers(process, 2)
        used_before = {pid: cpu_seconds(pid) for pid in workers}
        answers = mixed_load([f"{base_url}/api/bots/my-bot/state"], seeded["apiKey"], seed=7)
        used = {pid: cpu_seconds(pid) - before for pid, before in used_before.items()}
    finally:
        stop_server(process)
    assert len(answers) == 16 * 200
    assert all(seconds > 0.1 * sum(used.values()) for seconds in used.values()), used  # both workers answered
    check_versions(answers, storage, seeded)
    assert "database is locked" not in log_path.read_text()
