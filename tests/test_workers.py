"""Worker processes behind one port (BOTSTATE_WORKERS), over HTTP on a real server, on both backends:
a worker killed under load is replaced, SIGTERM drains them all, and what is per process in one
process (the rate limit, the metrics, remembered logins) holds across them."""

import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import threading
import time
import urllib.parse

import pytest
import requests
from conftest import RELIABILITY, holding_write_lock, register_ids, start_server, stop_server, stored_rows
from worker_processes import (
    TIMEOUT,
    WorkerConnection,
    connections_to_every_worker,
    listening_inodes,
    wait_for_workers,
    worker_pids,
)

import config
from backends.process_lock import ProcessLock
from backends.sqlite import SQLiteStorage
from backends.sqlite_upkeep import CHECKPOINT_INTERVAL
from connlimits import DrainingDispatcher
from operations import bots
from supervisor import touch_tree

ACCOUNTS = [f"50000000-0000-4000-8000-00000000000{i}" for i in range(4)]
TICKERS = [f"60000000-0000-4000-8000-00000000000{i}" for i in range(3)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))
WORKERS = 2
KILLS = 3
QUEUED = 8


@pytest.fixture
def seeded(storage, bot):
    register_ids(storage, ACCOUNTS, TICKERS, symbol_prefix="W")
    return bot


@pytest.fixture
def workers_server(database, storage):
    """A server of WORKERS workers on the test's database: (process, base URL, log path)."""
    process, base_url, log_path = start_server(database, WORKERS=WORKERS)
    wait_for_workers(process, WORKERS)
    yield process, base_url, log_path
    stop_server(process)


def keep_writing(url, api_key, writer, acknowledged, refused, lock, stop):
    """POST 1- or 3-item writes until `stop`; note each acknowledged (version, state). A connection
    cut (its worker killed) is no answer: the write goes on with a new connection."""
    rng = random.Random(writer)
    session = requests.Session()
    for step in itertools.count():
        if stop.is_set():
            return
        picks = rng.sample(KEYS, 1 if step % 4 else 3)
        states = [{"accountId": a, "tickerId": t, "state": {"writer": writer, "step": step}} for a, t in picks]
        try:
            response = session.post(url, json={"states": states}, headers={"x-api-key": api_key}, timeout=10)
        except requests.RequestException:
            session = requests.Session()
            continue
        with lock:
            if response.status_code != 200:
                refused.append((response.status_code, response.text))
                continue
            for sent, result in zip(states, response.json()["results"], strict=True):
                key = (sent["accountId"], sent["tickerId"])
                acknowledged.setdefault(key, {})[result["data"]["version"]] = sent["state"]


def test_a_killed_worker_is_replaced_and_no_acknowledged_write_is_lost(database, seeded, workers_server):
    process, base_url, log_path = workers_server
    acknowledged, refused, lock, stop = {}, [], threading.Lock(), threading.Event()
    writers = [
        threading.Thread(
            target=keep_writing,
            args=(f"{base_url}/api/bots/my-bot/state", seeded["apiKey"], w, acknowledged, refused, lock, stop),
        )
        for w in range(4)
    ]
    for thread in writers:
        thread.start()
    rng = random.Random(20261202)
    replaced_in = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 0.8))
            victim = rng.choice(worker_pids(process))
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)  # no handler runs in the worker
            replacement = wait_for_ready_replacement(log_path, victim)
            replaced_in.append(time.monotonic() - killed_at)
            assert replacement != victim
    finally:
        time.sleep(0.3)  # writes on the replacement too
        stop.set()
        for thread in writers:
            thread.join(timeout=30)
    assert refused == []  # connections cut, but never a 5xx
    rows, integrity = stored_rows(database, seeded["id"])
    assert integrity == "ok"
    for key, versions in acknowledged.items():
        latest = max(versions)
        version, state = rows[key]
        assert version >= latest, key  # a lost write would leave the stored version below the acknowledged one
        if version == latest:
            assert json.loads(state) == versions[latest]
    assert len(worker_pids(process)) == WORKERS
    written = sum(len(v) for v in acknowledged.values())
    assert written > KILLS * 20  # the writers did write
    RELIABILITY["workers killed under load and replaced"] += KILLS
    RELIABILITY["acknowledged writes checked after worker kills"] += written
    print(f"replaced, and ready, in {', '.join(f'{seconds * 1000:.0f} ms' for seconds in replaced_in)}")


