import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  BadRequest,
  BotNotFound,
  BotStateError,
  Gone,
  IdempotencyConflict,
  InvalidKey,
  MissingKey,
  NetworkError,
  NotFound,
  PayloadTooLarge,
  PreconditionFailed,
  RateLimited,
  RequestInProgress,
  Unavailable,
} from "botstate-client";
import { holdDatabaseLock, recordingFetch, startServer, type Server } from "./harness.js";

let server: Server;
let limitedKey: string;
before(async () => {
  server = await startServer({
    // Two threads a worker: a repeat that lands on the first request's worker runs beside it, not after it.
    settings: { BOTSTATE_MAX_BODY_BYTES: "1048576", BOTSTATE_BUSY_TIMEOUT_MS: "1000", BOTSTATE_RATE_LIMIT: "40/second", BOTSTATE_THREADS: "2" },
  });
  limitedKey = (JSON.parse(await server.cli("bots", "create", "limited-bot", "--json")) as { apiKey: string }).apiKey;
});
after(() => server?.stop());

const item = () => ({ accountId: server.accounts[0]!, tickerId: server.tickers[0]!, state: { ok: true } });

type ErrorClass = abstract new (...args: never[]) => BotStateError;

/** Every error class, each raised by a real answer of the server (or, for NetworkError, by none). */
const cases: Array<[string, ErrorClass, number | undefined, string | undefined, string | RegExp, () => Promise<unknown>]> = [
  ["invalid slug", BadRequest, 400, "BAD_REQUEST", "Invalid slug format. Only alphanumeric characters, hyphens, and underscores are allowed.",
    () => server.client({ slug: "bad slug!" }).write([item()])],
  ["no key", MissingKey, 401, undefined, "API key required. Include x-api-key header.", () => server.client({ apiKey: "" }).write([item()])],
  ["no such bot", BotNotFound, 404, "NOT_FOUND", "Bot with slug 'no-such-bot' not found", () => server.client({ slug: "no-such-bot" }).get(item().accountId, item().tickerId)],
  ["wrong key", InvalidKey, 403, undefined, "Invalid API key for this bot", () => server.client({ apiKey: "bsk_wrong" }).iterStates().next()],
  ["invalid body", BadRequest, 400, "BAD_REQUEST", "states[0].tickerId must be a valid UUID", () => server.client().merge([{ ...item(), tickerId: "AAPL" }])],
  ["invalid query", BadRequest, 400, "BAD_REQUEST", "limit must be an integer from 1 to 1000", () => server.client().iterStates({ pageSize: 5000 }).next()],
  ["Idempotency-Key too long", BadRequest, 400, "BAD_REQUEST", /Idempotency-Key/, () => server.client().write([item()], { idempotencyKey: "k".repeat(256) })],
  ["body too large", PayloadTooLarge, 413, "PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes",
    () => server.client().write([{ ...item(), state: { blob: "x".repeat(1_100_000) } }])],
  ["delete of no row", NotFound, 404, "NOT_FOUND", "State not found", () => server.client().delete(server.accounts[1]!, server.tickers[1]!)],
  ["delete of another version", PreconditionFailed, 412, "PRECONDITION_FAILED", "Version conflict: expected 99, found 1",
    async () => {
      await server.client().write([item()]);
      return server.client().delete(item().accountId, item().tickerId, { ifVersion: 99 });
    }],
  ["changes past every seq", Gone, 410, "GONE", /^No change has a seq past \d+; list the states to resync$/,
    () => server.client().changes({ after: 10 ** 15 })[Symbol.asyncIterator]().next()],
  ["key reused with another body", IdempotencyConflict, 422, "UNPROCESSABLE_ENTITY", "Idempotency-Key was used with a different request body",
    async () => {
      await server.client().write([item()], { idempotencyKey: "reused-key" });
      return server.client().write([{ ...item(), state: { other: 1 } }], { idempotencyKey: "reused-key" });
    }],
  ["past the rate limit", RateLimited, 429, "TOO_MANY_REQUESTS", /^Rate limit exceeded: 40 per 1 second/,
    async () => {
      const limited = server.client({ slug: "limited-bot", apiKey: limitedKey, retryDeadlineMs: 0 });
      for (let n = 0; n < 100; n++) await limited.get(item().accountId, item().tickerId);
    }],
  ["database locked", Unavailable, 503, "SERVICE_UNAVAILABLE", "Database is busy, retry later",
    async () => {
      const client = server.client({ retryDeadlineMs: 0 });
      await client.maxItems();
      const lock = await holdDatabaseLock(server.database, 1.5);
      try {
        return await client.write([item()]);
      } finally {
        await lock.released;
      }
    }],
  ["same key while the first request runs", RequestInProgress, 409, "CONFLICT", "A request with this Idempotency-Key is in progress",
    async () => {
      // Two writes with one key while the database is locked: the first waits out the busy timeout
      // (then 503), the second, sent meanwhile, gets the 409. Whichever reached the server second.
      const [first, second] = [server.client({ retryDeadlineMs: 0 }), server.client({ retryDeadlineMs: 0 })];
      await Promise.all([first.maxItems(), second.maxItems()]);
      const lock = await holdDatabaseLock(server.database, 2);
      const running = first.write([item()], { idempotencyKey: "in-progress-key" }).catch((e: unknown) => e);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const repeated = await second.write([item()], { idempotencyKey: "in-progress-key" }).catch((e: unknown) => e);
      const outcomes = [await running, repeated];
      await lock.released;
      throw outcomes.find((e) => e instanceof RequestInProgress) ?? outcomes[1];
    }],
  ["no server there", NetworkError, undefined, undefined, /fetch failed/, () => server.client({ baseUrl: "http://127.0.0.1:9" }).get(item().accountId, item().tickerId)],
];

