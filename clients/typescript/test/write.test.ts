import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { BadRequest } from "botstate-client";
import { pairs, recordingFetch, startServer, type Server } from "./harness.js";

let server: Server;
before(async () => {
  server = await startServer({ accounts: 50, tickers: 50 });
});
after(() => server?.stop());

test("a 2,500-item write gives one merged result whose 2,500 indices match", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  const items = pairs(server, 2500).map((pair, i) => ({ ...pair, state: { i } }));
  // Two items the server refuses, in the second and third requests, keep their caller's index.
  const missing = "00000000-0000-4000-8000-000000000000";
  items[1500] = { ...items[1500]!, tickerId: missing };
  items[2499] = { ...items[2499]!, tickerId: missing };

  const result = await client.write(items);

  assert.deepEqual(result.summary, { total: 2500, succeeded: 2498, failed: 2 });
  assert.equal(result.success, true);
  assert.equal(result.results.length, 2500);
  result.results.forEach((item, i) => {
    assert.equal(item.index, i);
    assert.equal(item.accountId, items[i]!.accountId);
    assert.equal(item.tickerId, items[i]!.tickerId);
    if (item.status === "success") assert.deepEqual(item.data.state, { i });
  });
  const failed = result.results.filter((r) => r.status === "error");
  assert.deepEqual(failed.map((r) => [r.index, r.code]), [[1500, "TICKER_NOT_FOUND"], [2499, "TICKER_NOT_FOUND"]]);

  const posts = sent.filter((s) => s.method === "POST");
  assert.equal(posts.length, 3, "1000 + 1000 + 500 items, the server's maximum read from /openapi.json");
  assert.equal(new Set(posts.map((p) => p.idempotencyKey)).size, 3, "one fresh Idempotency-Key per request");
});

test("merge applies an RFC 7396 patch; a version conflict carries the stored version", async () => {
  const client = server.client();
  const [pair] = pairs(server, 1);
  await client.write([{ ...pair!, state: { a: 1, b: { c: 2, d: 3 } } }]);
  const merged = await client.merge([{ ...pair!, state: { a: null, b: { c: 5 } } }]);
  const first = merged.results[0]!;
  assert.equal(first.status, "success");
  if (first.status === "success") assert.deepEqual(first.data.state, { b: { c: 5, d: 3 } });

  const conflict = await client.merge([{ ...pair!, state: { x: 1 }, expectedVersion: 1 }]);
  assert.deepEqual(conflict.summary, { total: 1, succeeded: 0, failed: 1 });
  const item = conflict.results[0]!;
  assert.equal(item.status, "error");
  if (item.status === "error") {
    assert.equal(item.code, "VERSION_CONFLICT");
    assert.equal(item.currentVersion, first.status === "success" ? first.data.version : -1);
  }
});

test("a request refused part way names the caller's index and carries what was applied", async () => {
  const client = server.client();
  const items = pairs(server, 1100).map((pair, i) => ({ ...pair, state: { again: i } }));
  items[1050] = { ...items[1050]!, accountId: "not-a-uuid" };
  const error = await client.write(items).then(
    () => assert.fail("expected BadRequest"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof BadRequest);
  assert.equal(error.message, "states[1050].accountId must be a valid UUID");
  assert.equal(error.completed?.results.length, 1000);
  assert.equal(error.completed?.results[999]?.index, 999);
});
