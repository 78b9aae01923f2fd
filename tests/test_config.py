"""Settings: defaults, BOTSTATE_* parsing and its one-line refusals, and the limits serve.py gives waitress."""

import logging
import os
import subprocess
import sys
import types

import pytest
from conftest import ROOT, start_server, stop_server
from zygote import BOTSTATE_SCRIPT

import config
from app import create_app


def test_defaults(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("BOTSTATE_"):
            monkeypatch.delenv(name)
    app = create_app({"DATABASE": str(tmp_path / "x.db")})
    app.extensions["botstate.storage"].close()
    assert (app.config["HOST"], app.config["PORT"]) == ("127.0.0.1", 8080)
    assert (app.config["MAX_STATES"], app.config["MAX_STATE_BYTES"]) == (1000, 65536)
    assert app.config["MAX_BODY_BYTES"] == 10 * 1024 * 1024
    assert app.config["RATE_LIMIT"] == "", "no rate limit"


def test_default_database_is_in_the_instance_folder(tmp_path, monkeypatch):
    import app as app_module

    monkeypatch.delenv("BOTSTATE_DATABASE", raising=False)
    monkeypatch.setattr(app_module.BotstateFlask, "auto_find_instance_path", lambda self: str(tmp_path / "instance"))
    app = create_app()
    app.extensions["botstate.storage"].close()
    assert app.config["DATABASE"] == str(tmp_path / "instance" / "botstate.db")
    assert (tmp_path / "instance" / "botstate.db").exists()


@pytest.mark.parametrize("xdg", ("", "data"), ids=["home", "XDG_DATA_HOME"])
def test_installed_the_default_database_is_in_the_users_data_folder(tmp_path, monkeypatch, xdg):
    # Review: the single file's instance folder is inside its unpacked copy, which each upgrade replaces.
    import app as app_module

    monkeypatch.delenv("BOTSTATE_DATABASE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / xdg) if xdg else "")
    installed = types.SimpleNamespace(root_path=str(tmp_path / "site-packages"), instance_path="unused")
    expected = tmp_path / (xdg or ".local/share") / "botstate" / "botstate.db"
    assert app_module.default_database(installed) == str(expected)


def test_waitress_limits_are_set_deliberately(tmp_path):
    from serve import BODY_LIMIT_SLACK, make_server

    app = create_app(
        {
            "DATABASE": str(tmp_path / "x.db"),
            "PORT": 0,
            "MAX_BODY_BYTES": 4096,
            "CHANNEL_TIMEOUT": 7,
            "CONNECTION_LIMIT": 9,
            "THREADS": 3,
        }
    )
    server = make_server(app)
    server.close()
    app.extensions["botstate.storage"].close()
    adj = server.adj
    assert adj.max_request_body_size == 4096 + BODY_LIMIT_SLACK + 1  # waitress refuses a body of this size or more
    assert adj.asyncore_use_poll and adj.cleanup_interval == 1  # past 1024 sockets; deadlines checked each second
    assert not logging.getLogger("waitress.queue").isEnabledFor(logging.WARNING), "no line per queued request"
    assert (adj.channel_timeout, server.clients_limit, adj.threads) == (7, 9, 3)
    assert adj.connection_limit == 9 + len(adj.listen) + 1  # waitress counts its listening socket and trigger


def test_environment_overrides_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTSTATE_DATABASE", str(tmp_path / "env.db"))
    monkeypatch.setenv("BOTSTATE_THREADS", "8")
    monkeypatch.setenv("BOTSTATE_MAX_STATES", " 50 ")  # spaces around a number are fine
    monkeypatch.setenv("BOTSTATE_SYNCHRONOUS", "full")
    app = create_app()
    app.extensions["botstate.storage"].close()
    assert app.config["DATABASE"] == str(tmp_path / "env.db")
    assert (tmp_path / "env.db").exists()
    assert (app.config["THREADS"], app.config["MAX_STATES"], app.config["SYNCHRONOUS"]) == (8, 50, "FULL")


RATE = "a rate such as 600/minute (or several: 10/second;600/minute)"


@pytest.mark.parametrize(
    "name,value,message",
    (
        ("PORT", "http", "BOTSTATE_PORT must be an integer from 0 to 65535, got 'http'"),
        ("PORT", "70000", "BOTSTATE_PORT must be an integer from 0 to 65535, got 70000"),
        ("THREADS", "0", "BOTSTATE_THREADS must be auto or an integer from 1 to 256, got 0"),
        ("MAX_STATES", "true", "BOTSTATE_MAX_STATES must be an integer from 1 to 100000, got 'true'"),
        ("PORT", "--5", "BOTSTATE_PORT must be an integer from 0 to 65535, got '--5'"),
        ("THREADS", "²", "BOTSTATE_THREADS must be auto or an integer from 1 to 256, got '²'"),
        ("THREADS", "4\n5", "BOTSTATE_THREADS must be auto or an integer from 1 to 256, got '4\\n5'"),
        # The deepest state a write body read in pieces holds (the encoder writes 254); deeper ones got a 500.
        ("MAX_STATE_DEPTH", "252", "BOTSTATE_MAX_STATE_DEPTH must be an integer from 1 to 251, got 252"),
        ("MAX_STATE_DEPTH", "500", "BOTSTATE_MAX_STATE_DEPTH must be an integer from 1 to 251, got 500"),
        ("MAX_STATE_DEPTH", "0", "BOTSTATE_MAX_STATE_DEPTH must be an integer from 1 to 251, got 0"),
        ("SYNCHRONOUS", "sometimes", "BOTSTATE_SYNCHRONOUS must be one of OFF, NORMAL, FULL, EXTRA, got 'sometimes'"),
        ("HOST", "", "BOTSTATE_HOST must not be empty"),
        ("RATE_LIMIT", "lots", f"BOTSTATE_RATE_LIMIT must be {RATE}, got 'lots'"),
        ("RATE_LIMIT", "0/minute", f"BOTSTATE_RATE_LIMIT must be {RATE}, got '0/minute'"),
        ("RATE_LIMIT", "5/sec", f"BOTSTATE_RATE_LIMIT must be {RATE}, got '5/sec'"),
        ("RATE_LIMIT", "10/second;", f"BOTSTATE_RATE_LIMIT must be {RATE}, got '10/second;'"),
        ("WORKERS", "0", "BOTSTATE_WORKERS must be auto or an integer from 1 to 64, got 0"),
        ("WORKERS", "65", "BOTSTATE_WORKERS must be auto or an integer from 1 to 64, got 65"),
        ("WORKERS", "many", "BOTSTATE_WORKERS must be auto or an integer from 1 to 64, got 'many'"),
        ("WORKERS", "", "BOTSTATE_WORKERS must be auto or an integer from 1 to 64, got ''"),
        ("WORKERS", "1_0", "BOTSTATE_WORKERS must be auto or an integer from 1 to 64, got '1_0'"),
        ("PORT", "+80", "BOTSTATE_PORT must be an integer from 0 to 65535, got '+80'"),
        ("THREADS", "٣", "BOTSTATE_THREADS must be auto or an integer from 1 to 256, got '٣'"),
    ),
)
def test_bad_settings_are_named(tmp_path, monkeypatch, name, value, message):
    monkeypatch.setenv(f"BOTSTATE_{name}", value)
    with pytest.raises(config.ConfigError) as raised:
        create_app({"DATABASE": str(tmp_path / "x.db")})
    assert raised.value.message == message


def configured(tmp_path, monkeypatch, **settings):
    """The app's config with these BOTSTATE_ variables set (or unset, for None)."""
    for name, value in settings.items():
        if value is None:
            monkeypatch.delenv(f"BOTSTATE_{name}", raising=False)
        else:
            monkeypatch.setenv(f"BOTSTATE_{name}", value)
    app = create_app({"DATABASE": str(tmp_path / "x.db")})
    app.extensions["botstate.storage"].close()
    return app.config


@pytest.mark.parametrize("value", (None, "auto", " AUTO ", "3"))
def test_workers_are_one_per_usable_cpu_at_most_four_unless_set(tmp_path, monkeypatch, value):
    automatic = min(len(os.sched_getaffinity(0)), config.AUTO_WORKERS_MAX)
    assert configured(tmp_path, monkeypatch, WORKERS=value)["WORKERS"] == (3 if value == "3" else automatic)


@pytest.mark.parametrize(
    "workers,threads,expected",
    (
        ("1", None, config.AUTO_THREADS_ALONE),
        ("1", " Auto ", config.AUTO_THREADS_ALONE),
        ("2", None, 1),
        ("3", "auto", 1),
        ("1", "7", 7),
        ("2", "3", 3),
    ),
)
def test_threads_are_four_alone_and_one_per_worker_of_several_unless_set(
    tmp_path, monkeypatch, workers, threads, expected
):
    assert configured(tmp_path, monkeypatch, WORKERS=workers, THREADS=threads)["THREADS"] == expected


@pytest.mark.parametrize(
    "value,setting",
    (("", ""), ("  ", ""), ("600/minute", "600/minute"), (" 10 per second; 600/minute ", "10 per second; 600/minute")),
)
def test_rate_limit_is_off_when_empty_and_kept_as_written(tmp_path, monkeypatch, value, setting):
    monkeypatch.setenv("BOTSTATE_RATE_LIMIT", value)
    app = create_app({"DATABASE": str(tmp_path / "x.db")})
    app.extensions["botstate.storage"].close()
    assert app.config["RATE_LIMIT"] == setting


@pytest.mark.parametrize(
    "name,value,message",
    (
        ("PORT", "http", "BOTSTATE_PORT must be an integer from 0 to 65535, got 'http'"),
        ("MAX_STATE_DEPTH", "500", "BOTSTATE_MAX_STATE_DEPTH must be an integer from 1 to 251, got 500"),
        ("WORKERS", "none", "BOTSTATE_WORKERS must be auto or an integer from 1 to 64, got 'none'"),
    ),
)
def test_serve_refuses_a_bad_setting_with_one_line(tmp_path, name, value, message):
    env = dict(os.environ, BOTSTATE_DATABASE=str(tmp_path / "x.db"), **{f"BOTSTATE_{name}": value})
    result = subprocess.run([sys.executable, "serve.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == f"botstate: {message}"


def test_serve_says_where_it_listens_and_how_to_create_a_bot(tmp_path):
    database = tmp_path / "new.db"
    process, url, log_path = start_server(database)
    stop_server(process)
    log = log_path.read_text()
    assert f"botstate listening on {url} (database {database}, 4 threads)" in log
    assert f"Create one with: BOTSTATE_DATABASE={database} {BOTSTATE_SCRIPT} bots create my-bot" in log
    assert process.returncode == 0, "SIGTERM stops the server cleanly"


def test_serve_says_each_of_several_workers_has_one_thread_by_default(tmp_path):
    database = tmp_path / "new.db"
    process, url, log_path = start_server(database, WORKERS=2)
    stop_server(process)
    assert f"botstate listening on {url} (database {database}, 2 workers of 1 thread)" in log_path.read_text()


def test_serve_gives_no_hint_once_a_bot_exists(database, bot):
    process, url, log_path = start_server(database)
    stop_server(process)
    assert "listening on" in log_path.read_text()
    assert "Create one with" not in log_path.read_text()
