"""A reader of the change feed sees every acknowledged change once, in order: concurrent writers of
POST, PATCH and DELETE on two server processes, one of them killed with SIGKILL and started again."""

import collections
import itertools
import random
import threading
import time

import requests
from conftest import RELIABILITY, register_ids, start_server, stop_server

ACCOUNTS = [f"20000000-0000-4000-8000-00000000000{i}" for i in range(4)]
TICKERS = [f"30000000-0000-4000-8000-00000000000{i}" for i in range(3)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))
WRITERS = 4
WRITE_SECONDS = 2.5


class Servers:
    """Two server processes on one database; the second is killed and started again on demand."""

    def __init__(self, database):
        self.database = database
        self.processes = [start_server(database)[:2] for _ in range(2)]

    def url(self, n):
        return self.processes[n][1]

    def kill_and_restart_second(self):
        process, _ = self.processes[1]
        process.kill()  # SIGKILL: nothing is flushed; requests in flight get no answer
        process.wait()
        self.processes[1] = start_server(self.database)[:2]

    def stop(self):
        for process, _ in self.processes:
            stop_server(process)


def write(servers, api_key, writer, acknowledged, lock, stop, rng):
    """Random writes and deletes, with and without expected versions, until `stop`; note each acknowledged change."""
    session = requests.Session()
    headers = {"x-api-key": api_key}
    known = {}
    for step in itertools.count():
        if stop.is_set():
            return
        base = f"{servers.url(step % 2)}/api/bots/my-bot"
        account, ticker = rng.choice(KEYS)
        kind = rng.choice(("post", "post", "patch", "delete"))
        try:
            if kind == "delete":
                extra = (
                    {"If-Match": f'"{known[(account, ticker)]}"'}
                    if (account, ticker) in known and rng.random() < 0.5
                    else {}
                )
                response = session.delete(f"{base}/state/{account}/{ticker}", headers={**headers, **extra}, timeout=10)
                if response.status_code == 200:
                    row = response.json()["data"]
                    known.pop((account, ticker), None)
                    with lock:
                        acknowledged.append(((account, ticker), "delete", row["version"], None))
                continue
            picks = [(account, ticker)] if kind == "patch" or step % 3 else rng.sample(KEYS, 4)
            states = []
            for a, t in picks:
                item = {"accountId": a, "tickerId": t, "state": {"writer": writer, "step": step}}
                if (a, t) in known and rng.random() < 0.3:
                    item["expectedVersion"] = known[(a, t)]
                states.append(item)
            send = session.patch if kind == "patch" else session.post
            response = send(f"{base}/state", json={"states": states}, headers=headers, timeout=10)
            results = response.json()["results"]
        except (requests.RequestException, ValueError, KeyError):
            continue  # its server was killed mid-request: nothing was acknowledged
        with lock:
            for (a, t), result in zip(picks, results, strict=True):
                if result["status"] == "success":
                    data = result["data"]
                    known[(a, t)] = data["version"]
                    acknowledged.append(((a, t), "upsert", data["version"], data["state"]))


def read_feed(url, api_key, seen, until):
    """Poll the feed from 0, storing nextAfter, until `until` is set and a poll finds nothing new."""
    session = requests.Session()
    after = 0
    while True:
        stopping = until.is_set()
        page = session.get(
            f"{url}/api/bots/my-bot/changes",
            params={"after": after, "limit": 50},
            headers={"x-api-key": api_key},
            timeout=10,
        ).json()
        seen.extend(page["data"])
        after = page["nextAfter"]
        if not page["data"]:
            if stopping:
                return
            time.sleep(0.01)


def test_a_reader_sees_every_acknowledged_change_once_in_order(database, storage, bot):
    register_ids(storage, ACCOUNTS, TICKERS, symbol_prefix="F")
    storage.close()
    servers = Servers(database)
    acknowledged, lock, stop, done = [], threading.Lock(), threading.Event(), threading.Event()
    seen = []
    rng = random.Random(20261201)
    writers = [
        threading.Thread(
            target=write, args=(servers, bot["apiKey"], w, acknowledged, lock, stop, random.Random(rng.random()))
        )
        for w in range(WRITERS)
    ]
    reader = threading.Thread(target=read_feed, args=(servers.url(0), bot["apiKey"], seen, done))
    try:
        for thread in [*writers, reader]:
            thread.start()
        time.sleep(WRITE_SECONDS / 2)
        servers.kill_and_restart_second()
        time.sleep(WRITE_SECONDS / 2)
        stop.set()
        for thread in writers:
            thread.join(timeout=60)
        done.set()
        reader.join(timeout=60)
    finally:
        stop.set()
        done.set()
        servers.stop()
    seqs = [change["seq"] for change in seen]
    assert seqs == sorted(set(seqs))  # each once, in seq order
    observed = collections.Counter(
        ((c["accountId"], c["tickerId"]), c["op"], c["version"], frozen(c.get("state"))) for c in seen
    )
    missing = collections.Counter((key, op, version, frozen(state)) for key, op, version, state in acknowledged)
    missing.subtract(observed)
    assert not +missing, list((+missing).items())[:5]  # every acknowledged change, at least once
    # Each row's changes in feed order: versions up by one, a delete of the version before, a new row at 1.
    last = {}
    for change in seen:
        key = (change["accountId"], change["tickerId"])
        before = last.get(key)
        if change["op"] == "delete":
            assert before is not None and before == ("upsert", change["version"]), (key, before, change)
        else:
            expected = 1 if before is None or before[0] == "delete" else before[1] + 1
            assert change["version"] == expected, (key, before, change)
        last[key] = (change["op"], change["version"])
    assert len(acknowledged) > 100 and any(op == "delete" for _, op, _, _ in acknowledged)
    RELIABILITY["acknowledged changes seen once by a feed reader"] += len(acknowledged)


def frozen(state):
    """A state (or None) as a hashable value."""
    if not isinstance(state, dict):
        return state
    return tuple(sorted((name, frozen(value)) for name, value in state.items()))
