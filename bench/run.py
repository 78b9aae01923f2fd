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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
import keys  # noqa: E402
from app import create_app  # noqa: E402
from bench.changelog import disk_use, drop_change_log, largest_seq  # noqa: E402
from bench.postgres import postgres_database, postgres_server  # noqa: E402
from storage import Credentials, StateWrite  # noqa: E402

THREADS = 4
CONNECTIONS = 8
ACCOUNTS = [str(uuid.UUID(int=(1 << 126) | n)) for n in range(1000)]
TICKERS = [str(uuid.UUID(int=(2 << 126) | n)) for n in range(500)]
KEY = keys.generate_key()
BODIES_PER_CASE = 200
# Reference rows, not targets: bench/floor.py, one bare SQLite call per request.
FLOOR_POST = "reference: bare upsert route, 1 state"
FLOOR_GET = "reference: bare read route, 1 row"
# The change log's cost: the same cases on twin data sets, one with the log and one with its
# triggers dropped, taken in turns (ROUNDS times each, the median kept) so that both see the
# same machine and the same number of rows.
CHANGE_LOG_ON_1 = "POST 1 state, change log on"
CHANGE_LOG_OFF_1 = "POST 1 state, change log off"
CHANGE_LOG_ON_1000 = "POST 1000 states, change log on"
CHANGE_LOG_OFF_1000 = "POST 1000 states, change log off"
ROUNDS = 3
EMPTY_POLL = "GET changes, nothing new"
POLL_PATH = "/api/bots/bench/changes?after={after}"
NO_POSTGRES = (
    "PostgreSQL column empty: no server (make bench starts one with scripts/with-postgres; see docs/performance.md)"
)


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


