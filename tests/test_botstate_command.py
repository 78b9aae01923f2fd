"""The `botstate` command: its help and version, any folder, --env-file, `serve`'s overrides."""

import json
import threading

import pytest
from conftest import botstate_env, run_python, start_server, stop_server
from test_docs import all_commands, all_docs
from worker_processes import wait_for_workers
from zygote import BOTSTATE_SCRIPT

import botstate
import envfile
from version import VERSION

BOTSTATE = ["-m", "botstate"]


def test_help_describes_botstate_and_lists_exactly_its_commands(runner):
    result = runner.invoke(args=["--help"])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: botstate [OPTIONS] COMMAND [ARGS]...")
    assert "trading bots" in result.output
    names = [line.split()[0] for line in result.output.split("Commands:\n", 1)[1].strip().splitlines()]
    assert names == list(botstate.main.commands)
    assert not {"run", "shell", "routes", "limiter"} & set(names)


def test_every_command_has_help_and_is_in_the_docs():
    docs = all_docs()
    for name, command in all_commands():
        assert command.help, name
        assert f"botstate {name}" in docs, name


def test_version_is_the_one_version(runner):
    result = runner.invoke(args=["--version"])
    assert (result.exit_code, result.output) == (0, f"botstate {VERSION}\n")
    assert run_python([BOTSTATE_SCRIPT, "--version"], botstate_env()).stdout == f"botstate {VERSION}\n"


def test_the_installed_command_works_from_any_folder(tmp_path):
    env = botstate_env(DATABASE=tmp_path / "b.db")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for args in (["init-db"], ["bots", "create", "my-bot", "--json"], ["bots", "list", "--json"]):
        done = run_python([BOTSTATE_SCRIPT, *args], env, cwd=folder)
        assert done.returncode == 0, done.stderr
    assert [bot["slug"] for bot in json.loads(done.stdout)] == ["my-bot"]
    assert sorted(path.name for path in folder.iterdir()) == []  # nothing written where it ran


ENV_FILES = [
    # (file text, assignments, warnings)
    ("A=1\nB = two words \n", [("A", "1"), ("B", "two words")], []),
    ("# comment\n; also a comment\n\n  C=3", [("C", "3")], []),
    ("D=\"  kept  \"\nE='single $X \\\\'\n", [("D", "  kept  "), ("E", "single $X \\\\")], []),
    ('F="a \\"quoted\\" \\\\ \\$HOME"\n', [("F", 'a "quoted" \\ $HOME')], []),
    ('G="two\nlines"\n', [("G", "two\nlines")], []),
    ("H=con\\\ntinued\n", [("H", "continued")], []),
    ("I=a\\ b\n", [("I", "a b")], []),
    ("J=\n", [("J", "")], []),
    ("K=x=y\n", [("K", "x=y")], []),
    ("oops\nL=1\n", [("L", "1")], ["line 1: no '=' in 'oops'; left out"]),
    ("1BAD=x\nM=2\n", [("M", "2")], ["'1BAD' is not a variable name; left out"]),
    # Review: as systemd, a quote opens a value only where the value starts.
    ("N=it's.db\nO=2 # it's\n", [("N", "it's.db"), ("O", "2 # it's")], []),
    ('P="x"  y\n', [("P", "xy")], []),
    ("Q=b\\\r\nR=1\r\n", [("Q", "b"), ("R", "1")], []),
    ("# a comment \\\nS=still the comment\nT=3\n", [("T", "3")], []),
]


@pytest.mark.parametrize("text, assignments, warnings", ENV_FILES)
def test_env_files_read_as_systemd_reads_them(text, assignments, warnings):
    assert envfile.parse(text) == (assignments, warnings)


def test_a_name_assigned_twice_takes_the_last_value_and_the_environment_wins(tmp_path):
    path = tmp_path / "botstate.env"
    path.write_text("A=old\nA=new\nB=file\n")
    environ = {"B": "environment"}
    assert envfile.load(path, environ) == []
    assert environ == {"A": "new", "B": "environment"}


@pytest.mark.parametrize("text, message", (('A="open\n', "line 1: the value of A has no closing quote"),))
def test_an_env_file_that_cannot_be_read_is_one_line(text, message):
    with pytest.raises(envfile.EnvFileError, match=f"^{message}$"):
        envfile.parse(text)


