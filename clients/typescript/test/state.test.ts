import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DEFAULT_SAVE_ATTEMPTS, ItemFailed, VersionConflict } from "botstate-client";
import { recordingFetch, startServer, type Server } from "./harness.js";

let server: Server;
before(async () => {
  server = await startServer({ accounts: 2, tickers: 8 });
});
after(() => server?.stop());

const row = (n: number) => ({ accountId: server.accounts[0]!, tickerId: server.tickers[n]! });

test("state() creates a row with expectedVersion 0, then saves only what changed", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  const { accountId, tickerId } = row(0);
  const handle = await client.state<{ position?: string; qty?: number; note?: string }>(accountId, tickerId);
  assert.equal(handle.version, 0);
  assert.deepEqual(handle.state, {});
  handle.state.position = "long";
  handle.state.qty = 100;
  handle.state.note = "opened";
  assert.equal((await handle.save()).version, 1);

  handle.state.qty = 150;
  delete handle.state.note;
  const saved = await handle.save();
  assert.equal(saved.version, 2);
  assert.deepEqual(saved.state, { position: "long", qty: 150 });
  assert.equal(handle.version, 2);
  const bodies = sent.filter((s) => s.method === "PATCH");
  assert.equal(bodies.length, 2);

  // Unchanged: nothing to send.
  await handle.save();
  assert.equal(sent.filter((s) => s.method === "PATCH").length, 2);
});

test("state().save() under a conflict throws VersionConflict with the current row, writing nothing", async () => {
  const client = server.client();
  const { accountId, tickerId } = row(1);
  await client.write([{ accountId, tickerId, state: { count: 1 } }]);
  const handle = await client.state<{ count: number; mine?: boolean }>(accountId, tickerId);
  await client.merge([{ accountId, tickerId, state: { count: 10 } }]);

  handle.state.mine = true;
  const error = await handle.save().catch((e: unknown) => e);
  assert.ok(error instanceof VersionConflict, String(error));
  assert.equal(error.result.code, "VERSION_CONFLICT");
  assert.equal(error.result.currentVersion, 2);
  assert.equal(error.current?.version, 2);
  assert.deepEqual(error.current?.state, { count: 10 });
  assert.deepEqual((await client.get(accountId, tickerId))?.state, { count: 10 });
});

test("state().save(mutate) re-applies the change on a conflict: 5 concurrent increments make 5", async () => {
  const client = server.client();
  const { accountId, tickerId } = row(2);
  await client.write([{ accountId, tickerId, state: { count: 0 } }]);
  const handles = await Promise.all(Array.from({ length: 5 }, () => client.state<{ count: number }>(accountId, tickerId)));
  await Promise.all(handles.map((h) => h.save((s) => void (s.count += 1), { attempts: 10 })));
  const stored = await client.get(accountId, tickerId);
  assert.deepEqual(stored?.state, { count: 5 });
  assert.equal(stored?.version, 6);
});

test("save(mutate) gives up after its attempts with the VersionConflict", async () => {
  const { accountId, tickerId } = row(3);
  const rival = server.client();
  await rival.write([{ accountId, tickerId, state: { n: 0 } }]);
  // Another writer gets in just before each of this client's merges reaches the server.
  const racing: typeof fetch = async (input, init) => {
    if (init?.method === "PATCH") await rival.merge([{ accountId, tickerId, state: { rival: Date.now() } }]);
    return fetch(input, init);
  };
  const handle = await server.client({ fetch: racing }).state<{ n: number }>(accountId, tickerId);
  let calls = 0;
  const error = await handle.save((s) => void (s.n = ++calls), { attempts: 3 }).catch((e: unknown) => e);
  assert.ok(error instanceof VersionConflict, String(error));
  assert.equal(calls, 3);
  assert.equal(error.current?.version, 4, "the rival's three merges");
  assert.equal(error.current?.state.n, 0);
});

test("a state holding a null is saved as a replace, so the null is stored", async () => {
  const client = server.client();
  const { accountId, tickerId } = row(4);
  const handle = await client.state<{ stop: number | null; side: string }>(accountId, tickerId);
  handle.state.side = "long";
  handle.state.stop = null;
  const saved = await handle.save();
  assert.deepEqual(saved.state, { side: "long", stop: null });
});

test("an item error other than a conflict throws ItemFailed", async () => {
  const client = server.client();
  const handle = await client.state(server.accounts[0]!, "00000000-0000-4000-8000-000000000000");
  handle.state.x = 1;
  const error = await handle.save().catch((e: unknown) => e);
  assert.ok(error instanceof ItemFailed && !(error instanceof VersionConflict));
  assert.equal(error.result.code, "TICKER_NOT_FOUND");
  assert.equal(error.message, "Ticker not found");
});

test("a member set to undefined is saved as removed, nested too; one never stored is nothing to send", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  const { accountId, tickerId } = row(5);
  await client.write([{ accountId, tickerId, state: { stop: 140, keep: 1, inner: { a: 1, b: 2 } } }]);
  const handle = await client.state<{ stop?: number; keep: number; inner: { a?: number; b: number }; never?: number }>(accountId, tickerId);
  handle.state.stop = undefined;
  handle.state.inner.a = undefined;
  const saved = await handle.save();
  assert.deepEqual(saved.state, { keep: 1, inner: { b: 2 } });
  assert.equal(saved.version, 2);

  handle.state.never = undefined;
  await handle.save();
  assert.equal(sent.filter((s) => s.method === "PATCH").length, 1, "nothing changed: no second merge");
  assert.equal((await client.get(accountId, tickerId))?.version, 2);
});

test("an undefined member inside an array counts as absent: an equal array is nothing to send", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  const { accountId, tickerId } = row(6);
  await client.write([{ accountId, tickerId, state: { orders: [{ id: 1 }, { id: 2 }] } }]);
  const handle = await client.state<{ orders: Array<{ id: number; note?: string }> }>(accountId, tickerId);
  sent.length = 0;
  handle.state.orders[0]!.note = undefined;
  await handle.save();
  assert.deepEqual(sent.filter((s) => s.method === "PATCH" || s.method === "POST"), [], "no write");
  assert.equal((await client.get(accountId, tickerId))?.version, 1);
});

test("save(mutate) tries 5 times by default before the VersionConflict", async () => {
  assert.equal(DEFAULT_SAVE_ATTEMPTS, 5);
  const { accountId, tickerId } = row(7);
  const rival = server.client();
  await rival.write([{ accountId, tickerId, state: { n: 0 } }]);
  const racing: typeof fetch = async (input, init) => {
    if (init?.method === "PATCH") await rival.merge([{ accountId, tickerId, state: { rival: Date.now() } }]);
    return fetch(input, init);
  };
  const handle = await server.client({ fetch: racing }).state<{ n: number }>(accountId, tickerId);
  let calls = 0;
  const error = await handle.save((s) => void (s.n = ++calls)).catch((e: unknown) => e);
  assert.ok(error instanceof VersionConflict, String(error));
  assert.equal(calls, 5);
  assert.equal(error.current?.version, 6, "the rival's five merges");
});