for (const [name, errorClass, status, code, message, act] of cases) {
  test(`${errorClass.name}: ${name}`, async () => {
    const error = await act().then(
      () => assert.fail(`expected ${errorClass.name}`),
      (e: unknown) => e,
    );
    assert.ok(error instanceof errorClass, `${String(error)} is not a ${errorClass.name}`);
    assert.ok(error instanceof BotStateError);
    assert.equal(error.name, errorClass.name);
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    if (typeof message === "string") assert.equal(error.message, message);
    else assert.match(error.message, message);
  });
}

test("Gone says from which seq to poll after listing the states", async () => {
  const error = await server.client().changes({ after: 10 ** 15 })[Symbol.asyncIterator]().next().catch((e: unknown) => e);
  assert.ok(error instanceof Gone);
  assert.equal(typeof error.seq, "number");
  assert.ok(error.seq! < 10 ** 15);
});

test("the 409 of a request still running is waited out: the repeat gets the answer, written once", async () => {
  const { fetch, sent } = recordingFetch();
  const waiting = server.client({ fetch, retryDeadlineMs: 10_000 });
  const first = server.client({ retryDeadlineMs: 0 });
  await Promise.all([first.maxItems(), waiting.maxItems()]);
  const target = { ...item(), tickerId: server.tickers[2]! };
  const lock = await holdDatabaseLock(server.database, 2);
  const running = first.write([target], { idempotencyKey: "wait-for-it" }).catch((e: unknown) => e);
  // Long enough for the first to reach the server, well short of its 1 s busy timeout.
  await new Promise((resolve) => setTimeout(resolve, 400));
  const result = await waiting.write([target], { idempotencyKey: "wait-for-it" });
  assert.ok((await running) instanceof Unavailable, "the first got the 503, which is not kept");
  await lock.released;
  assert.equal(result.summary.succeeded, 1);
  assert.equal(sent.filter((s) => s.method === "POST")[0]?.status, 409);
  assert.equal((await waiting.get(target.accountId, target.tickerId))?.version, 1);
});
