"""A new user's trading bot, keeping its state in botstate with botstate-client.

Each tick it reads prices for its (account, ticker) pairs, trades a moving-average rule, records fills with a
read-modify-write, and merges what each traded pair saw. At the end of the day it writes every pair's summary in
one call. Killed at any point, it restores from botstate when started again and goes on without doing a tick or a
fill twice.

    python bot.py --url http://127.0.0.1:8080 --slug my-bot --key bsk_... --pairs pairs.csv --ticks 20
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
from collections.abc import Callable
from datetime import date
from typing import Any

from botstate_client import Client, StateHandle

WINDOW = 3  # prices in the moving average
QUANTITY = 100  # shares per order


def price(ticker_id: str, tick: int) -> float:
    """The price feed: the same price for a ticker at a tick, on every run."""
    rng = random.Random(f"{ticker_id}:{tick}")
    base = 50 + random.Random(ticker_id).random() * 100
    return round(base * (1 + 0.05 * math.sin(tick / 2 + base)) + rng.uniform(-0.5, 0.5), 2)


def trades(ticker_id: str, tick: int) -> bool:
    """Whether the ticker has a price at this tick (one tick in two)."""
    return random.Random(f"trades:{ticker_id}:{tick}").random() < 0.5


def signal(state: dict[str, Any], last: float) -> str | None:
    """The moving-average rule: buy above the average, sell below it."""
    window = state.get("window", [])
    if len(window) < WINDOW:
        return None
    average = sum(window) / len(window)
    if state.get("position", "flat") == "flat" and last > average * 1.01:
        return "buy"
    if state.get("position") == "long" and last < average * 0.99:
        return "sell"
    return None


def fill(side: str, fill_price: float, tick: int) -> Callable[[StateHandle], None]:
    """The change a fill makes to a state, as a function `save(retry=...)` can apply again."""

    def apply(state: StateHandle) -> None:
        if state.get("lastFillTick") == tick:  # already recorded before a crash
            return
        if side == "buy":
            state.update(position="long", quantity=QUANTITY, entryPrice=fill_price)
        else:
            pnl = (fill_price - state.get("entryPrice", fill_price)) * state.get("quantity", 0)
            state.update(position="flat", quantity=0, realizedPnl=round(state.get("realizedPnl", 0) + pnl, 2))
            state.pop("entryPrice", None)
        state["fills"] = state.get("fills", 0) + 1
        state["lastFillTick"] = tick

    return apply


class Bot:
    """The bot's book of pairs, mirrored in botstate."""

    def __init__(self, client: Client, pairs: list[tuple[str, str]]) -> None:
        self.client = client
        self.book: dict[tuple[str, str], dict[str, Any]] = {pair: {} for pair in pairs}

    def restore(self) -> int:
        """Load every stored state; the tick after the last one merged (a tick's pairs are merged in one call)."""
        for row in self.client.iter_states():
            if (row.account_id, row.ticker_id) in self.book:
                self.book[(row.account_id, row.ticker_id)] = row.state
        return max(int(state.get("lastTick", -1)) for state in self.book.values()) + 1

    def tick(self, tick: int, crash_at: int | None) -> None:
        """Trade one tick, recording fills at once, then merge what every traded pair saw."""
        patches = []
        for (account_id, ticker_id), state in self.book.items():
            if state.get("lastTick", -1) >= tick or not trades(ticker_id, tick):
                continue
            last = price(ticker_id, tick)
            side = signal(state, last)
            if side:  # the broker filled our order: record it now, whoever else writes this state
                handle = self.client.state(account_id, ticker_id)
                apply = fill(side, last, tick)
                apply(handle)
                state.update(handle.save(retry=apply).state)
            window = [*state.get("window", []), last][-WINDOW:]
            seen = {"lastPrice": last, "lastTick": tick, "window": window, "ticksSeen": state.get("ticksSeen", 0) + 1}
            state.update(seen)
            patches.append({"accountId": account_id, "tickerId": ticker_id, "state": seen})
        if tick == crash_at:
            os._exit(70)  # killed after its fills, before the tick's merge: the worst moment
        result = self.client.merge(patches)
        for failure in result.failures:
            print(f"tick {tick}: {failure.account_id}/{failure.ticker_id} not saved: {failure.error}", file=sys.stderr)

    def end_of_day(self, day: str, close_tick: int) -> int:
        """Write every pair's end-of-day summary in one call (safe to send again); how many were stored."""
        states = []
        for (account_id, ticker_id), state in self.book.items():
            close = price(ticker_id, close_tick)
            open_pnl = (close - state["entryPrice"]) * state["quantity"] if state.get("position") == "long" else 0.0
            summary = {"endOfDayPrice": close, "unrealizedPnl": round(open_pnl, 2), "day": day}
            states.append({"accountId": account_id, "tickerId": ticker_id, "state": summary})
        # The same key and body after a restart: the server answers from its record and stores nothing again.
        result = self.client.merge(states, idempotency_key=f"end-of-day-{day}")
        for failure in result.failures:
            print(f"end of day: {failure.account_id}/{failure.ticker_id}: {failure.error}", file=sys.stderr)
        return result.summary.succeeded


def main(argv: list[str] | None = None) -> int:
    """Run the bot for a day of ticks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--slug", required=True)
    parser.add_argument("--key", default=os.environ.get("BOT_API_KEY", ""))
    parser.add_argument("--pairs", required=True, help="CSV of account_id,ticker_id")
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--day", default=date.today().isoformat())
    parser.add_argument("--crash-at", type=int, help="exit abruptly during this tick (to try a restore)")
    args = parser.parse_args(argv)
    with open(args.pairs, newline="") as file:
        pairs = [(row[0], row[1]) for row in csv.reader(file) if row]
    with Client(args.url, args.slug, args.key) as client:
        bot = Bot(client, pairs)
        start = bot.restore()
        print(f"restored {len(pairs)} pairs, starting at tick {start}")
        for tick in range(start, args.ticks):
            bot.tick(tick, args.crash_at)
        stored = bot.end_of_day(args.day, args.ticks - 1)
        fills = sum(state.get("fills", 0) for state in bot.book.values())
    print(f"day {args.day} done: {stored} of {len(pairs)} pairs summed up, {fills} fills")
    return 0 if stored == len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
