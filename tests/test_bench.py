"""`make bench` still runs: a one-second pass over every case (no timing is asserted).

`make bench-check` runs it, beside a throwaway PostgreSQL server: its cases of load take two
cores for about 30 s, which `make test` would spend measuring rather than testing botstate.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import POSTGRES_URL, ROOT

CASES = (
    "ceiling: trivial route, 1 state",
    "POST 1 state",
    "POST 10 states",
    "POST 100 states",
    "POST 1000 states",
    "POST 1 state, 2,000 rows",
    "POST 1000 states, 2,000 rows",
    "PATCH 1 state",
    "GET one row",
    "POST 1 state, change log on",
    "POST 1 state, change log off",
    "POST 1000 states, change log on",
    "POST 1000 states, change log off",
    "GET changes, nothing new",
    "reference: bare upsert route, 1 state",
    "reference: bare read route, 1 row",
)


@pytest.mark.skipif(os.environ.get("BENCH_CHECK") != "1", reason="`make bench-check` runs the benchmark's check")
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_bench_runs_every_case_without_errors():
    result = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--duration",
            "1",
            "--prefill",
            "2000",
            "--disk-writes",
            "20000",
            "--rounds",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: a target missed, which is not for tests to judge
    rows = {
        line.split("|")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert set(CASES) <= set(rows), result.stdout
    for case in CASES:
        cells = [cell.strip() for cell in rows[case].split("|")]
        assert cells[6] == "0", rows[case]  # errors
        assert re.fullmatch(r"\d+\.\d{3}", cells[8]), rows[case]  # server CPU ms per request, from /proc
        alone = cells[10]  # 1 worker: every botstate case but the change log's turns
        if case.startswith(("POST", "PATCH", "GET")) and "change log" not in case:
            assert re.fullmatch(r"[\d,]+ \(\d\.\d\d\)", alone) and re.fullmatch(r"\d+\.\d{3}", cells[11]), rows[case]
        else:
            assert (alone, cells[11]) == ("-", "-"), rows[case]
        on_postgres = rows[case].split("|")[-2].strip()
        if case.startswith(("POST", "PATCH", "GET")) and POSTGRES_URL:  # make test-pg: the PostgreSQL column too
            assert re.fullmatch(r"[\d,]+ \(\d\.\d\d\)", on_postgres), rows[case]
        else:
            assert on_postgres == "-", rows[case]
    verdicts = re.findall(r"^(PASS|FAIL)  \S.*  \(-?[\d,]+\.\d\d\)$", result.stdout, re.M)
    assert verdicts and len(verdicts) == len(re.findall(r"^(PASS|FAIL)", result.stdout, re.M)), result.stdout
    assert result.returncode == ("FAIL" in verdicts), result.stdout  # exit 1 exactly when a target is missed
    assert re.search(r"request at the body limit raised peak RSS by \d+ MB", result.stdout)
    assert re.search(r"Change log: [\d,]+ bytes per logged version; after 20,000 writes", result.stdout)
    assert "The change log on and off rows ran on twin data sets, 2 times each in turn" in result.stdout
    assert "and so did the rows of the ratio targets (ceiling: trivial route, 1 state, POST 1 state" in result.stdout
    assert re.search(r"they reach \d\.\d\dx \(upsert\) and \d\.\d\dx \(read\) of the ceiling", result.stdout)
    assert re.search(r"the writers' lock was held \d+\.\d% of the time at [\d,]+ writes/s", result.stdout)
    from bench.report import SCALING_CORES

    scaling = re.findall(r"^ +(\d+) cores: [\d,]+ writes/s at most, limited by", result.stdout, re.M)
    assert scaling == [str(cores) for cores in SCALING_CORES], result.stdout


@pytest.mark.parametrize(
    ("rates", "kept"),
    (([30.0], 30.0), ([30.0, 10.0, 20.0], 20.0), ([40.0, 10.0], 10.0), ([5.0, 9.0, 7.0, 8.0], 7.0)),
)
def test_turns_keep_the_median_round_and_every_rounds_errors(rates, kept):
    from bench.run import median_round

    rows = [
        {"rps": rate, "errors": n, "postgres": {"rps": -rate, "errors": 1}, "alone": {"rps": 2 - rate, "errors": 2}}
        for n, rate in enumerate(rates)
    ]
    row = median_round(rows)
    assert row["rps"] == kept
    assert row["errors"] == sum(range(len(rates)))
    middle = (len(rates) - 1) // 2
    assert row["postgres"] == {"rps": sorted(-rate for rate in rates)[middle], "errors": len(rates)}
    assert row["alone"] == {"rps": sorted(2 - rate for rate in rates)[middle], "errors": 2 * len(rates)}
    assert median_round([dict(r, postgres=None, alone=None) for r in rows])["postgres"] is None
