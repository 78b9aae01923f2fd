"""kill -9 of the server while clients write: no acknowledged write is lost, the file stays sound."""

import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time

import pytest
import requests
from conftest import RELIABILITY, register_ids, start_server, stored_rows
from worker_processes import wait_for_workers, worker_pids

ACCOUNTS = [f"20000000-0000-4000-8000-00000000000{i}" for i in range(4)]
TICKERS = [f"30000000-0000-4000-8000-00000000000{i}" for i in range(3)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))
# Kills per run: a few in `make test`, as many as SOAK_ROUNDS says in `make soak`.
ROUNDS = int(os.environ.get("SOAK_ROUNDS", "6"))
WRITERS = 4


@pytest.fixture
def seeded(storage, bot):
    register_ids(storage, ACCOUNTS, TICKERS, symbol_prefix="C")
    return bot


def write_until_refused(url, api_key, writer, acknowledged, lock, rng):
    """POST 1- or 5-item writes until the server is gone; note each acknowledged (version, state)."""
    session = requests.Session()
    for step in itertools.count():
        picks = rng.sample(KEYS, 1 if step % 3 else 5)
        states = [{"accountId": a, "tickerId": t, "state": {"writer": writer, "step": step}} for a, t in picks]
        try:
            response = session.post(url, json={"states": states}, headers={"x-api-key": api_key}, timeout=10)
            body = response.json()
        except (requests.RequestException, ValueError):
            return  # killed mid-request: that write was never acknowledged
        assert response.status_code == 200, body
        with lock:
            for sent, result in zip(states, body["results"], strict=False):
                assert result["status"] == "success", result
                key = (sent["accountId"], sent["tickerId"])
                acknowledged.setdefault(key, {})[result["data"]["version"]] = sent["state"]


def kill_9(process):
    """SIGKILL the server: its workers first, if it has any, then the process itself."""
    for pid in [*worker_pids(process), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", (1, 2))
def test_kill_9_while_writing_loses_no_acknowledged_write(database, storage, seeded, workers):
    path = database
    storage.close()
    rng = random.Random(20261125 + workers)
    acknowledged, lock = {}, threading.Lock()
    for round_number in range(ROUNDS):
        process, base_url, _ = start_server(path, WORKERS=workers)
        if workers > 1:
            wait_for_workers(process, workers)
        url = f"{base_url}/api/bots/my-bot/state"
        writers = [
            threading.Thread(
                target=write_until_refused,
                args=(url, seeded["apiKey"], w, acknowledged, lock, random.Random(rng.random())),
            )
            for w in range(WRITERS)
        ]
        for thread in writers:
            thread.start()
        time.sleep(rng.uniform(0.3, 1.2))
        kill_9(process)  # no handler runs, nothing is flushed or checkpointed
        process.wait()
        for thread in writers:
            thread.join(timeout=30)
        rows, integrity = stored_rows(path, seeded["id"])
        assert integrity == "ok", f"round {round_number}"
        for key, versions in acknowledged.items():
            latest = max(versions)
            version, state = rows[key]
            # Every write of a key adds one to its version: an acknowledged write that
            # was lost would leave the stored version below the acknowledged one.
            assert version >= latest, (round_number, key)
            if version == latest:
                assert json.loads(state) == versions[latest]
        RELIABILITY["kill -9 while writing"] += 1
    written = sum(len(v) for v in acknowledged.values())
    assert written > ROUNDS * 20  # the writers did write
    RELIABILITY["acknowledged writes checked after kills"] += written


def big_body(size=1000, blob=2000):
    """`size` items on distinct registered-looking keys that need registering first."""
    return {
        "states": [
            {
                "accountId": f"40000000-0000-4000-8000-{n:012d}",
                "tickerId": TICKERS[0],
                "state": {"n": n, "blob": "x" * blob},
            }
            for n in range(size)
        ]
    }


@pytest.mark.parametrize("workers", (1, 2))
@pytest.mark.parametrize("delay", (0.0, 0.005, 0.01, 0.02, 0.05, 0.1))
def test_sigterm_lets_a_request_in_flight_finish_and_leaves_nothing_half_written(
    database, storage, seeded, delay, workers
):
    body = big_body()
    storage.import_accounts([(item["accountId"], None) for item in body["states"]])
    path = database
    storage.close()
    process, base_url, log_path = start_server(path, WORKERS=workers)
    answer = {}

    def send():
        try:
            response = requests.post(
                f"{base_url}/api/bots/my-bot/state", json=body, headers={"x-api-key": seeded["apiKey"]}, timeout=30
            )
            answer["status"], answer["body"] = response.status_code, response.json()
        except (requests.RequestException, ValueError) as error:
            answer["error"] = error

    client = threading.Thread(target=send)
    client.start()
    time.sleep(delay)
    process.terminate()
    assert process.wait(timeout=20) == 0, "SIGTERM stops the server cleanly"
    assert log_path.read_text().rstrip().endswith("botstate stopped")
    client.join(timeout=30)
    rows, integrity = stored_rows(path, seeded["id"])
    assert integrity == "ok"
    if "status" in answer:  # answered: in full, and all of it stored
        assert answer["status"] == 200 and answer["body"]["summary"]["succeeded"] == 1000, answer
        assert len(rows) == 1000
    else:  # cut off before the server read it: nothing of it stored
        assert len(rows) == 0, len(rows)
    RELIABILITY["SIGTERM with a request in flight"] += 1