def wait_for_ready_replacement(log_path, victim, timeout=10):
    """The pid of the worker started in place of `victim`, once its supervisor says it is ready."""
    started = re.compile(rf"\(pid {victim}\) was killed by SIGKILL: started worker \d+ again \(pid (\d+)\)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = log_path.read_text()
        replacement = started.search(log)
        if replacement and f"(pid {replacement.group(1)}) is ready" in log:
            return int(replacement.group(1))
        time.sleep(0.005)
    raise AssertionError(f"no worker replaced pid {victim}:\n{log_path.read_text()[-2000:]}")


def big_body(first, size=1000):
    """`size` items on accounts of their own (from `first` on): one request's rows are told apart from another's."""
    return {
        "states": [
            {"accountId": f"70000000-0000-4000-8000-{first + n:012d}", "tickerId": TICKERS[0], "state": {"n": n}}
            for n in range(size)
        ]
    }


@pytest.mark.parametrize("delay", (0.02, 0.1))
def test_sigterm_drains_every_worker(database, storage, seeded, delay):
    requests_sent = 8
    bodies = [big_body(index * 1000) for index in range(requests_sent)]
    storage.import_accounts([(item["accountId"], None) for body in bodies for item in body["states"]])
    process, base_url, log_path = start_server(database, WORKERS=WORKERS)
    answers = {}

    def send(index, connection):
        try:
            status, body = connection.request(
                "POST",
                "/api/bots/my-bot/state",
                body=json.dumps(bodies[index]),
                headers={"x-api-key": seeded["apiKey"], "Content-Type": "application/json"},
            )
            answers[index] = (status, json.loads(body))
        except (OSError, ValueError, http.client.HTTPException) as error:
            answers[index] = error

    with connections_to_every_worker(base_url, process, WORKERS) as by_worker:
        # A request on each worker's connection, the rest on connections of their own.
        connections = [*by_worker.values()]
        connections += [WorkerConnection(base_url, process) for _ in range(requests_sent - WORKERS)]
        senders = [threading.Thread(target=send, args=pair) for pair in enumerate(connections)]
        for thread in senders:
            thread.start()
        time.sleep(delay)
        process.terminate()
        assert process.wait(timeout=60) == 0, "SIGTERM stops every worker, then the server, cleanly"
        for thread in senders:
            thread.join(timeout=30)
        for connection in connections[WORKERS:]:
            connection.close()
    assert log_path.read_text().rstrip().endswith("botstate stopped")
    rows, integrity = stored_rows(database, seeded["id"])
    assert integrity == "ok"
    for index, body in enumerate(bodies):
        stored = len({(item["accountId"], item["tickerId"]) for item in body["states"]} & rows.keys())
        answer = answers.get(index)
        if isinstance(answer, tuple):  # answered: in full, and all of it stored
            assert answer[0] == 200 and answer[1]["summary"]["succeeded"] == 1000, answer
            assert stored == 1000, index
        else:  # cut off before a worker took it: nothing of it stored
            assert stored == 0, (index, stored)
    RELIABILITY["SIGTERM with requests in flight on every worker"] += 1


def test_the_rate_limit_holds_across_workers(database, seeded):
    limit, per_worker = 10, 8  # more than the limit in all, fewer on each worker
    process, base_url, _ = start_server(database, WORKERS=WORKERS, RATE_LIMIT=f"{limit}/hour")
    statuses = []
    try:
        with connections_to_every_worker(base_url, process, WORKERS) as connections:
            for _ in range(per_worker):
                for connection in connections.values():
                    headers = {"x-api-key": seeded["apiKey"]}
                    statuses.append(connection.request("GET", "/api/bots/my-bot/state", headers=headers)[0])
    finally:
        stop_server(process)
    assert statuses.count(200) == limit
    assert statuses.count(429) == per_worker * WORKERS - limit


def test_metrics_sum_the_workers(database, seeded):
    per_worker = (3, 5)
    process, base_url, _ = start_server(database, WORKERS=WORKERS, METRICS=1)
    try:
        with connections_to_every_worker(base_url, process, WORKERS) as by_worker:
            connections = list(by_worker.values())
            for connection, count in zip(connections, per_worker, strict=True):
                for _ in range(count):
                    headers = {"x-api-key": seeded["apiKey"]}
                    assert connection.request("GET", "/api/bots/my-bot/state", headers=headers)[0] == 200
            scrapes = [connection.request("GET", "/metrics")[1].decode().splitlines() for connection in connections]
    finally:
        stop_server(process)
    route = 'botstate_requests_total{method="GET",route="/api/bots/<slug>/state",status="200"}'
    for lines in scrapes:  # whichever worker is asked, it counts every worker's requests
        assert f"{route} {float(sum(per_worker))}" in lines
    # The first scrape is counted by the time of the second.
    assert 'botstate_requests_total{method="GET",route="/metrics",status="200"} 1.0' in scrapes[1]


def test_rotation_and_revocation_cut_every_worker_at_once(storage, seeded, workers_server):
    process, base_url, _ = workers_server
    with connections_to_every_worker(base_url, process, WORKERS) as connections:

        def statuses(api_key):
            return [
                connection.request("GET", "/api/bots/my-bot/state", headers={"x-api-key": api_key})[0]
                for connection in connections.values()
            ]

        assert statuses(seeded["apiKey"]) == [200] * WORKERS  # each worker now remembers the login
        rotated = bots.rotate_key(storage, "my-bot")
        assert statuses(seeded["apiKey"]) == [403] * WORKERS
        assert statuses(rotated["apiKey"]) == [200] * WORKERS
        added = bots.add_key(storage, "my-bot")
        assert statuses(added["apiKey"]) == [200] * WORKERS
        bots.revoke_keys(storage, "my-bot", fingerprint=added["fingerprint"])
        assert statuses(added["apiKey"]) == [403] * WORKERS


def post_on_each(connections, body, headers, answers):
    """Start a POST of `body` on each connection, its (status, body) appended to `answers`; the threads."""
    senders = [
        threading.Thread(target=lambda c=c: answers.append(c.request("POST", "/api/bots/my-bot/state", body, headers)))
        for c in connections.values()
    ]
    for thread in senders:
        thread.start()
    return senders


@pytest.mark.sqlite_only("the writers' lock is a file beside a SQLite database")
def test_every_process_s_writers_queue_on_one_lock_for_the_busy_timeout_at_most(database, seeded):
    process, base_url, _ = start_server(database, WORKERS=WORKERS, BUSY_TIMEOUT_MS=2000)
    body = json.dumps({"states": [{"accountId": ACCOUNTS[0], "tickerId": TICKERS[0], "state": {"queued": True}}]})
    headers = {"x-api-key": seeded["apiKey"], "Content-Type": "application/json"}
    queued, refused = [], []
    another_process = ProcessLock(f"{database['DATABASE']}-writers")  # as another process's writer holds it
    try:
        with connections_to_every_worker(base_url, process, WORKERS) as connections:
            assert another_process.acquire()
            senders = post_on_each(connections, body, headers, queued)
            time.sleep(0.5)
            waited = list(queued)
            another_process.release()
            for thread in senders:
                thread.join(timeout=30)
            assert another_process.acquire()  # held past the busy timeout now: a stopped or hung writer
            senders = post_on_each(connections, body, headers, refused)
            for thread in senders:
                thread.join(timeout=30)
            answered_while_held = len(refused)
            another_process.release()
    finally:
        another_process.close()
        stop_server(process)
    assert waited == []  # every worker's write waits for the lock
    versions = sorted(json.loads(answer)["results"][0]["data"]["version"] for _, answer in queued)
    assert [status for status, _ in queued] == [200] * WORKERS and versions == list(range(1, WORKERS + 1))
    assert answered_while_held == WORKERS and {status for status, _ in refused} == {503}


@pytest.mark.sqlite_only("WAL checkpoints are SQLite's")
def test_only_the_leading_worker_checkpoints_and_prunes(database):
    storages = {leading: SQLiteStorage(database["DATABASE"]) for leading in (True, False)}
    checkpoints = {True: 0, False: 0}
    try:
        for leading, storage in storages.items():
            storage.migrate()
            real = storage.checkpoint

            def counted(real=real, leading=leading):
                checkpoints[leading] += 1
                return real()

            storage.checkpoint = counted
            storage.start_upkeep(leading=leading)
        time.sleep(10 * CHECKPOINT_INTERVAL)
        assert checkpoints[True] > 0 and checkpoints[False] == 0
        assert storages[True]._pruner is not None and storages[False]._pruner is None
    finally:
        for storage in storages.values():
            storage.close()


def test_the_shared_folder_is_touched_so_no_cleaner_of_old_files_takes_it(tmp_path):
    (tmp_path / "metrics").mkdir()
    files = [tmp_path / "rate-limit.db", tmp_path / "metrics" / "counter_1.db"]
    for path in files:
        path.write_bytes(b"")
    old = time.time() - 30 * 86400
    for path in [tmp_path, *files]:
        os.utime(path, (old, old))
    touch_tree(tmp_path)
    assert all(path.stat().st_mtime > time.time() - 60 for path in [tmp_path, *files])


def test_a_repeat_on_another_worker_of_a_request_still_running_gets_the_409(database, seeded):
    process, base_url, _ = start_server(database, WORKERS=WORKERS, BUSY_TIMEOUT_MS=3000)
    body = json.dumps({"states": [{"accountId": ACCOUNTS[0], "tickerId": TICKERS[0], "state": {"once": True}}]})
    headers = {"x-api-key": seeded["apiKey"], "Content-Type": "application/json", "Idempotency-Key": "k-1"}
    try:
        with connections_to_every_worker(base_url, process, WORKERS) as by_worker:
            first, second = by_worker.values()
            answers = []
            with holding_write_lock(database):  # the first request waits for the database
                sender = threading.Thread(
                    target=lambda: answers.append(first.request("POST", "/api/bots/my-bot/state", body, headers))
                )
                sender.start()
                time.sleep(0.5)
                repeat = second.request("POST", "/api/bots/my-bot/state", body, headers)
            sender.join(timeout=30)
            replayed = second.request("POST", "/api/bots/my-bot/state", body, headers)
    finally:
        stop_server(process)
    assert repeat[0] == 409 and json.loads(repeat[1])["code"] == "CONFLICT"
    assert answers[0][0] in (200, 503)  # the first waited for the lock: stored, or the busy timeout's 503
    if answers[0][0] == 200:
        assert replayed == answers[0]


@pytest.mark.sqlite_only("the writers' lock is a file beside a SQLite database")
@pytest.mark.parametrize("to_every_process", (False, True), ids=("supervisor", "process-group"))
def test_sigterm_answers_small_requests_in_flight_even_when_every_process_gets_it(database, seeded, to_every_process):
    # Review: small answers waited for the I/O thread, which SIGTERM stops; a second SIGTERM (Ctrl-C or
    # systemd reach every process of the group, and the supervisor passes it on) cut the workers' drain.
    process, base_url, log_path = start_server(database, WORKERS=WORKERS)
    body = json.dumps({"states": [{"accountId": ACCOUNTS[1], "tickerId": TICKERS[1], "state": {"drained": True}}]})
    headers = {"x-api-key": seeded["apiKey"], "Content-Type": "application/json"}
    answers = []
    another_process = ProcessLock(f"{database['DATABASE']}-writers")
    try:
        with connections_to_every_worker(base_url, process, WORKERS) as connections:
            assert another_process.acquire()
            senders = post_on_each(connections, body, headers, answers)
            time.sleep(0.3)  # each worker's write now waits for the lock
            for pid in [process.pid, *(worker_pids(process) if to_every_process else [])]:
                os.kill(pid, signal.SIGTERM)
            time.sleep(0.3)
            another_process.release()
            for thread in senders:
                thread.join(timeout=30)
            assert process.wait(timeout=30) == 0
    finally:
        another_process.close()
        stop_server(process)
    assert [status for status, _ in answers] == [200] * WORKERS
    rows, _ = stored_rows(database, seeded["id"])
    assert rows[(ACCOUNTS[1], TICKERS[1])][0] == WORKERS  # both stored, as answered
    assert log_path.read_text().rstrip().endswith("botstate stopped")


def assert_exit_0_and_every_write_answered_and_stored(process, senders, answers, database, bot_id):
    """Once the senders end: the server exited 0, each of them got a 200, and each write is stored, once."""
    for thread in senders:
        thread.join(timeout=30)
    assert process.wait(timeout=30) == 0
    assert {n: getattr(answer, "status_code", answer) for n, answer in answers.items()} == dict.fromkeys(
        range(len(senders)), 200
    )
    rows, _ = stored_rows(database, bot_id)
    assert sum(version for version, _ in rows.values()) == len(senders)


def one_state_senders(base_url, api_key, count, answers):
    """`count` threads, not started, that each POST one state n and put its answer (or error) in answers[n]."""
    headers = {"x-api-key": api_key, "Content-Type": "application/json"}

    def send(n):
        account, ticker = KEYS[n % len(KEYS)]
        body = json.dumps({"states": [{"accountId": account, "tickerId": ticker, "state": {"n": n}}]})
        try:
            answers[n] = requests.post(f"{base_url}/api/bots/my-bot/state", data=body, headers=headers, timeout=30)
        except requests.RequestException as error:
            answers[n] = error

    return [threading.Thread(target=send, args=(n,)) for n in range(count)]


@pytest.mark.parametrize("workers", (WORKERS, 1))
def test_sigterm_answers_every_request_received_in_full_even_those_queued_for_a_thread(database, seeded, workers):
    # Review: at its stop waitress cancelled the requests queued for a busy thread, closing their
    # connections unanswered; a worker of 1 thread queues one whenever two arrive together.
    process, base_url, log_path = start_server(database, WORKERS=workers)
    threads = config.AUTO_THREADS_ALONE if workers == 1 else 1
    if workers > 1:
        wait_for_workers(process, workers)
    sent = 3 * threads * workers  # so that two thirds of them wait in a queue
    answers = {}
    senders = one_state_senders(base_url, seeded["apiKey"], sent, answers)
    with holding_write_lock(database):
        for thread in senders:
            thread.start()
        time.sleep(0.5)  # each request has arrived: running, waiting for the lock, or queued for a thread
        process.terminate()
        time.sleep(0.3)
    assert_exit_0_and_every_write_answered_and_stored(process, senders, answers, database, seeded["id"])
    assert log_path.read_text().rstrip().endswith("botstate stopped")
    RELIABILITY["SIGTERM with requests queued for a thread"] += sent


class SlowTask:
    """A waitress task that runs until `release` is set."""

    def __init__(self, release):
        self.release = release

    def defer(self):
        pass

    def service(self):
        self.release.wait(30)

    def cancel(self):
        pass


def test_a_second_shutdown_of_the_threads_waits_no_more():
    # Review: a server of several sockets was shut down twice, and the second waited 5 s more
    # for a thread whose connection the first had closed.
    dispatcher = DrainingDispatcher()
    dispatcher.set_thread_count(1)
    release = threading.Event()
    dispatcher.add_task(SlowTask(release))
    try:
        assert dispatcher.shutdown(timeout=0.2) is False  # the task still runs
        started = time.monotonic()
        assert dispatcher.shutdown() is False
        assert time.monotonic() - started < 1  # waitress's own would wait its 5 s again
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while not dispatcher.shutdown() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dispatcher.shutdown() is True


@pytest.mark.parametrize("second", (signal.SIGTERM, signal.SIGINT), ids=("SIGTERM", "SIGINT"))
@pytest.mark.parametrize("workers", (WORKERS, 1))
def test_a_second_signal_leaves_the_drain_its_time(database, seeded, workers, second):
    # Review: one process stopped its drain at a second SIGTERM or Ctrl-C, cutting requests
    # that the lock, let go a moment later, would have let it answer.
    process, base_url, log_path = start_server(database, WORKERS=workers, THREADS=1)
    if workers > 1:
        wait_for_workers(process, workers)
    sent = 2 * workers
    answers = {}
    senders = one_state_senders(base_url, seeded["apiKey"], sent, answers)
    with holding_write_lock(database):
        for thread in senders:
            thread.start()
        time.sleep(0.5)
        process.terminate()
        time.sleep(0.5)
        process.send_signal(second)
        time.sleep(1)
    assert_exit_0_and_every_write_answered_and_stored(process, senders, answers, database, seeded["id"])


@pytest.mark.parametrize("workers", (WORKERS, 1))
def test_sigterm_with_a_request_that_outlasts_the_drain_cuts_it_and_exits_0(database, seeded, workers):
    # Review: the storage was closed under the request still running at the drain's end (a
    # segfault, or a wait for the write lock it held), and its connection was cut anyway.
    process, base_url, log_path = start_server(database, WORKERS=workers, THREADS=1, BUSY_TIMEOUT_MS=8000)
    if workers > 1:
        wait_for_workers(process, workers)
    sent = 2 * workers  # on each worker one waits for the lock past the drain, one queued behind it
    answers = {}
    senders = one_state_senders(base_url, seeded["apiKey"], sent, answers)
    with holding_write_lock(database):  # longer than the drain's 5 s and than the process
        for thread in senders:
            thread.start()
        time.sleep(0.5)
        process.terminate()
        code = process.wait(timeout=30)
    for thread in senders:
        thread.join(timeout=30)
    log = log_path.read_text()
    assert code == 0, log
    assert "request(s) still running: their connections are cut" in log
    assert log.rstrip().endswith("botstate stopped") and "Traceback" not in log
    answered = [n for n, answer in answers.items() if getattr(answer, "status_code", None) == 200]
    rows, integrity = stored_rows(database, seeded["id"])
    assert integrity == "ok"
    # What was answered is stored; a cut request may be (PostgreSQL runs its statement once the lock is let go).
    assert all(json.loads(rows[KEYS[n % len(KEYS)]][1]) == {"n": n} for n in answered)
    assert all(json.loads(state)["n"] in range(sent) for version, state in rows.values() if version == 1)
    assert len(rows) <= sent


@pytest.mark.sqlite_only("a SQLite file moved away")
def test_a_worker_started_while_the_database_is_gone_answers_503_and_creates_nothing(database, seeded, tmp_path):
    # Review: the replacement ran the migrations, which made an empty database in the file's place.
    process, base_url, log_path = start_server(database, WORKERS=WORKERS)
    path = database["DATABASE"]
    away = tmp_path / "away"
    away.mkdir()
    headers = {"x-api-key": seeded["apiKey"]}
    url = f"{base_url}/api/bots/my-bot/state"
    try:
        wait_for_workers(process, WORKERS)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.rename(path + suffix, away / f"db{suffix}")
        victim = worker_pids(process)[-1]
        os.kill(victim, signal.SIGKILL)
        wait_for_ready_replacement(log_path, victim)
        gone = [requests.get(url, headers=headers, timeout=TIMEOUT).status_code for _ in range(6)]
        assert not os.path.exists(path)
        for suffix in ("", "-wal", "-shm"):
            if (away / f"db{suffix}").exists():
                os.rename(away / f"db{suffix}", path + suffix)
        time.sleep(0.5)  # each worker notices the file is back
        back = [requests.get(url, headers=headers, timeout=TIMEOUT).status_code for _ in range(6)]
    finally:
        stop_server(process)
    assert set(gone) == {503}
    assert set(back) == {200}


def test_the_workers_shared_folder_gone_gives_no_5xx_to_bot_requests(database, seeded, tmp_path):
    # Review: with the rate limit's counts and the metrics' files gone, every bot request answered 500.
    shared_parent = tmp_path / "tmp"
    shared_parent.mkdir()
    process, base_url, log_path = start_server(
        database, WORKERS=WORKERS, RATE_LIMIT="1000/hour", METRICS=1, env={"TMPDIR": str(shared_parent)}
    )
    headers = {"x-api-key": seeded["apiKey"]}
    try:
        wait_for_workers(process, WORKERS)
        [shared] = shared_parent.glob("botstate-workers-*")
        shutil.rmtree(shared)
        for victim in worker_pids(process):  # workers started now open the files afresh, and find none
            os.kill(victim, signal.SIGKILL)
            wait_for_ready_replacement(log_path, victim)
        shutil.rmtree(shared)  # made again for the replacements, gone again before they open a file
        statuses = [
            requests.get(f"{base_url}/api/bots/my-bot/state", headers=headers, timeout=TIMEOUT).status_code
            for _ in range(8)
        ]
        body = {"states": [{"accountId": ACCOUNTS[2], "tickerId": TICKERS[2], "state": {"kept": True}}]}
        for n in range(4):  # with an Idempotency-Key: the workers' lock file cannot be opened either
            keyed = {**headers, "Idempotency-Key": f"gone-{n}"}
            statuses.append(
                requests.post(
                    f"{base_url}/api/bots/my-bot/state", json=body, headers=keyed, timeout=TIMEOUT
                ).status_code
            )
        scrape = requests.get(f"{base_url}/metrics", timeout=TIMEOUT)
    finally:
        stop_server(process)
    assert set(statuses) == {200}
    assert scrape.status_code in (200, 503) and scrape.headers["Content-Type"].startswith(
        ("text/plain", "application/json")
    )


def test_each_worker_listens_on_a_socket_of_its_own_that_its_replacement_takes_over(database, seeded, workers_server):
    process, base_url, log_path = workers_server
    port = urllib.parse.urlsplit(base_url).port
    before = {pid: listening_inodes(pid, port) for pid in worker_pids(process)}
    assert all(len(inodes) == 1 for inodes in before.values()), before
    assert len(set.union(*before.values())) == WORKERS  # the kernel spreads connections over these
    assert set.union(*before.values()) <= listening_inodes(process.pid, port)  # and the supervisor keeps them
    victim = worker_pids(process)[0]
    os.kill(victim, signal.SIGKILL)
    queued = []  # connections made while the victim's socket has no worker: they wait for its replacement
    for _ in range(QUEUED):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        connection.request("GET", "/healthz")
        queued.append(connection)
    replacement = wait_for_ready_replacement(log_path, victim)
    assert listening_inodes(replacement, port) == before[victim]
    statuses = []
    for connection in queued:
        statuses.append(connection.getresponse().status)
        connection.close()
    assert statuses == [200] * QUEUED
