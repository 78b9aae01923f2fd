"""A fork of the tests' zygote behaves as a new interpreter running the same arguments."""

import os
import signal
import subprocess
import sys
import threading

import conftest
import pytest
from conftest import BACKEND_INDEPENDENT, ROOT, botstate_env, run_python, start_server, stop_server
from zygote import BOTSTATE_SCRIPT, ForkedProcess, Zygote, ZygoteDied, forkable

BOTSTATE = ["-m", "botstate"]
pytestmark = pytest.mark.skipif(os.environ.get("TEST_EXEC") == "1", reason="TEST_EXEC=1: every process is a new one")


@BACKEND_INDEPENDENT
@pytest.mark.parametrize(
    "args",
    (
        [*BOTSTATE, "bots", "list", "--json"],  # success, JSON on stdout
        [*BOTSTATE, "bots", "create"],  # usage error: exit 2, one line on stderr
        [*BOTSTATE, "bots", "create", "Not A Slug"],  # refused: exit 1
        [BOTSTATE_SCRIPT, "bots", "--help"],  # the console script
        ["-m", "flask", "--app", "app", "bots", "list"],  # the flask entry, kept for development
        ["serve.py"],  # a bad setting stops the start (BOTSTATE_PORT below)
    ),
    ids=lambda args: " ".join(args[-3:]),
)
def test_a_fork_answers_as_a_new_interpreter_does(database, args):
    env = botstate_env(**database, PORT="http")
    assert forkable(args)
    forked = run_python(args, env, input="")
    started = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, input="", capture_output=True, text=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (started.returncode, started.stdout, started.stderr)


@pytest.mark.parametrize("signum, code", ((signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)))
def test_a_forked_server_is_signalled_and_reports_its_exit_as_popen_does(database, storage, signum, code):
    process, _, log_path = start_server(database)
    assert isinstance(process, ForkedProcess)
    process.send_signal(signum)
    assert process.wait(timeout=15) == code
    if signum == signal.SIGTERM:
        assert "botstate stopped" in log_path.read_text()
    stop_server(process)  # an exited process is left alone


def test_a_command_leaves_the_same_files_forked_as_started_anew(tmp_path):
    # Review: a fork skips the interpreter's teardown, which had closed the commands' storage.
    commands = (["init-db"], ["bots", "create", "my-bot"], ["bots", "list"])
    listings = []
    for folder, forked in ((tmp_path / "forked", True), (tmp_path / "started", False)):
        folder.mkdir()
        env = botstate_env(DATABASE=folder / "b.db")
        for command in commands:
            args = [*BOTSTATE, *command]
            if forked:
                done = run_python(args, env)
            else:
                done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        listings.append(sorted(path.name for path in folder.iterdir()))
    # No -wal or -shm left: only the file writers queue on across processes, which stays (as a lock file must).
    assert listings[0] == listings[1] == ["b.db", "b.db-writers"]


def test_exits_are_told_apart_by_child_not_by_a_reusable_pid(zygote_of_its_own):
    ended = zygote_of_its_own.start(["-m", "botstate", "--version"], botstate_env())
    assert ended.wait(timeout=30) == 0
    # Review: the next child may get a finished one's pid, and was taken for it.
    same_pid = ForkedProcess(zygote_of_its_own, child=ended.child + 1000, pid=ended.pid, args=[])
    assert same_pid.poll() is None


def test_signalling_a_child_as_it_exits_is_harmless(zygote_of_its_own):
    # Review: the zygote reaps at once, so os.kill of its pid raised (or could reach another process).
    for _ in range(20):
        process = zygote_of_its_own.start(["-m", "botstate", "--version"], botstate_env())
        for _ in range(50):
            process.send_signal(0)
        assert process.wait(timeout=30) == 0


def test_starts_from_many_threads_with_large_environments_all_fork(zygote_of_its_own):
    # Review: request lines longer than the pipe's buffer, written at once from several threads, interleaved.
    env = botstate_env(FILLER="x" * 200_000)
    codes = []

    def start_and_wait():
        codes.append(zygote_of_its_own.start(["-m", "botstate", "--version"], env).wait(timeout=60))

    threads = [threading.Thread(target=start_and_wait) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert codes == [0] * len(threads)


def test_a_dead_zygote_says_so_and_the_next_start_gets_a_new_one(tmp_path, zygote_of_its_own):
    server = zygote_of_its_own.start(["serve.py"], botstate_env(DATABASE=tmp_path / "b.db", PORT=0))
    try:
        zygote_of_its_own.process.kill()
        zygote_of_its_own.reader.join(timeout=30)
        with pytest.raises(ZygoteDied):
            server.wait(timeout=10)
        with pytest.raises(ZygoteDied):
            zygote_of_its_own.start(["-m", "botstate", "--version"], botstate_env())
    finally:
        os.kill(server.pid, signal.SIGKILL)  # the orphan: nobody else would stop it
    assert conftest.zygote().alive


@pytest.fixture
def zygote_of_its_own():
    """A zygote for one test, stopped after it."""
    started = Zygote()
    yield started
    started.close()