def test_env_file_settings_reach_the_commands_and_the_environment_wins(tmp_path):
    from_file, from_env = tmp_path / "file.db", tmp_path / "env.db"
    env_file = tmp_path / "botstate.env"
    env_file.write_text(f'# written by hand\nBOTSTATE_DATABASE="{from_file}"\nBOTSTATE_BOGUS=1\n')
    done = run_python([*BOTSTATE, "--env-file", str(env_file), "init-db", "--json"], botstate_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["database"] == str(from_file)
    assert "ignoring BOTSTATE_BOGUS: not a botstate setting" in done.stderr  # as from the environment
    done = run_python([*BOTSTATE, "--env-file", str(env_file), "init-db", "--json"], botstate_env(DATABASE=from_env))
    assert json.loads(done.stdout)["database"] == str(from_env)


@pytest.mark.parametrize(
    "file_text, message",
    (
        (None, "Error: --env-file {path}: No such file or directory"),
        (
            'BOTSTATE_DATABASE="x\n',
            "Error: --env-file {path}: line 1: the value of BOTSTATE_DATABASE has no closing quote",
        ),
    ),
    ids=["missing", "unclosed quote"],
)
def test_a_bad_env_file_stops_the_command_with_one_line(tmp_path, file_text, message):
    path = tmp_path / "botstate.env"
    if file_text is not None:
        path.write_text(file_text)
    done = run_python([*BOTSTATE, "--env-file", str(path), "bots", "list"], botstate_env(DATABASE=tmp_path / "b.db"))
    assert (done.returncode, done.stderr.splitlines()) == (1, [message.format(path=path)])


def test_serve_takes_host_port_threads_and_workers_over_the_settings(tmp_path):
    overrides = ["--host", "127.0.0.1", "--port", "0", "--threads", "3", "--workers", "2"]
    command = [*BOTSTATE, "serve", *overrides]
    process, _, log_path = start_server(tmp_path / "b.db", command=command, PORT=8, THREADS=4, WORKERS=1)
    try:
        assert ", 2 workers of 3 threads)" in log_path.read_text()
        assert len(wait_for_workers(process, 2)) == 2
    finally:
        stop_server(process)


def test_serve_takes_threads_auto_over_the_setting(tmp_path):
    command = [*BOTSTATE, "serve", "--port", "0", "--threads", "auto", "--workers", "2"]
    process, _, log_path = start_server(tmp_path / "b.db", command=command, THREADS=3)
    try:
        assert ", 2 workers of 1 thread)" in log_path.read_text()
    finally:
        stop_server(process)


@pytest.mark.parametrize(
    "override, message",
    (
        (["--port", "http"], "Error: Invalid value for '--port': 'http' is not a valid integer."),
        (["--threads", "0"], "Error: Invalid value for '--threads': '0' is not auto or an integer from 1 to 256."),
        (["--threads", "+2"], "Error: Invalid value for '--threads': '+2' is not auto or an integer from 1 to 256."),
        (["--host", "bogus.invalid"], "botstate: cannot listen on bogus.invalid:"),
        (["--workers", "0"], "Error: Invalid value for '--workers': '0' is not auto or an integer from 1 to 64."),
        (["--workers", "two"], "Error: Invalid value for '--workers': 'two' is not auto or an integer from 1 to 64."),
        (["--workers", "2", "--host", "bogus.invalid"], "botstate: cannot listen on bogus.invalid:"),
    ),
    ids=["port", "threads", "threads-sign", "host", "workers", "workers-word", "workers-host"],
)
def test_a_bad_override_is_refused_in_one_line_naming_it(tmp_path, override, message):
    done = run_python([*BOTSTATE, "serve", *override], botstate_env(DATABASE=tmp_path / "b.db", PORT=0))
    assert done.returncode in (1, 2)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(message), line


def test_an_in_process_command_leaves_the_apps_storage_to_its_owner(runner, storage, bot):
    # Review: each command closed the app's storage, under a thread still using it (a segfault on SQLite).
    serving = storage.servers_running()
    errors, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                storage.list_bots()
            except Exception as error:  # noqa: BLE001 - counted, then asserted
                errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(10):
            assert runner.invoke(args=["bots", "list", "--json"]).exit_code == 0
    finally:
        stop.set()
        reader.join()
    assert errors == [] and storage.servers_running() == serving


@pytest.mark.parametrize("shell, opening", (("bash", "_botstate_completion() {"), ("zsh", "#compdef botstate")))
def test_shell_completion_scripts_come_from_the_command(shell, opening):
    done = run_python(BOTSTATE, {**botstate_env(), "_BOTSTATE_COMPLETE": f"{shell}_source"})
    assert done.returncode == 0 and done.stdout.startswith(opening), done.stdout[:200]


def test_completion_offers_the_commands_for_what_was_typed():
    env = {**botstate_env(), "_BOTSTATE_COMPLETE": "bash_complete", "COMP_WORDS": "botstate bo", "COMP_CWORD": "1"}
    assert run_python(BOTSTATE, env).stdout.splitlines() == ["plain,bots"]
