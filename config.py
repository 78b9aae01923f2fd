"""Settings: defaults, overridden by BOTSTATE_* environment variables, then checked."""

import os
import re

import click

import jsoncodec
import writebody

ENV_PREFIX = "BOTSTATE"

# Every setting and its default. DATABASE defaults to the app's instance folder,
# so the app factory fills it in.
DEFAULTS = {
    "HOST": "127.0.0.1",
    "PORT": 8080,
    "DATABASE": None,
    # postgresql://user:password@host:5432/dbname selects PostgreSQL; empty is SQLite at DATABASE.
    "DATABASE_URL": "",
    # Waitress threads per process: "auto" is AUTO_THREADS_ALONE for one process, 1 per worker of several.
    "THREADS": "auto",
    # Server processes sharing the port: "auto" is one per CPU this process may run on, at most AUTO_WORKERS_MAX.
    "WORKERS": "auto",
    "MAX_STATES": 1000,
    "MAX_STATE_BYTES": 65536,
    "MAX_STATE_DEPTH": 100,
    "MAX_BODY_BYTES": 10 * 1024 * 1024,
    # A page of GET /state ends early, with a nextCursor, once its rows pass this many bytes.
    "MAX_PAGE_BYTES": 4 * 1024 * 1024,
    "BUSY_TIMEOUT_MS": 5000,
    "SYNCHRONOUS": "NORMAL",
    "CHANNEL_TIMEOUT": 30,
    # Seconds a client has to send a request's headers (from its first byte, or
    # from connecting); then its body must arrive at MIN_BODY_RATE bytes/s on average.
    "HEADER_TIMEOUT": 5,
    "MIN_BODY_RATE": 8192,
    "CONNECTION_LIMIT": 1000,
    "LOG_LEVEL": "INFO",
    # 1 serves GET /metrics (Prometheus); 0, the default, does not.
    "METRICS": 0,
    # TEXT for people, JSON (one object per line) for log shippers.
    "LOG_FORMAT": "TEXT",
    # Requests per bot, in the limits library's notation ("600/minute"); empty is no limit.
    "RATE_LIMIT": "",
    # The change log keeps this many days of history (0: none past what readers keep up with),
    # and at most this many versions of a row (0: no cap); a row's newest version always stays.
    "HISTORY_DAYS": 7,
    "HISTORY_VERSIONS": 0,
}

INT_RANGES = {
    "PORT": (0, 65535),
    "THREADS": (1, 256),
    "MAX_STATES": (1, 100_000),
    "MAX_STATE_BYTES": (2, 64 * 1024 * 1024),
    # What a large write body, read in pieces, may nest (251), within what the encoder writes (254).
    "MAX_STATE_DEPTH": (1, min(jsoncodec.MAX_DEPTH, writebody.MAX_STATE_NESTING)),
    "MAX_BODY_BYTES": (1024, 1024 * 1024 * 1024),
    "MAX_PAGE_BYTES": (1024, 1024 * 1024 * 1024),
    "BUSY_TIMEOUT_MS": (0, 600_000),
    "CHANNEL_TIMEOUT": (1, 3600),
    "HEADER_TIMEOUT": (1, 3600),
    "MIN_BODY_RATE": (1, 1024 * 1024 * 1024),
    "CONNECTION_LIMIT": (1, 100_000),
    "METRICS": (0, 1),
    "HISTORY_DAYS": (0, 36500),
    "HISTORY_VERSIONS": (0, 1_000_000_000),
}

WORKERS_RANGE = (1, 64)
# One process serves slow and fast requests side by side on 4 threads; a worker among several
# serves on 1, since its threads would only wait for its one GIL (docs/performance.md).
AUTO_THREADS_ALONE = 4
# Past 4 workers on SQLite, writes queue on its one write lock and more processes add only memory (docs/performance.md).
AUTO_WORKERS_MAX = 4

CHOICES = {
    "SYNCHRONOUS": ("OFF", "NORMAL", "FULL", "EXTRA"),
    "LOG_LEVEL": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "LOG_FORMAT": ("TEXT", "JSON"),
}


