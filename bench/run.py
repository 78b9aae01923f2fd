"""`make bench`: botstate under wrk beside a trivial-route ceiling, in one run, as a table.

Starts botstate the way `make run` does (serve.py, BOTSTATE_* settings) on a data set
it makes itself (1,000 accounts, 500 tickers, prefilled rows where a case needs them),
a trivial Flask route under the same waitress settings as the ceiling, and bare
routes that make one SQLite call each as a reference (bench/floor.py).

With TEST_POSTGRES_URL (a superuser URL; `make bench` sets it through
scripts/with-postgres) every botstate case runs on PostgreSQL too, in databases it
creates on that server and drops at the end, for a column of its own.
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
import keys  # noqa: E402
from app import create_app  # noqa: E402
from bench.cases import (  # noqa: E402
    CHANGE_LOG_OFF_1,
    CHANGE_LOG_OFF_1000,
    CHANGE_LOG_ON_1,
    CHANGE_LOG_ON_1000,
    CONNECTIONS,
    EMPTY_POLL,
    FLOOR_GET,
    FLOOR_POST,
    HEADLINE,
    ROUNDS,
    THREADS,
)
from bench.changelog import disk_use, drop_change_log, largest_seq  # noqa: E402
from bench.postgres import postgres_database, postgres_server  # noqa: E402
from bench.processes import LockSampler, cpu_seconds, memory_mb, peak_rss_mb, process_tree  # noqa: E402
from bench.report import report  # noqa: E402
from storage import Credentials, StateWrite  # noqa: E402

ACCOUNTS = [str(uuid.UUID(int=(1 << 126) | n)) for n in range(1000)]
TICKERS = [str(uuid.UUID(int=(2 << 126) | n)) for n in range(500)]
KEY = keys.generate_key()
BODIES_PER_CASE = 200
POLL_PATH = "/api/bots/bench/changes?after={after}"


def free_port():
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port, process, timeout=30):
    """Wait until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def start_botstate(database, workers=None):
    """serve.py on a free port on `database` (DATABASE or DATABASE_URL), configured as `make run` would be
    (with BOTSTATE_WORKERS=`workers` when given)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSTATE_")}
    env.update({f"BOTSTATE_{key}": str(value) for key, value in database.items()})
    env["BOTSTATE_PORT"] = str(port)  # threads as `make run` has them: 4 in one process, 1 per worker of several
    if workers is not None:
        env["BOTSTATE_WORKERS"] = str(workers)
    process = subprocess.Popen(
        [sys.executable, "serve.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stderr:  # the supervisor binds the port before its workers are ready: wait for its word
        if "listening on" in line:
            break
    else:
        raise RuntimeError(f"botstate exited with {process.wait()}")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # the request log, unread
    return process, port


def start_reference(script, *args):
    """bench/ceiling.py or bench/floor.py on a free port, one process of THREADS waitress threads."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), str(port), str(THREADS), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(port, process)
    return process, port


def start_server(server, database, workers=None):
    """The case's server: the ceiling, the bare SQLite floor on database["DATABASE"], or botstate."""
    if server == "ceiling":
        return start_reference("ceiling.py")
    if server == "floor":
        return start_reference("floor.py", database["DATABASE"])
    return start_botstate(database, workers)


