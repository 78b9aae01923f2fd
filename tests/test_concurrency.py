"""Writers colliding on a few keys, through real waitress servers sharing one SQLite file."""

import itertools
import json
import threading

import pytest
import requests

from conftest import start_server, stop_server

ACCOUNTS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
TICKERS = [f"10000000-0000-4000-8000-00000000000{i}" for i in range(2)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))


@pytest.fixture
def seeded(storage, bot):
    for account in ACCOUNTS:
        storage.add_account(account, None)
    for index, ticker in enumerate(TICKERS):
        storage.add_ticker(f"T{index}", ticker)
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

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    return answers


def check(answers, storage, bot):
    acknowledged = {key: [] for key in KEYS}
    for states, status, body in answers:
        assert status == 200, body
        assert body["summary"]["failed"] == 0, body
        for state, result in zip(states, body["results"]):
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


def test_two_server_processes_on_one_database_file(live_server, seeded, storage):
    second, second_url, _ = start_server(storage.path)
    try:
        urls = [f"{base}/api/bots/my-bot/state" for base in (live_server.url, second_url)]
        answers = hammer(urls, seeded["apiKey"])
    finally:
        stop_server(second)
    assert len(answers) == 8 * 25
    check(answers, storage, seeded)