def memory_mb(pid, field):
    """A memory figure of the process from /proc (VmRSS: now, VmHWM: peak so far), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_botstate(database):
    """serve.py on a free port on `database` (DATABASE or DATABASE_URL), configured as `make run` would be."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSTATE_")}
    env.update({f"BOTSTATE_{key}": str(value) for key, value in database.items()})
    env.update(BOTSTATE_PORT=str(port), BOTSTATE_THREADS=str(THREADS))
    process = subprocess.Popen(
        [sys.executable, "serve.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(port, process)
    return process, port


def start_reference(script, *args):
    """bench/ceiling.py or bench/floor.py on a free port, same waitress thread count."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), str(port), str(THREADS), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(port, process)
    return process, port


def start_server(server, database):
    """The case's server: the ceiling, the bare SQLite floor on database["DATABASE"], or botstate."""
    if server == "ceiling":
        return start_reference("ceiling.py")
    if server == "floor":
        return start_reference("floor.py", database["DATABASE"])
    return start_botstate(database)


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
    """Run wrk at the bench's connections; returns requests/s, p50 ms, p99 ms, errors."""
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
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        match = re.search(pattern, out)
        if match:
            errors += sum(int(n) for n in match.groups())
    return rps, latency_ms(out, "50%"), latency_ms(out, "99%"), errors


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
        "--rounds", type=int, default=ROUNDS, help=f"turns of the change log on and off cases (default {ROUNDS})"
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
        results = [measure_case(case, args.duration, one, databases) for case in cases]
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


def measure_case(case, duration, one, databases):
    """One case's row: its figures on SQLite and, for botstate with a server, on PostgreSQL."""
    label, server, method, size, files, data_set = case
    row = measure(server, method, files, duration, one, databases["sqlite"].get(data_set))
    row.update(case=label, size=size, method=method, states=row["rps"] * size, postgres=None)
    print(f"  {label}: {row['rps']:,.0f} req/s", file=sys.stderr)
    if databases["postgres"] and server == "botstate":
        row["postgres"] = measure(server, method, files, duration, one, databases["postgres"][data_set])
        print(f"  {label}, PostgreSQL: {row['postgres']['rps']:,.0f} req/s", file=sys.stderr)
    return row


def measure_in_turns(cases, rounds, duration, one, databases):
    """The cases' rows, each case run `rounds` times in turn with the others: per case and
    database, the figures of its median round (by requests/s), with the errors of every round."""
    runs = {case[0]: [] for case in cases}
    for _ in range(rounds):
        for case in cases:
            runs[case[0]].append(measure_case(case, duration, one, databases))
    return [median_round(runs[case[0]]) for case in cases]


def median_round(rows):
    """The row of the median round by requests/s (the lower middle of an even count), on each
    database, with the errors of all rounds summed."""
    row = dict(sorted(rows, key=lambda r: r["rps"])[(len(rows) - 1) // 2])
    row["errors"] = sum(r["errors"] for r in rows)
    if row["postgres"] is not None:
        on_postgres = [r["postgres"] for r in rows]
        row["postgres"] = dict(sorted(on_postgres, key=lambda r: r["rps"])[(len(rows) - 1) // 2])
        row["postgres"]["errors"] = sum(r["errors"] for r in on_postgres)
    return row


def measure(server, method, files, duration, one, database):
    """Run one case on a server of its own on `database`: its requests/s, p50, p99, errors and peak RSS."""
    process, port = start_server(server, database)
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
        rps, p50, p99, errors = run_wrk(url, method, duration, **{k: str(v) for k, v in files.items()})
        rss = memory_mb(process.pid, "VmHWM")
    finally:
        stop(process)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "rss": rss}


def body_limit_memory(database):
    """(body MB, peak RSS growth MB) for one 1000-state request just under the body limit."""
    limit = config.DEFAULTS["MAX_BODY_BYTES"]  # serve.py runs with the default
    rng = random.Random(7)
    items = state_items(1000, rng)
    overhead = len(json.dumps({"states": items}))
    for item in items:
        item["state"] = {"blob": "x" * ((limit - overhead) // 1000 - 20)}
    body = json.dumps({"states": items}).encode()
    process, port = start_botstate(database)
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


def postgres_cell(figures, ceiling):
    """The PostgreSQL column of a row: requests/s and ratio to the ceiling (errors if any), or "-"."""
    if figures is None:
        return "-"
    errors = f", {figures['errors']:,} errors" if figures["errors"] else ""
    return f"{figures['rps']:,.0f} ({figures['rps'] / ceiling:.2f}){errors}"


def report(results, prefill, memory, postgres_note=None, disk=None, rounds=ROUNDS):
    """Print the table and whether each target is met; exit 1 if any is not."""
    ceiling = results[0]["rps"]
    print(
        f"\nbotstate bench: waitress {THREADS} threads, wrk 1 thread {CONNECTIONS} connections, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}\n"
    )
    print(
        "| case | requests/s | states/s | p50 ms | p99 ms | errors | ratio to ceiling | peak RSS MB "
        "| PostgreSQL requests/s (ratio to ceiling) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['case']} | {r['rps']:,.0f} | {r['states']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['errors']} | {r['rps'] / ceiling:.2f} | {r['rss']:.0f} | {postgres_cell(r['postgres'], ceiling)} |"
        )
    print()
    if postgres_note is None:
        print(NO_POSTGRES)
    else:
        print(
            f"The PostgreSQL column is botstate on {postgres_note}, in the same run and against the same"
            f" ceiling: informative only, the targets below are the other columns' (SQLite)."
        )
    print(
        f"The change log on and off rows ran on twin data sets, {rounds} time{'s' if rounds > 1 else ''} each"
        " in turn; each shows its median round."
    )
    by = {r["case"]: r for r in results}
    post1, post10, post100, post1000 = (by[f"POST {n} state{'s' if n > 1 else ''}"] for n in (1, 10, 100, 1000))
    full1 = by[f"POST 1 state, {prefill:,} rows"]
    full1000 = by[f"POST 1000 states, {prefill:,} rows"]
    targets = [
        ("1-state POST >= 0.8x ceiling", post1["rps"] / ceiling, 0.8),
        ("1-state POST p99 < 10 ms", 10 - post1["p99"], 0.0),
        ("1000-state POST >= 40,000 states/s", post1000["states"], 40_000),
        (f"1-state POST with {prefill:,} rows >= 0.9x empty", full1["rps"] / post1["rps"], 0.9),
        (f"1000-state POST with {prefill:,} rows >= 0.9x empty", full1000["rps"] / post1000["rps"], 0.9),
        ("100-state states/s >= 10-state", post100["states"] / post10["states"], 1.0),
        ("1000-state states/s >= 10-state", post1000["states"] / post10["states"], 1.0),
        ("peak RSS under 1000-state load < 150 MB", 150 - post1000["rss"], 0.0),
        ("GET one row >= 0.8x ceiling", by["GET one row"]["rps"] / ceiling, 0.8),
        ("PATCH 1 state >= 0.8x ceiling", by["PATCH 1 state"]["rps"] / ceiling, 0.8),
        ("1-state POST >= 0.9x with the change log off", by[CHANGE_LOG_ON_1]["rps"] / by[CHANGE_LOG_OFF_1]["rps"], 0.9),
        (
            "1000-state POST >= 0.8x with the change log off",
            by[CHANGE_LOG_ON_1000]["rps"] / by[CHANGE_LOG_OFF_1000]["rps"],
            0.8,
        ),
        ("empty changes poll >= GET one row", by[EMPTY_POLL]["rps"] / by["GET one row"]["rps"], 1.0),
        ("no errors in any case", -sum(r["errors"] for r in results), 0.0),
        ("a request at the body limit holds at most 5x its size", 5 - memory[1] / memory[0], 0.0),
    ]
    print(
        f"\nThe reference rows are bare Flask routes that make one SQLite call and nothing else"
        f" (bench/floor.py): they reach {by[FLOOR_POST]['rps'] / ceiling:.2f}x (upsert) and"
        f" {by[FLOOR_GET]['rps'] / ceiling:.2f}x (read) of the ceiling."
    )
    print(
        f"\nOne {memory[0]:.1f} MB request at the body limit raised peak RSS by {memory[1]:.0f} MB"
        f" ({memory[1] / memory[0]:.1f}x its size)."
    )
    if disk is not None:
        writes, rows, per_version, with_log, without = disk
        print(
            f"\nChange log: {per_version:,.0f} bytes per logged version; after {writes:,} writes of the bench's"
            f" state over {min(writes, rows):,} rows the database takes {with_log / 1e6:,.1f} MB"
            f" ({without / 1e6:,.1f} MB without the log), all of it kept by the default retention."
        )
    print()
    failed = 0
    for name, value, threshold in targets:
        ok = value >= threshold
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}  ({value:,.2f})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