def stop(process):
    """Stop a server and wait for it."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_database(database, prefill_rows=0):
    """Fill `database` (botstate settings): the bench bot, accounts, tickers, `prefill_rows` rows of other bots."""
    app = create_app({**database, "LOG_LEVEL": "WARNING"})
    storage = app.extensions["botstate.storage"]
    storage.create_bot("bench", "bench", keys.hash_key(KEY))
    storage.import_accounts([(account, None) for account in ACCOUNTS])
    storage.import_tickers([(f"T{n}", ticker) for n, ticker in enumerate(TICKERS)])
    pairs = [(a, t) for a in ACCOUNTS for t in TICKERS]
    filler = 0
    while prefill_rows > 0:
        filler_hash = keys.hash_key(keys.generate_key())
        bot = storage.create_bot(f"filler-{filler}", "filler", filler_hash)
        rows = min(prefill_rows, len(pairs))
        for start in range(0, rows, 1000):
            writes = [
                StateWrite(a, t, json.dumps({"position": "long", "entryPrice": 145.0, "n": n}))
                for n, (a, t) in enumerate(pairs[start : min(start + 1000, rows)], start)
            ]
            storage.write_states(Credentials(bot["id"], filler_hash), writes)
        prefill_rows -= rows
        filler += 1
    storage.close()


def make_data_sets(settings_of, prefill):
    """The data sets "empty", "full" (`prefill` rows), and the twins "log" and "nolog" (empty; the
    second with its change log's triggers dropped), made by make_database on `settings_of(name)`."""
    data_sets = {}
    for name, rows in (("empty", 0), ("full", prefill), ("log", 0), ("nolog", 0)):
        data_sets[name] = settings_of(name)
        make_database(data_sets[name], prefill_rows=rows)
    drop_change_log(data_sets["nolog"])
    return data_sets


def bench_state(rng):
    """A typical state, as the bench writes it."""
    return {
        "position": "long",
        "entryPrice": 145.0,
        "stopLoss": 140.0,
        "quantity": rng.randint(1, 500),
        "indicators": {"rsi": round(rng.uniform(0, 100), 2), "macd": 1.2},
    }


def state_items(count, rng):
    """`count` items with distinct random (account, ticker) keys and a typical state."""
    keys_ = set()
    while len(keys_) < count:
        keys_.add((rng.choice(ACCOUNTS), rng.choice(TICKERS)))
    return [{"accountId": a, "tickerId": t, "state": bench_state(rng)} for a, t in keys_]


def write_lines(path, lines):
    """One request (body or path) per line, for load.lua."""
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


def run_wrk(url, method, duration, bodies="", paths=""):
    """Run wrk at the bench's connections; returns requests/s, requests, p50 ms, p99 ms, errors."""
    env = dict(os.environ, BENCH_METHOD=method, BENCH_KEY=KEY, BENCH_BODIES=bodies, BENCH_PATHS=paths)
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(ROOT / "bench" / "load.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        match = re.search(pattern, out)
        if match:
            errors += sum(int(n) for n in match.groups())
    return rps, total, latency_ms(out, "50%"), latency_ms(out, "99%"), errors


def latency_ms(out, percentile):
    """A latency percentile of wrk's --latency table, in ms."""
    value, unit = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main():
    """Run every case and print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per case, on each database (default 10)")
    parser.add_argument("--prefill", type=int, default=1_000_000, help="rows for the full-table cases")
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"turns of the ratio targets' cases and of the change log on and off cases (default {ROUNDS})",
    )
    parser.add_argument(
        "--disk-writes",
        type=int,
        default=1_000_000,
        help="writes for the change log's disk figures (default 1,000,000)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if shutil.which("wrk") is None:
        sys.exit(
            "make bench needs wrk: install it with `sudo apt-get install wrk` (Debian/Ubuntu)"
            " or `brew install wrk` (macOS)"
        )
    server_url = os.environ.get("TEST_POSTGRES_URL", "").strip()
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="botstate-bench-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        print(f"Preparing data in {work} (prefill {args.prefill:,} rows)...", file=sys.stderr)
        sqlite = make_data_sets(lambda name: {"DATABASE": str(work / f"{name}.db")}, args.prefill)
        sqlite["floor"] = {"DATABASE": str(work / "floor.db")}
        postgres = note = None
        if server_url:
            note = postgres_server(server_url)
            print(f"Preparing the same data on {note}...", file=sys.stderr)
            postgres = make_data_sets(lambda name: postgres_database(server_url, cleanup), args.prefill)
        cases, paired, one = make_cases(work, args.prefill)
        databases = {"sqlite": sqlite, "postgres": postgres}
        headline = [case for case in cases if case[0] in HEADLINE]
        turns = measure_in_turns(headline, args.rounds, args.duration, one, databases, one_worker=True)
        in_turns = {row["case"]: row for row in turns}
        results = [in_turns.get(case[0]) or measure_case(case, args.duration, one, databases) for case in cases]
        results[-2:-2] = measure_in_turns(paired, args.rounds, args.duration, one, databases)
        memory = body_limit_memory(sqlite["empty"])
        print(f"Writing {args.disk_writes:,} states with and without the change log...", file=sys.stderr)
        pairs = [(a, t) for a in ACCOUNTS for t in TICKERS]
        rng = random.Random(20261201)
        disk = (args.disk_writes, len(pairs), *disk_use(work, pairs, args.disk_writes, lambda n: bench_state(rng)))
    report(results, args.prefill, memory, note, disk, args.rounds)


def make_cases(work, prefill):
    """The cases (label, server, method, states per request, request files, data set) and the 1-state bodies."""
    rng = random.Random(20261124)

    def bodies(size, name):
        return write_lines(
            work / name, [json.dumps({"states": state_items(size, rng)}) for _ in range(BODIES_PER_CASE)]
        )

    one = bodies(1, "one.txt")
    paths = write_lines(
        work / "paths.txt",
        [
            f"/api/bots/bench/state/{item['accountId']}/{item['tickerId']}"
            for line in Path(one).read_text().splitlines()
            for item in json.loads(line)["states"]
        ],
    )
    cases = [
        ("ceiling: trivial route, 1 state", "ceiling", "POST", 1, dict(bodies=one), None),
        ("POST 1 state", "botstate", "POST", 1, dict(bodies=one), "empty"),
        ("POST 10 states", "botstate", "POST", 10, dict(bodies=bodies(10, "ten.txt")), "empty"),
        ("POST 100 states", "botstate", "POST", 100, dict(bodies=bodies(100, "hundred.txt")), "empty"),
        ("POST 1000 states", "botstate", "POST", 1000, dict(bodies=bodies(1000, "thousand.txt")), "empty"),
        (f"POST 1 state, {prefill:,} rows", "botstate", "POST", 1, dict(bodies=one), "full"),
        (f"POST 1000 states, {prefill:,} rows", "botstate", "POST", 1000, dict(bodies=work / "thousand.txt"), "full"),
        ("PATCH 1 state", "botstate", "PATCH", 1, dict(bodies=one), "empty"),
        ("GET one row", "botstate", "GET", 1, dict(paths=paths), "empty"),
        (EMPTY_POLL, "botstate", "GET", 1, dict(paths=work / "poll.txt"), "empty"),
        (FLOOR_POST, "floor", "POST", 1, dict(bodies=one), "floor"),
        (FLOOR_GET, "floor", "GET", 1, dict(paths=paths), "floor"),
    ]
    paired = [
        (CHANGE_LOG_ON_1, "botstate", "POST", 1, dict(bodies=one), "log"),
        (CHANGE_LOG_OFF_1, "botstate", "POST", 1, dict(bodies=one), "nolog"),
        (CHANGE_LOG_ON_1000, "botstate", "POST", 1000, dict(bodies=work / "thousand.txt"), "log"),
        (CHANGE_LOG_OFF_1000, "botstate", "POST", 1000, dict(bodies=work / "thousand.txt"), "nolog"),
    ]
    return cases, paired, one


def measure_case(case, duration, one, databases, one_worker=True):
    """One case's row: its figures on SQLite with the default workers and (`one_worker`) with 1, and, for
    botstate with a server, on PostgreSQL with the default workers."""
    label, server, method, size, files, data_set = case
    sample = label == "POST 1 state"  # the case the scaling on paper is worked out from
    row = measure(server, method, files, duration, one, databases["sqlite"].get(data_set), sample_lock=sample)
    row.update(case=label, size=size, method=method, states=row["rps"] * size, postgres=None, alone=None)
    print(f"  {label}: {row['rps']:,.0f} req/s, {row['cpu_ms']:.3f} ms CPU/request", file=sys.stderr)
    if server == "botstate" and one_worker:
        row["alone"] = measure(server, method, files, duration, one, databases["sqlite"][data_set], workers=1)
        row["alone"]["states"] = row["alone"]["rps"] * size
        print(f"  {label}, 1 worker: {row['alone']['rps']:,.0f} req/s", file=sys.stderr)
    if databases["postgres"] and server == "botstate":
        row["postgres"] = measure(server, method, files, duration, one, databases["postgres"][data_set])
        print(f"  {label}, PostgreSQL: {row['postgres']['rps']:,.0f} req/s", file=sys.stderr)
    return row


def measure_in_turns(cases, rounds, duration, one, databases, one_worker=False):
    """The cases' rows, each case run `rounds` times in turn with the others: per case and
    server setting, the figures of its median round (by requests/s), with the errors of every round."""
    runs = {case[0]: [] for case in cases}
    for _ in range(rounds):
        for case in cases:
            runs[case[0]].append(measure_case(case, duration, one, databases, one_worker=one_worker))
    return [median_round(runs[case[0]]) for case in cases]


def median_round(rows):
    """The row of the median round by requests/s (the lower middle of an even count), with the
    errors of all rounds summed; so too its 1-worker and PostgreSQL figures, each on its own."""
    row = _median(rows)
    for setting in ("alone", "postgres"):
        if row.get(setting) is not None:
            row[setting] = _median([r[setting] for r in rows])
    return row


def _median(rows):
    row = dict(sorted(rows, key=lambda r: r["rps"])[(len(rows) - 1) // 2])
    row["errors"] = sum(r["errors"] for r in rows)
    return row


def measure(server, method, files, duration, one, database, workers=None, sample_lock=False):
    """Run one case on a server of its own on `database`: its requests/s, p50, p99, errors, server CPU per
    request (all its processes), largest peak RSS of one process, and the share of the time a SQLite
    writer held the writers' lock."""
    process, port = start_server(server, database, workers)
    url = f"http://127.0.0.1:{port}/api/bots/bench/state"
    try:
        if method == "GET":  # the rows it reads must exist
            subprocess.run(
                ["wrk", "-t1", "-c1", "-d1s", "-s", str(ROOT / "bench" / "load.lua"), url],
                env=dict(os.environ, BENCH_METHOD="POST", BENCH_KEY=KEY, BENCH_BODIES=one, BENCH_PATHS=""),
                capture_output=True,
                timeout=60,
            )
        if str(files.get("paths", "")).endswith("poll.txt"):  # the empty poll: from what the log holds now
            write_lines(files["paths"], [POLL_PATH.format(after=largest_seq(database))])
        pids = process_tree(process.pid)
        lock_file = f"{database['DATABASE']}-writers" if sample_lock and "DATABASE" in database else None
        with LockSampler(lock_file) if lock_file and os.path.exists(lock_file) else contextlib.nullcontext() as lock:
            used = cpu_seconds(pids)
            rps, total, p50, p99, errors = run_wrk(url, method, duration, **{k: str(v) for k, v in files.items()})
            used = cpu_seconds(pids) - used
        rss = peak_rss_mb(pids)
    finally:
        stop(process)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "errors": errors,
        "rss": rss,
        "cpu_ms": used * 1000 / max(total, 1),
        "lock_held": None if lock is None else lock.share,
        "workers": len(pids) - 1 if len(pids) > 1 else 1,
    }


def body_limit_memory(database):
    """(body MB, peak RSS growth MB) for one 1000-state request just under the body limit."""
    limit = config.DEFAULTS["MAX_BODY_BYTES"]  # serve.py runs with the default
    rng = random.Random(7)
    items = state_items(1000, rng)
    overhead = len(json.dumps({"states": items}))
    for item in items:
        item["state"] = {"blob": "x" * ((limit - overhead) // 1000 - 20)}
    body = json.dumps({"states": items}).encode()
    process, port = start_botstate(database, workers=1)  # one process: the request's growth is all in it
    try:
        post(port, json.dumps({"states": state_items(1, rng)}).encode())  # warm up
        before = memory_mb(process.pid, "VmRSS")
        status = post(port, body)
        peak = memory_mb(process.pid, "VmHWM")
    finally:
        stop(process)
    if status != 200:
        raise RuntimeError(f"the body-limit request answered {status}")
    return len(body) / 1e6, peak - before


def post(port, body):
    """POST a body to the bench bot; returns the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/api/bots/bench/state", body, {"x-api-key": KEY, "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


if __name__ == "__main__":
    main()
