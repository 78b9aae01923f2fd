"""A fork of the tests' zygote behaves as a new interpreter running the same arguments."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import BACKEND_INDEPENDENT, ROOT, botstate_env, run_python, start_server, stop_server
from zygote import FLASK_SCRIPT, ForkedProcess, forkable

FLASK = ["-m", "flask", "--app", "app:create_app"]
pytestmark = pytest.mark.skipif(os.environ.get("TEST_EXEC") == "1", reason="TEST_EXEC=1: every process is a new one")


@BACKEND_INDEPENDENT
@pytest.mark.parametrize(
    "args",
    (
        [*FLASK, "bots", "list", "--json"],  # success, JSON on stdout
        [*FLASK, "bots", "create"],  # usage error: exit 2, one line on stderr
        [*FLASK, "bots", "create", "Not A Slug"],  # refused: exit 1
        [FLASK_SCRIPT, "--app", "app", "bots", "--help"],  # the console script
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
