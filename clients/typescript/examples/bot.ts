/**
 * A new user's bot on botstate: it trades an EMA signal on 20 accounts × 30 tickers, writes what
 * changed on every tick, records fills with a read-modify-write, writes all 600 pairs at the end
 * of the day, and after a crash restores everything from the server and carries on.
 *
 * Env: BOTSTATE_URL, BOTSTATE_SLUG, BOTSTATE_API_KEY; BOT_ACCOUNTS and BOT_TICKERS (comma-separated
 * ids); BOT_TICKS (default 45); BOT_CRASH_AFTER (a tick after which it dies, for the test).
 */

import { BotStateClient, type StateUpdate } from "botstate-client";

interface PairState {
  [key: string]: unknown;
  tick: number;
  lastPrice: number;
  ema: number;
  position: "flat" | "long";
  quantity: number;
  entryPrice: number;
  trades: number;
  realizedPnl: number;
}

const env = process.env;
const client = new BotStateClient({ baseUrl: env.BOTSTATE_URL!, slug: env.BOTSTATE_SLUG!, apiKey: env.BOTSTATE_API_KEY! });
const accounts = env.BOT_ACCOUNTS!.split(",");
const tickers = env.BOT_TICKERS!.split(",");
const ticks = Number(env.BOT_TICKS ?? 45);
const crashAfter = env.BOT_CRASH_AFTER === undefined ? Infinity : Number(env.BOT_CRASH_AFTER);
const LOT = 10;

const key = (accountId: string, tickerId: string) => `${accountId}/${tickerId}`;
const fresh = (): PairState => ({ tick: -1, lastPrice: 0, ema: 0, position: "flat", quantity: 0, entryPrice: 0, trades: 0, realizedPnl: 0 });
// The market: a price per ticker and tick, the same on every run.
const priceAt = (ticker: number, tick: number) => Math.round(10_000 * (1 + 0.05 * Math.sin(tick / 2 + ticker) + 0.01 * Math.cos(tick * 7.3))) / 100;
const round = (value: number) => Math.round(value * 100) / 100;

// Restore: what the server holds is the bot's memory, whatever happened to the last run.
const book = new Map<string, PairState>();
let resumeAt = 0;
for await (const row of client.iterStates()) {
  const state = row.state as PairState;
  book.set(key(row.userBrokerAccountId, row.tickerId), state);
  resumeAt = Math.max(resumeAt, state.tick + 1);
}
console.log(`restored ${book.size} pairs, resuming at tick ${resumeAt}`);

/** A fill changes the position: read-modify-write, so a concurrent writer's change is never lost. */
async function recordFill(accountId: string, tickerId: string, side: "buy" | "sell", price: number): Promise<void> {
  const handle = await client.state<PairState>(accountId, tickerId);
  const saved = await handle.save((s) => {
    if (side === "buy") Object.assign(s, { position: "long", quantity: s.quantity + LOT, entryPrice: price });
    else Object.assign(s, { position: "flat", quantity: 0, realizedPnl: round(s.realizedPnl + (price - s.entryPrice) * s.quantity) });
    s.trades += 1;
  });
  book.set(key(accountId, tickerId), saved.state as PairState);
}

for (let tick = resumeAt; tick < ticks; tick++) {
  const ticker = tick % tickers.length;
  const tickerId = tickers[ticker]!;
  const price = priceAt(ticker, tick);
  const updates: StateUpdate[] = [];
  const fills: Array<[string, "buy" | "sell"]> = [];
  for (const accountId of accounts) {
    const known = book.get(key(accountId, tickerId));
    const state = known ?? fresh();
    const ema = state.ema === 0 ? price : round(state.ema + 0.3 * (price - state.ema));
    const tickFields = { tick, lastPrice: price, ema };
    book.set(key(accountId, tickerId), Object.assign(state, tickFields));
    // Only the fields a tick changes, so a fill written meanwhile by anyone is kept.
    updates.push({ accountId, tickerId, state: known ? tickFields : { ...state } });
    if (state.position === "flat" && price > ema * 1.002) fills.push([accountId, "buy"]);
    if (state.position === "long" && price < ema * 0.998) fills.push([accountId, "sell"]);
  }
  const result = await client.merge(updates);
  for (const failure of result.results.filter((r) => r.status === "error")) {
    console.error(`tick ${tick}: ${failure.accountId}/${failure.tickerId}: ${failure.error}`);
  }
  for (const [accountId, side] of fills) await recordFill(accountId, tickerId, side, price);
  if (tick >= crashAfter) {
    console.log(`crashing after tick ${tick}`);
    process.exit(1);
  }
}

// End of day: every pair, 600 in one call (the client splits it to the server's limit).
const closing: StateUpdate[] = [];
for (const accountId of accounts) {
  tickers.forEach((tickerId, ticker) => {
    const state = book.get(key(accountId, tickerId)) ?? fresh();
    const endOfDayPrice = priceAt(ticker, ticks);
    const unrealizedPnl = state.position === "long" ? round((endOfDayPrice - state.entryPrice) * state.quantity) : 0;
    closing.push({ accountId, tickerId, state: { ...state, endOfDayPrice, unrealizedPnl } });
  });
}
const result = await client.write(closing);
console.log(`end of day: updated ${result.summary.succeeded} of ${result.summary.total} pairs`);
const trades = [...book.values()].reduce((sum, s) => sum + s.trades, 0);
console.log(JSON.stringify({ resumedAt: resumeAt, trades, endOfDay: result.summary }));
process.exitCode = result.summary.failed === 0 ? 0 : 1;
