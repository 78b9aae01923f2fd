"""The settings and case names bench/run.py measures with and bench/report.py reports by."""

THREADS = 4  # the ceiling's and the references' waitress threads, as the issue measured them
# What the ceiling's request cost in the run the CPU target was set beside (ms of CPU).
ISSUE_CEILING_CPU_MS = 0.21
CONNECTIONS = 8
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
# The cases the ratio targets compare, also run ROUNDS times in turn (median round): on a shared
# machine one 10 s run of the ceiling alone has come out at half its speed of the next.
HEADLINE = ("ceiling: trivial route, 1 state", "POST 1 state", "GET one row")
EMPTY_POLL = "GET changes, nothing new"
NO_POSTGRES = (
    "PostgreSQL column empty: no server (make bench starts one with scripts/with-postgres; see docs/performance.md)"
)
