"""The CLI's and start-up's refusals: one-line usage errors, private files, foreign databases, unwritable paths."""

import contextlib
import os
import socket
import sqlite3
import stat
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from conftest import BACKEND_INDEPENDENT, botstate_env, initialized, run_botstate, run_python, told_the_database
from zygote import BOTSTATE_SCRIPT

from backends.sqlite import SQLiteStorage
from cli import common as cli

SQLITE_FILE = pytest.mark.sqlite_only("about SQLite's own files")


def flask(database, *args):
    """Run the real `.venv/bin/flask --app app ARGS` on the SQLite file `database`; the finished process."""
    env = {k: v for k, v in botstate_env(DATABASE=database).items() if not k.startswith("FLASK_")}
    return run_python([BOTSTATE_SCRIPT, *args], env)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def umask(value):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# 1. Usage errors are one line


@pytest.mark.parametrize(
    "args, message, help_of",
    (
        (["bots", "create"], "Missing argument 'SLUG'.", "bots create"),
        (["bots", "create", "x", "--bogus"], "No such option '--bogus'.", "bots create"),
        (["bots", "create", "x", "--nam", "y"], "No such option '--nam'. Did you mean '--name'?", "bots create"),
        (["bots", "bogus"], "No such command 'bogus'.", "bots"),
        (["bots", "--bogus"], "No such option '--bogus'.", "bots"),
        (
            ["bots", "rotate-key", "x", "--grace", "abc"],
            "Invalid value for '--grace': 'abc' is not a valid integer range.",
            "bots rotate-key",
        ),
        (
            ["db", "restore", "/nonexistent/x.db"],
            "Invalid value for 'PATH': File '/nonexistent/x.db' does not exist.",
            "db restore",
        ),
        (
            ["tickers", "import", "/nonexistent.csv"],
            "Invalid value for 'FILE': '/nonexistent.csv': No such file or directory.",
            "tickers import",
        ),
        (
            ["states", "export", "--json"],
            "--json needs --output FILE: standard output carries the rows.",
            "states export",
        ),
        (["init-db", "--bogus"], "No such option '--bogus'.", "init-db"),
    ),
)
def test_usage_errors_of_every_command_are_one_line(tmp_path, args, message, help_of):
    done = flask(initialized(tmp_path / "x.db"), *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"Error: {message} Try 'botstate {help_of} --help' for help."]


def test_a_group_without_a_command_still_shows_its_help(tmp_path):
    done = flask(tmp_path / "x.db", "bots")
    assert "rotate-key" in done.stderr + done.stdout


@BACKEND_INDEPENDENT
def test_every_botstate_command_and_group_shows_usage_errors_as_one_line(app):
    """So that a command added later, or a new root command, cannot forget it."""

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    for name, command in app.cli.commands.items():
        for each in walk(command):
            assert isinstance(each, cli.OneLineUsage), (name, each.name)


def test_one_line_usage_serves_any_root_command():
    @click.group(cls=cli.OneLineGroup)
    def root():
        """A root command, as a `botstate` entry point would be."""

    @root.command()
    @click.argument("slug")
    def create(slug):
        """Create."""

    for args, line in ((["create"], "Missing argument 'SLUG'."), (["--bad"], "No such option '--bad'.")):
        result = CliRunner().invoke(root, args, prog_name="botstate")
        assert result.exit_code == 2
        help_of = "botstate create" if args == ["create"] else "botstate"
        assert result.stderr.splitlines() == [f"Error: {line} Try '{help_of} --help' for help."]


# 2. A host that does not resolve


def test_a_host_that_does_not_resolve_is_one_line(tmp_path):
    with pytest.raises(socket.gaierror) as resolving:
        socket.getaddrinfo("bogus.invalid", 8080)
    done = run_botstate(["serve.py"], DATABASE=tmp_path / "x.db", HOST="bogus.invalid", PORT=8080)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"botstate: cannot listen on bogus.invalid:8080: {resolving.value.strerror}"]


# 3. restore --force warns only once the file is known to be a backup


@SQLITE_FILE
@pytest.mark.parametrize(
    "content, why",
    ((b"", ", or is damaged"), (b"not a database", " (file is not a database)"), (None, ", or is damaged")),
    ids=("empty", "text", "another sqlite file"),
)
def test_forced_restore_of_what_is_no_backup_refuses_without_a_warning(tmp_path, storage, bot, content, why):
    source = tmp_path / "notadb.db"
    if content is None:
        with contextlib.closing(sqlite3.connect(source)) as other:
            other.execute("CREATE TABLE t (x)")
    else:
        source.write_bytes(content)
    storage.start_upkeep()  # what a running server holds: servers_running() is true
    done = flask(storage.path, "db", "restore", "--force", str(source))
    assert done.returncode == 1
    assert told_the_database(done.stderr, storage.path).splitlines() == [
        f"Error: {source} is not a botstate database{why}"
    ]
    assert storage.get_bot("my-bot") is not None


