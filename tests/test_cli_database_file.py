"""The admin commands act on the service's database, never on one they make by mistake: run without
the service's settings, every command but `init-db` (and `db restore`, which brings a database) refuses
a SQLite file that does not exist, in one line naming it, and creates nothing; and each names the database
it acts on, on stderr, unless it prints --json."""

import json

import click
import pytest
from conftest import initialized, run_botstate

import botstate

ACCOUNT = "550e8400-e29b-41d4-a716-446655440000"
# Arguments that each admin command parses, so that it reaches its database (FILE and PATH exist).
ARGUMENTS = {
    "bots create": ["my-bot"],
    "bots list": [],
    "bots rotate-key": ["my-bot"],
    "bots revoke-key": ["my-bot"],
    "bots keys": ["my-bot"],
    "bots add-key": ["my-bot"],
    "bots delete": ["my-bot", "--yes"],
    "accounts add": [],
    "accounts import": ["{file}"],
    "accounts list": [],
    "accounts delete": [ACCOUNT, "--yes"],
    "tickers add": ["AAPL"],
    "tickers import": ["{file}"],
    "tickers list": [],
    "tickers delete": ["AAPL", "--yes"],
    "states export": ["--output", "{folder}/out.jsonl"],
    "states import": ["{file}"],
    "states show": ["my-bot"],
    "states history": ["my-bot", "--account", ACCOUNT, "--ticker", "AAPL"],
    "db backup": ["{folder}/copy.db"],
    "admin-keys create": ["ops"],
    "admin-keys list": [],
    "admin-keys revoke": ["ops"],
}
# Commands that make or bring the database, and the server (which makes it, as `make run` shows).
MAKERS = {"init-db", "db restore", "serve"}


def leaf_commands(command, path=()):
    """The names of the `botstate` commands under `command`, as `bots list`."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path)


def run_command(tmp_path, name, as_json, database):
    """`botstate NAME ARGUMENTS [--json]` on `database`, its FILE holding an account id; the finished process."""
    source = tmp_path / "rows.txt"
    source.write_text(ACCOUNT + "\n")
    args = [arg.format(file=source, folder=tmp_path) for arg in ARGUMENTS[name]]
    return run_botstate(["-m", "botstate", *name.split(), *args, *(["--json"] if as_json else [])], DATABASE=database)


def test_every_admin_command_has_a_row():
    assert set(leaf_commands(botstate.main)) - MAKERS == set(ARGUMENTS)


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
@pytest.mark.parametrize("as_json", (False, True), ids=("text", "json"))
def test_a_command_refuses_a_database_file_that_does_not_exist(tmp_path, name, as_json):
    missing = tmp_path / "instance" / "botstate.db"
    done = run_command(tmp_path, name, as_json, missing)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: the database {missing} does not exist: set BOTSTATE_DATABASE (or --env-file FILE) to the"
        " service's database, or run `botstate init-db` to create it there\n"
    )
    assert not missing.exists() and not missing.parent.exists()


def test_init_db_creates_it_and_then_the_commands_use_it(tmp_path):
    database = tmp_path / "botstate.db"
    assert run_botstate(["-m", "botstate", "init-db"], DATABASE=database).returncode == 0
    listed = run_botstate(["-m", "botstate", "bots", "list", "--json"], DATABASE=database)
    assert (listed.returncode, listed.stdout.strip()) == (0, "[]")


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
@pytest.mark.parametrize("as_json", (False, True), ids=("text", "json"))
def test_a_command_names_its_database_on_stderr_once_unless_it_prints_json(tmp_path, name, as_json):
    database = initialized(tmp_path / "botstate.db")
    done = run_command(tmp_path, name, as_json, database)
    named = f"botstate: database {database}"
    if as_json:
        assert named not in done.stderr and named not in done.stdout
        if done.returncode == 0 and done.stdout:
            json.loads(done.stdout)  # one JSON value, nothing else
    else:
        assert done.stderr.splitlines()[0] == named and done.stderr.count(named) == 1, done.stderr
