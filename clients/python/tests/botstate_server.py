"""A real botstate server for the client's tests: its own SQLite file, a free loopback port, bots made by its CLI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from botstate_client import Client, StateRow

REPO = Path(__file__).resolve().parents[3]
LISTENING = re.compile(r"listening on (http://\S+)")


def command() -> list[str]:
    """The botstate command: BOTSTATE_COMMAND when set, else the repository venv's."""
    return shlex.split(os.environ.get("BOTSTATE_COMMAND", "")) or [str(REPO / ".venv" / "bin" / "botstate")]


@dataclass
class Bot:
    """A bot of the server: its slug and API key."""

    slug: str
    key: str


@dataclass
class Server:
    """A running server, the accounts and tickers registered on it, and how to make more bots."""

    folder: Path
    settings: dict[str, str]
    accounts: list[str] = field(default_factory=list)
    tickers: list[str] = field(default_factory=list)
    url: str = ""
    taken: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return self.folder / "botstate.db"

    def env(self) -> dict[str, str]:
        """This process's environment without its BOTSTATE_* variables, with the server's settings."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("BOTSTATE_")}
        env.update({"BOTSTATE_DATABASE": str(self.database), "BOTSTATE_HOST": "127.0.0.1", "BOTSTATE_PORT": "0"})
        env.update({f"BOTSTATE_{name}": value for name, value in self.settings.items()})
        return env

    def cli(self, *args: str) -> str:
        """Run `botstate ARGS` on the server's database; its stdout."""
        done = subprocess.run([*command(), *args], env=self.env(), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"botstate {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def register(self, accounts: list[str], tickers: list[str]) -> None:
        """Register accounts and tickers (by id) on the database."""
        (self.folder / "accounts.txt").write_text("".join(f"{account}\n" for account in accounts))
        (self.folder / "tickers.csv").write_text(
            "".join(f"T{n}-{ticker[:8]},{ticker}\n" for n, ticker in enumerate(tickers))
        )
        self.cli("accounts", "import", str(self.folder / "accounts.txt"), "--json")
        self.cli("tickers", "import", str(self.folder / "tickers.csv"), "--json")
        self.accounts += accounts
        self.tickers += tickers

    def new_bot(self, slug: str | None = None) -> Bot:
        """Create a bot; its slug and key."""
        slug = slug or f"bot-{uuid.uuid4().hex[:12]}"
        return Bot(slug, json.loads(self.cli("bots", "create", slug, "--json"))["apiKey"])

    def take(self, count: int) -> list[tuple[str, str]]:
        """`count` registered (account, ticker) pairs no test took before, account-major, from a new account on."""
        per_account = len(self.tickers)
        first = -(-self.taken // per_account) * per_account
        assert first + count <= len(self.accounts) * per_account, "register more accounts"
        pairs = [(self.accounts[n // per_account], self.tickers[n % per_account]) for n in range(first, first + count)]
        self.taken = first + count
        return pairs

    def start(self) -> None:
        """Serve, and wait for its `listening on` line."""
        log_path = self.folder / "server.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([*command(), "serve"], env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = LISTENING.search(log_path.read_text())
            if match:
                self.url = match.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"botstate serve did not start:\n{log_path.read_text()}")

    def stop(self) -> None:
        """SIGTERM the server and wait for it to end."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @contextlib.contextmanager
    def locked(self, seconds: float) -> Iterator[threading.Thread]:
        """Hold the database's write lock from another connection for `seconds`, or until the block ends."""
        taken, done = threading.Event(), threading.Event()

        def hold() -> None:
            holder = sqlite3.connect(self.database, isolation_level=None, timeout=10)
            try:
                holder.execute("BEGIN IMMEDIATE")
                taken.set()
                done.wait(seconds)
                holder.execute("ROLLBACK")
            finally:
                holder.close()

        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        assert taken.wait(10), "could not take the database's lock"
        try:
            yield thread
        finally:
            done.set()
            thread.join(10)


def new_ids(count: int) -> list[str]:
    """`count` new UUIDs."""
    return [str(uuid.uuid4()) for _ in range(count)]


def start_server(folder: Path, accounts: list[str], tickers: list[str], **settings: str) -> Server:
    """A new database with these accounts and tickers registered, served."""
    folder.mkdir(parents=True, exist_ok=True)
    server = Server(folder, settings)
    server.cli("init-db")
    server.register(accounts, tickers)
    server.start()
    return server


def items(pairs: list[tuple[str, str]], **state: object) -> list[dict[str, object]]:
    """Write items for `pairs`, each state `state` plus its place as `n`."""
    return [{"accountId": a, "tickerId": t, "state": {**state, "n": n}} for n, (a, t) in enumerate(pairs)]


def rows_of(client: Client, pairs: list[tuple[str, str]]) -> list[StateRow]:
    """The stored rows of `pairs` (whose accounts no other test writes), listed account by account."""
    wanted = set(pairs)
    accounts = sorted({account for account, _ in pairs})
    return [
        row for a in accounts for row in client.iter_states(account_id=a) if (row.account_id, row.ticker_id) in wanted
    ]
