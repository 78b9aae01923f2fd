"""The single file (`make dist`) runs as a user runs it: the system python3, no venv, an empty HOME, any folder.

`make test-dist` builds it and runs this; elsewhere it is skipped, saying so.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import requests
from conftest import LISTENING
from spec_data import ACCOUNT_0, TICKER_AAPL

from version import VERSION

ROOT = Path(__file__).resolve().parent.parent
DIST = os.environ.get("DIST_CHECK", "")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SYSTEM_PYTHON = shutil.which("python3", path=SYSTEM_PATH)


def load_build_script():
    """scripts/build_dist.py as a module: what the build carries."""
    spec = importlib.util.spec_from_file_location("build_dist", ROOT / "scripts" / "build_dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = load_build_script()


def interpreters(versions):
    """{version: a CPython of that version on this machine}: the system's, or pyenv's."""
    found = {}
    for version in versions:
        pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
        python = shutil.which(f"python{version}", path=SYSTEM_PATH) or (str(pyenv[-1]) if pyenv else None)
        if python:
            found[version] = python
    return found


# The system python3, and every carried version this machine has beside it.
PYTHONS = {"system": SYSTEM_PYTHON} if SYSTEM_PYTHON else {}
for version, python in interpreters(BUILD.PYTHONS).items():
    if not SYSTEM_PYTHON or os.path.realpath(python) != os.path.realpath(SYSTEM_PYTHON):
        PYTHONS[version] = python

pytestmark = [
    pytest.mark.skipif(not DIST, reason="`make test-dist` builds the single file and runs these"),
    pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 in /usr/local/bin, /usr/bin or /bin"),
]


@pytest.fixture(params=sorted(PYTHONS))
def clean(tmp_path, request):
    """(run, env, folder): run the single file with only PATH, an empty HOME and a database setting,
    on the system python3 and on each other carried Python found here."""
    python = PYTHONS[request.param]
    home, folder = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    folder.mkdir()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "BOTSTATE_DATABASE": str(folder / "b.db")}

    def run(*args):
        done = subprocess.run([python, DIST, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run.python = python
    return run, env, folder


def test_the_file_holds_botstate_and_its_binary_dependencies():
    assert Path(DIST).name == f"botstate-{VERSION}.pyz"
    names = zipfile.ZipFile(DIST).namelist()
    for module in ("site-packages/botstate.py", "site-packages/app.py", "site-packages/backends/sqlite.py"):
        assert module in names
    # Review: setuptools shipped what an earlier build left in build/, files deleted since too.
    for package in ("backends", "cli"):
        shipped = {name.split("/")[-1] for name in names if re.fullmatch(rf"site-packages/{package}/[^/]+\.py", name)}
        assert shipped == {path.name for path in (ROOT / package).glob("*.py")}, package


def test_the_file_names_no_folder_of_the_machine_that_built_it():
    with zipfile.ZipFile(DIST) as built:
        for name in built.namelist():
            assert str(ROOT).encode() not in built.read(name), name
        assert not [name for name in built.namelist() if name.startswith(("site-packages/bin/", "site-packages/pip/"))]


def test_every_compiled_module_is_carried_for_each_python_and_cpu_the_build_names():
    carried = {}
    for name in zipfile.ZipFile(DIST).namelist():
        if found := re.fullmatch(r"site-packages/(.+)\.cpython-(\d+)-(\w+)-linux-gnu\.so", name):
            module, python, machine = found.groups()
            carried.setdefault(module, set()).add((f"{python[0]}.{python[1:]}", machine))
    assert {"orjson/orjson", "psycopg_binary/_psycopg", "psycopg_binary/pq", "markupsafe/_speedups"} <= set(carried)
    for module, targets in carried.items():
        assert targets == set(BUILD.TARGETS), module


def test_a_bot_is_served_from_the_single_file_on_a_plain_python(clean):
    run, env, folder = clean
    assert run("--version") == f"botstate {VERSION}\n"
    run("init-db")
    api_key = json.loads(run("bots", "create", "my-bot", "--json"))["apiKey"]
    run("accounts", "add", "--id", ACCOUNT_0)
    run("tickers", "add", "AAPL", "--id", TICKER_AAPL)
    log_path = folder / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [run.python, DIST, "serve", "--host", "127.0.0.1", "--port", "0"],
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
    assert sorted(path.name for path in folder.iterdir()) == [
        "b.db",
        "b.db-serving",
        "b.db-writers",
        "serve.log",
    ]  # no WAL left


@pytest.fixture
def server_root():
    """A folder outside pytest's own, which only root may enter, for files another user reads."""
    folder = Path(tempfile.mkdtemp(prefix="botstate-server-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def as_nobody(home, *command):
    """Runs command as the user nobody, with only PATH and HOME set, from /."""
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
        + ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={home}", *command],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )


as_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs as another user: needs root"
)


@as_another_user
def test_admin_commands_run_as_the_service_user_with_its_environment_file(server_root):
    """Deployment's steps: the file in a bin folder, a user whose home holds the database, `--env-file`."""
    installed, home = server_root / "botstate", server_root / "var-lib-botstate"
    shutil.copy(DIST, installed)
    home.mkdir()
    shutil.chown(home, "nobody", "nogroup")
    env_file = server_root / "botstate.env"
    env_file.write_text(f'# the service\'s settings\nBOTSTATE_DATABASE="{home}/botstate.db"\nBOTSTATE_WRONG=1\n')

    def as_service_user(*args):
        return as_nobody(home, str(installed), *args)

    assert as_service_user("--env-file", str(env_file), "init-db").returncode == 0
    created = as_service_user("--env-file", str(env_file), "bots", "create", "my-bot", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["slug"] == "my-bot"
    assert "BOTSTATE_WRONG" in created.stderr  # an unknown setting is warned about, as in the environment
    assert (home / "botstate.db").stat().st_uid == (home / ".shiv").stat().st_uid == home.stat().st_uid


@as_another_user
@pytest.mark.parametrize("home_kind", ("read-only", "missing"))
def test_a_home_the_user_cannot_write_is_one_line_naming_the_folder_and_the_fix(server_root, home_kind):
    home = server_root / f"{home_kind}-home"
    if home_kind == "read-only":
        home.mkdir(mode=0o555)  # else it is not there, in a folder only root may write
    refused = as_nobody(home, SYSTEM_PYTHON, DIST, "--version")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"botstate: cannot unpack its dependencies into {home}/.shiv: Permission denied;"
        " set SHIV_ROOT to a folder this user can write\n"
    )


UNCARRIED = interpreters(["3.10", "3.9", "3.15"])


@pytest.mark.skipif(not UNCARRIED, reason="no CPython this file carries no binary modules for (3.9, 3.10, 3.15)")
def test_a_python_the_file_carries_no_modules_for_is_one_line(tmp_path):
    version, python = sorted(UNCARRIED.items())[0]
    env = {"PATH": SYSTEM_PATH, "HOME": str(tmp_path)}
    refused = subprocess.run([python, DIST, "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"botstate: this file carries binary modules for CPython {BUILD.PYTHONS[0]} to {BUILD.PYTHONS[-1]} on Linux"
        f" ({', '.join(BUILD.GLIBC)}); this is cpython {version} on linux ({os.uname().machine})\n"
    )
    assert list(tmp_path.iterdir()) == []  # refused before unpacking anything
