"""examples/bot.py, the new-user bot, on a real server: killed mid-day and restored, it ends as a run never killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from botstate_client import Client, StateRow

from .botstate_server import Server

BOT = Path(__file__).resolve().parents[1] / "examples" / "bot.py"
TICKS = 10


def run_bot(server: Server, slug: str, key: str, pairs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the bot for a day of TICKS ticks; the finished process."""
    args = ["--url", server.url, "--slug", slug, "--key", key, "--pairs", str(pairs), "--ticks", str(TICKS)]
    return subprocess.run(
        [sys.executable, str(BOT), *args, "--day", "2026-11-24", *extra], capture_output=True, text=True, timeout=120
    )


def rows(server: Server, slug: str, key: str) -> dict[tuple[str, str], StateRow]:
    """Every row of a bot, by pair."""
    with Client(server.url, slug, key) as client:
        return {(row.account_id, row.ticker_id): row for row in client.iter_states()}


def test_the_bot_survives_a_crash_and_restores(server: Server, tmp_path: Path) -> None:
    pairs = server.take(600)
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("".join(f"{account},{ticker}\n" for account, ticker in pairs))
    crashed, steady = server.new_bot(), server.new_bot()

    killed = run_bot(server, crashed.slug, crashed.key, pairs_file, "--crash-at", "4")
    assert killed.returncode == 70, killed.stderr
    with Client(server.url, crashed.slug, crashed.key) as other:  # another writer, between the runs
        other.merge([{"accountId": a, "tickerId": t, "state": {"riskLimit": 5000}} for a, t in pairs[:10]])
    restored = run_bot(server, crashed.slug, crashed.key, pairs_file)
    assert restored.returncode == 0, restored.stderr
    assert "starting at tick 4" in restored.stdout and "600 of 600 pairs" in restored.stdout

    uninterrupted = run_bot(server, steady.slug, steady.key, pairs_file)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    after_crash, steady_rows = rows(server, crashed.slug, crashed.key), rows(server, steady.slug, steady.key)
    assert len(after_crash) == len(steady_rows) == 600
    fills = 0
    for pair, row in steady_rows.items():
        state = dict(after_crash[pair].state)
        assert state.pop("riskLimit", None) == (5000 if pair in pairs[:10] else None)  # merged, never overwritten
        assert state == row.state and row.state["day"] == "2026-11-24"
        fills += row.state.get("fills", 0)
    assert fills > 0 and f"{fills} fills" in uninterrupted.stdout

    # Started again after its day: nothing to trade, and the end of day is answered from the server's record.
    again = run_bot(server, crashed.slug, crashed.key, pairs_file)
    assert again.returncode == 0 and "starting at tick 10" in again.stdout, again.stderr
    assert {pair: row.version for pair, row in rows(server, crashed.slug, crashed.key).items()} == {
        pair: row.version for pair, row in after_crash.items()
    }
