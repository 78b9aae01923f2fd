"""The single file (`make dist`) runs as a user runs it: the system python3, no venv, an empty HOME, any folder.

`make test-dist` builds it and runs this; elsewhere it is skipped, saying so.
"""

import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import requests
from conftest import LISTENING
from spec_data import ACCOUNT_0, TICKER_AAPL

from version import VERSION

DIST = os.environ.get("DIST_CHECK", "")
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")

pytestmark = [
    pytest.mark.skipif(not DIST, reason="`make test-dist` builds the single file and runs these"),
    pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 in /usr/local/bin, /usr/bin or /bin"),
]


@pytest.fixture
def clean(tmp_path):
    """(run, env, folder): run the single file with only PATH, an empty HOME and a database setting."""
    home, folder = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    folder.mkdir()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "BOTSTATE_DATABASE": str(folder / "b.db")}

    def run(*args):
        done = subprocess.run(
            [SYSTEM_PYTHON, DIST, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run, env, folder


def test_the_file_holds_botstate_and_its_binary_dependencies():
    assert Path(DIST).name == f"botstate-{VERSION}.pyz"
    names = zipfile.ZipFile(DIST).namelist()
    for module in ("site-packages/botstate.py", "site-packages/app.py", "site-packages/backends/sqlite.py"):
        assert module in names
    compiled = {re.sub(r"\.cpython-.*", "", name.split("/")[1]) for name in names if ".cpython-" in name}
    assert {"orjson", "psycopg_binary", "markupsafe"} <= compiled
    # Review: setuptools shipped what an earlier build left in build/, files deleted since too.
    root = Path(__file__).resolve().parent.parent
    for package in ("backends", "cli"):
        shipped = {name.split("/")[-1] for name in names if re.fullmatch(rf"site-packages/{package}/[^/]+\.py", name)}
        assert shipped == {path.name for path in (root / package).glob("*.py")}, package


def test_a_bot_is_served_from_the_single_file_on_the_system_python(clean):
    run, env, folder = clean
    assert run("--version") == f"botstate {VERSION}\n"
    run("init-db")
    api_key = json.loads(run("bots", "create", "my-bot", "--json"))["apiKey"]
    run("accounts", "add", "--id", ACCOUNT_0)
    run("tickers", "add", "AAPL", "--id", TICKER_AAPL)
    log_path = folder / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [SYSTEM_PYTHON, DIST, "serve", "--host", "127.0.0.1", "--port", "0"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not LISTENING.search(log_path.read_text()) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        url = LISTENING.search(log_path.read_text()).group(1)
        headers = {"x-api-key": api_key}
        state = {"position": "long", "entryPrice": 145.0}
        written = requests.post(
            f"{url}/api/bots/my-bot/state",
            json={"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": state}]},
            headers=headers,
            timeout=30,
        )
        assert written.json()["summary"] == {"total": 1, "succeeded": 1, "failed": 0}
        read = requests.get(f"{url}/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}", headers=headers, timeout=30)
        assert read.json()["data"]["state"] == state
        assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok", "version": VERSION}
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    assert "botstate stopped" in log_path.read_text()
    assert sorted(path.name for path in folder.iterdir()) == ["b.db", "b.db-serving", "serve.log"]  # no WAL left
