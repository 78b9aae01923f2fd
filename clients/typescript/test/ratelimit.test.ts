import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RateLimited } from "botstate-client";
import { pairs, recordingFetch, startServer, type Server } from "./harness.js";

let server: Server;
before(async () => {
  server = await startServer({ settings: { BOTSTATE_RATE_LIMIT: "5/second" } });
});
after(() => server?.stop());

test("a rate-limited server: 429s are waited out as Retry-After says, and every call succeeds", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch, retryDeadlineMs: 10_000 });
  const [pair] = pairs(server, 1);
  await client.write([{ ...pair!, state: { n: 0 } }]);
  for (let n = 1; n <= 6; n++) {
    await client.merge([{ ...pair!, state: { n } }]);
    assert.equal((await client.get(pair!.accountId, pair!.tickerId))?.state.n, n);
  }
  const limited = sent.filter((s) => s.status === 429);
  assert.ok(limited.length >= 1, "the limit was reached");
  assert.ok(limited.every((s) => Number(s.retryAfter) >= 1));
  assert.equal((await client.get(pair!.accountId, pair!.tickerId))?.version, 7);
});

test("a write that meets the limit is retried with the same key and applied once", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch, retryDeadlineMs: 10_000 });
  const [pair] = pairs(server, 1);
  const before = (await client.get(pair!.accountId, pair!.tickerId))?.version ?? 0;
  await client.maxItems();
  // The merge follows the 429 at once, so it meets the same window, unless the window turned in
  // between (a few ms of a second): then the whole is tried again, at most twice more.
  let merges = 0;
  let patches: typeof sent = [];
  while (merges < 3 && patches[0]?.status !== 429) {
    sent.length = 0;
    await exhaust(server);
    await client.merge([{ ...pair!, state: { after: "limit" } }]);
    merges++;
    patches = sent.filter((s) => s.method === "PATCH");
  }
  assert.equal(patches[0]?.status, 429);
  assert.equal(patches.at(-1)?.status, 200);
  assert.equal(new Set(patches.map((p) => p.idempotencyKey)).size, 1);
  assert.equal((await client.get(pair!.accountId, pair!.tickerId))?.version, before + merges);
});

test("a rate limit past the deadline: RateLimited, at once, with the server's Retry-After", async () => {
  const started = Date.now();
  const error = await exhaust(server);
  assert.ok(error instanceof RateLimited, String(error));
  assert.equal(error.status, 429);
  assert.equal(error.code, "TOO_MANY_REQUESTS");
  assert.match(error.message, /^Rate limit exceeded: 5 per 1 second/);
  assert.ok((error.retryAfterMs ?? 0) >= 1000);
  assert.ok(Date.now() - started < 1000);
});

/** Reads with no time to retry until the limit answers (at most 20): the RateLimited it threw. */
async function exhaust(server: Server): Promise<unknown> {
  const client = server.client({ retryDeadlineMs: 0 });
  for (let n = 0; n < 20; n++) {
    const error = await client.get(server.accounts[0]!, server.tickers[0]!).then(() => undefined, (e: unknown) => e);
    if (error) return error;
  }
  return undefined;
}