# 4. backup names the path it cannot write


@SQLITE_FILE
@pytest.mark.parametrize("where", ("missing folder", "under a file", "read-only folder"))
def test_a_backup_that_cannot_be_written_names_its_path_and_why(tmp_path, storage, where):
    if where == "missing folder":
        folder = tmp_path / "nonexistent"
    elif where == "under a file":
        folder = tmp_path / "a-file"
        folder.write_text("")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
    target = folder / "x.db"
    done = flask(storage.path, "db", "backup", str(target))
    assert done.returncode == 1
    why = "folder not writable" if where == "read-only folder" else "no such folder"
    assert told_the_database(done.stderr, storage.path).splitlines() == [
        f"Error: cannot write {target}: {folder}: {why}"
    ]


# 6. Files are private whatever the umask


@SQLITE_FILE
def test_every_file_botstate_creates_is_private_under_umask_022(tmp_path):
    path = tmp_path / "private.db"
    with umask(0o022):
        database = SQLiteStorage(str(path))
        try:
            database.migrate()
            database.start_upkeep()
            database.add_account("10000000-0000-4000-8000-000000000000", "alice")
            database.backup(str(tmp_path / "backup.db"))
            created = [f"{path}", f"{path}-wal", f"{path}-shm", f"{path}-serving", f"{path}-writers"]
            created.append(f"{tmp_path / 'backup.db'}")
            assert {name: oct(mode(name)) for name in created} == {name: "0o600" for name in created}
        finally:
            database.close()


@SQLITE_FILE
def test_an_existing_database_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.db"
    path.write_bytes(b"")
    path.chmod(0o640)  # the operator's choice, e.g. for a backup agent's group
    with umask(0o022):
        database = SQLiteStorage(str(path))
        try:
            database.migrate()
            database.add_account("10000000-0000-4000-8000-000000000000", "alice")
            assert (mode(path), mode(f"{path}-wal")) == (0o640, 0o640)
        finally:
            database.close()


# 7. A SQLite file of another program is refused, not annexed


def foreign_database(path, *tables):
    with contextlib.closing(sqlite3.connect(path)) as other:
        for table in tables:
            other.execute(f'CREATE TABLE "{table}" (x)')
        other.commit()


@SQLITE_FILE
@pytest.mark.parametrize(
    "command, prefix",
    (
        (["-m", "botstate", "init-db"], "Error: "),
        (["-m", "botstate", "bots", "list"], "Error: "),
        (["serve.py"], "botstate: "),
    ),
)
def test_a_sqlite_file_of_another_program_is_refused_and_left_alone(tmp_path, command, prefix):
    path = tmp_path / "other.db"
    foreign_database(path, "notes", "tags")
    before = path.read_bytes()
    done = run_botstate(command, DATABASE=path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{prefix}cannot use the database {path}: it is a SQLite database of another program"
        " (tables: notes, tags) and holds no botstate schema"
    ]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


@SQLITE_FILE
@pytest.mark.parametrize("content", ("new", "empty file", "sqlite file without tables"))
def test_a_new_or_empty_database_file_gets_the_schema(tmp_path, content):
    path = tmp_path / "x.db"
    if content == "empty file":
        path.write_bytes(b"")
    elif content == "sqlite file without tables":
        with contextlib.closing(sqlite3.connect(path)) as empty:
            empty.execute("PRAGMA user_version = 7")
    done = run_botstate(["-m", "botstate", "init-db", "--json"], DATABASE=path)
    assert done.returncode == 0, done.stderr
    assert '"applied": ["0001' in done.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, the full disk of Linux")
@pytest.mark.parametrize("args", (["--version"], ["--help"], ["bots", "list"], ["bots", "create", "my-bot"]))
def test_output_to_a_full_disk_is_one_line(tmp_path, args):
    database = initialized(tmp_path / "b.db")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "botstate", *args],
            env=botstate_env(DATABASE=database),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    stderr = told_the_database(done.stderr, database) if args[0] == "bots" else done.stderr
    assert (done.returncode, stderr) == (1, "botstate: cannot write its output: No space left on device\n")
