import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { NetworkError, Unavailable } from "botstate-client";
import { holdDatabaseLock, pairs, recordingFetch, startServer, type Server } from "./harness.js";
import { startProxy, type Proxy } from "./proxy.js";

let server: Server;
let proxy: Proxy;
before(async () => {
  // A short busy timeout, so a locked database answers 503 quickly.
  server = await startServer({ settings: { BOTSTATE_BUSY_TIMEOUT_MS: "200" } });
  proxy = await startProxy(server.url);
});
after(async () => {
  await proxy?.close();
  await server?.stop();
});

test("the database locked by another connection: 503 and Retry-After, and the write succeeds within the deadline", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch, retryDeadlineMs: 10_000 });
  const [pair] = pairs(server, 1);
  await client.maxItems();
  const lock = await holdDatabaseLock(server.database, 2);
  const started = Date.now();
  const result = await client.write([{ ...pair!, state: { locked: "through it" } }]);
  const took = Date.now() - started;
  await lock.released;

  assert.deepEqual(result.summary, { total: 1, succeeded: 1, failed: 0 });
  const posts = sent.filter((s) => s.method === "POST");
  assert.ok(posts.length >= 2, `${posts.length} attempts`);
  assert.deepEqual(posts.slice(0, -1).map((p) => [p.status, p.retryAfter]), posts.slice(0, -1).map(() => [503, "1"]));
  assert.equal(posts.at(-1)?.status, 200);
  assert.equal(new Set(posts.map((p) => p.idempotencyKey)).size, 1, "every attempt with the same key");
  assert.ok(took >= 1500 && took < 10_000, `took ${took} ms`);
  assert.deepEqual((await client.get(pair!.accountId, pair!.tickerId))?.state, { locked: "through it" });
});

test("a lock held past the deadline: Unavailable, without waiting out a Retry-After beyond it", async () => {
  const client = server.client({ retryDeadlineMs: 500 });
  const [pair] = pairs(server, 1);
  await client.maxItems();
  const lock = await holdDatabaseLock(server.database, 2);
  const started = Date.now();
  const error = await client.write([{ ...pair!, state: {} }]).catch((e: unknown) => e);
  const took = Date.now() - started;
  await lock.released;
  assert.ok(error instanceof Unavailable, String(error));
  assert.equal(error.status, 503);
  assert.equal(error.retryAfterMs, 1000);
  assert.equal(error.message, "Database is busy, retry later");
  assert.ok(took < 1000, `took ${took} ms`);
});

test("a connection cut after the server committed: the retry returns the first answer, the version went up once", async () => {
  const { fetch, sent } = recordingFetch();
  const client = proxyClient(fetch);
  const [pair] = pairs(server, 1);
  const before = (await client.get(pair!.accountId, pair!.tickerId))?.version ?? 0;

  proxy.arm("PATCH", "cut");
  const result = await client.merge([{ ...pair!, state: { cut: 1 } }]);

  const first = result.results[0]!;
  assert.equal(first.status, "success");
  if (first.status === "success") assert.equal(first.data.version, before + 1);
  const patches = sent.filter((s) => s.method === "PATCH");
  assert.equal(patches.length, 2, "one lost answer, one retry");
  assert.ok(patches[0]?.failed, "the first attempt saw its connection cut");
  assert.equal(patches[0]?.idempotencyKey, patches[1]?.idempotencyKey);
  assert.equal(patches[1]?.replayed, true, "the server replayed the first answer");
  assert.equal((await client.get(pair!.accountId, pair!.tickerId))?.version, before + 1);
});

test("an answer that never comes (read timeout): the write is retried with its key and applied once", async () => {
  const { fetch, sent } = recordingFetch();
  const client = proxyClient(fetch, { timeoutMs: 500 });
  const [pair] = pairs(server, 1);
  const before = (await client.get(pair!.accountId, pair!.tickerId))?.version ?? 0;
  proxy.arm("POST", "hold");
  const result = await client.write([{ ...pair!, state: { held: true } }]);
  assert.equal(result.summary.succeeded, 1);
  const posts = sent.filter((s) => s.method === "POST");
  assert.equal(posts.length, 2);
  assert.equal(posts[1]?.replayed, true);
  assert.equal((await client.get(pair!.accountId, pair!.tickerId))?.version, before + 1);
});

test("reads and deletes are not retried after a network error", async () => {
  const { fetch, sent } = recordingFetch();
  const client = proxyClient(fetch);
  const [pair] = pairs(server, 1);
  proxy.arm("GET", "cut");
  await assert.rejects(client.get(pair!.accountId, pair!.tickerId), NetworkError);
  proxy.arm("DELETE", "cut");
  const error = await client.delete(pair!.accountId, pair!.tickerId).catch((e: unknown) => e);
  assert.ok(error instanceof NetworkError);
  assert.deepEqual(sent.map((s) => s.method), ["GET", "DELETE"]);
  // The delete did reach the server: which is why it is not repeated blindly.
  assert.equal(await client.get(pair!.accountId, pair!.tickerId), null);
});

function proxyClient(fetch: typeof globalThis.fetch, options: { timeoutMs?: number } = {}) {
  return server.client({ baseUrl: proxy.url, fetch, ...options });
}