class ConfigError(click.ClickException):
    """The service cannot start as configured; the CLI and serve.py show it as one line."""


def from_environ(config, environ=os.environ):
    """Set each known setting from its BOTSTATE_* variable; returns unknown BOTSTATE_* names."""
    prefix = f"{ENV_PREFIX}_"
    unknown = []
    for name, value in environ.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if key in DEFAULTS:
            config[key] = value
        else:
            unknown.append(name)
    return sorted(unknown)


def _as_int(value):
    # Plain ASCII digits only: int() would also take "1_0", "+3" and other scripts' digits.
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value.strip())
    return value


def check(config):
    """Coerce and validate every known setting in `config` in place."""
    config["WORKERS"] = workers_setting(config["WORKERS"])
    config["THREADS"] = threads_setting(config["THREADS"], config["WORKERS"])
    for key, (low, high) in INT_RANGES.items():
        value = _as_int(config[key])
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            kind = "auto or an integer" if key == "THREADS" else "an integer"
            raise ConfigError(f"{ENV_PREFIX}_{key} must be {kind} from {low} to {high}, got {value!r}")
        config[key] = value
    for key, allowed in CHOICES.items():
        value = str(config[key]).upper()
        if value not in allowed:
            raise ConfigError(f"{ENV_PREFIX}_{key} must be one of {', '.join(allowed)}, got {config[key]!r}")
        config[key] = value
    for key in ("HOST", "DATABASE"):
        value = config[key]
        if value is None or str(value).strip() == "":
            raise ConfigError(f"{ENV_PREFIX}_{key} must not be empty")
        config[key] = str(value)
    config["DATABASE"] = os.path.abspath(os.path.expanduser(config["DATABASE"]))
    config["DATABASE_URL"] = _database_url(config["DATABASE_URL"])
    config["RATE_LIMIT"] = _rate_limit(config["RATE_LIMIT"])
    return config


def _database_url(value):
    """The PostgreSQL URL, stripped ("" for SQLite), once it names PostgreSQL."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    if not text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{ENV_PREFIX}_DATABASE_URL must be a postgresql:// URL such as"
            f" postgresql://botstate:secret@db.example:5432/botstate (or empty for SQLite)"
        )
    import psycopg.conninfo  # only when set

    try:
        psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.ProgrammingError:  # its message repeats the URL, password and all
        raise ConfigError(
            f"{ENV_PREFIX}_DATABASE_URL is not a URL libpq can read: percent-encode any"
            " % @ / : ? # in the user name or password (e.g. %40 for @), and check its ?parameters"
        ) from None
    return text


def _rate_limit(value):
    """The rate limit string, stripped ("" for none), once the limits library parses it."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    import limits  # only when set: importing it takes about 30 ms, at every start

    try:
        valid = all(rate.amount >= 1 for rate in limits.parse_many(text))
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            f"{ENV_PREFIX}_RATE_LIMIT must be a rate such as 600/minute"
            f" (or several: 10/second;600/minute), got {value!r}"
        )
    return text


def usable_cpus():
    """How many CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def workers_setting(value):
    """The number of server processes: an integer in WORKERS_RANGE, or "auto" (one per usable CPU, at most 4)."""
    text = str(value).strip().lower()
    if text == "auto":
        return max(1, min(usable_cpus(), AUTO_WORKERS_MAX))
    low, high = WORKERS_RANGE
    number = _as_int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise ConfigError(f"{ENV_PREFIX}_WORKERS must be auto or an integer from {low} to {high}, got {number!r}")
    return number


def threads_setting(value, workers):
    """Waitress threads per process: "auto" (AUTO_THREADS_ALONE for one process, 1 for each of several
    `workers`), else the value as given, which check() then holds to INT_RANGES."""
    if str(value).strip().lower() == "auto":
        return AUTO_THREADS_ALONE if workers == 1 else 1
    return value
