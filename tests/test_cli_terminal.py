"""The import commands as a person runs them: a progress bar on a terminal, none in pipes."""

import os
import pty
import subprocess
import sys
import uuid

import pytest
from conftest import ROOT, initialized, told_the_database

BOTSTATE = [sys.executable, "-m", "botstate"]


def run_flask(args, database, stderr_tty):
    """Run `botstate ARGS` with stdout piped and stderr on a pseudo-terminal or a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSTATE_")}
    env["BOTSTATE_DATABASE"] = str(database)
    if not stderr_tty:
        result = subprocess.run(BOTSTATE + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        return result.returncode, result.stdout, result.stderr
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        BOTSTATE + args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=terminal, text=True
    ) as process:
        os.close(terminal)
        # Drain the terminal first (the child blocks if it fills); stdout is small enough to wait in its pipe.
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO once the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(controller)
        stdout = process.stdout.read()
        code = process.wait(timeout=120)
    return code, stdout, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize(
    "group,lines",
    (
        ("accounts", [str(uuid.uuid4()) for _ in range(1200)]),
        ("tickers", [f"SYM{n}" for n in range(1200)]),
    ),
)
def test_import_shows_a_progress_bar_only_on_a_terminal(tmp_path, group, lines):
    source = tmp_path / "rows.txt"
    source.write_text("\n".join(lines) + "\n")
    database = initialized(tmp_path / "tty.db")
    code, stdout, terminal = run_flask([group, "import", str(source)], database, stderr_tty=True)
    assert code == 0
    assert f"Importing {group}" in terminal and "100%" in terminal
    assert stdout.strip() == f"Added 1200 {group} (0 already registered)."

    database = initialized(tmp_path / "pipe.db")
    code, stdout, stderr = run_flask([group, "import", str(source)], database, stderr_tty=False)
    assert code == 0
    assert told_the_database(stderr, database) == ""
    assert stdout.strip() == f"Added 1200 {group} (0 already registered)."
