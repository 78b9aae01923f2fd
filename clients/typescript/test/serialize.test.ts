import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { StateUpdate } from "botstate-client";
import { pairs, recordingFetch, startServer, type Server } from "./harness.js";

// A maximum of 7 items per request, so that a bad item in the second request comes after a first.
let server: Server;
before(async () => {
  server = await startServer({ accounts: 6, tickers: 10, settings: { BOTSTATE_MAX_STATES: "7" } });
});
after(() => server?.stop());

let used = 0;
/** `n` pairs no other test of this file has used. */
function take(n: number) {
  const got = pairs(server, used + n).slice(used);
  used += n;
  return got;
}

/** A write of ten items, the ninth (in the second request) holding `bad`: nothing stored, a TypeError naming it. */
async function refused(method: "write" | "merge", bad: Record<string, unknown>, message: RegExp): Promise<void> {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  await client.maxItems();
  sent.length = 0;
  const items: StateUpdate[] = take(10).map((pair, i) => ({ ...pair, state: { i } }));
  items[8] = { ...items[8]!, state: bad };
  const error = await client[method](items).then(
    () => assert.fail("expected a TypeError"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof TypeError, String(error));
  assert.match(error.message, message);
  assert.deepEqual(sent, [], "no request was sent");
  const check = server.client();
  const stored = await Promise.all(items.map((item) => check.get(item.accountId, item.tickerId)));
  assert.equal(stored.filter(Boolean).length, 0, "nothing was stored");
}

test("a BigInt in a later request's item: a TypeError naming states[8], nothing sent or stored", async () => {
  await refused("write", { qty: 10n }, /^states\[8\]\.state\.qty is a BigInt/);
});

test("a circular state in a later request's item: a TypeError naming states[8], nothing sent or stored", async () => {
  const loop: Record<string, unknown> = { a: 1 };
  loop.self = loop;
  await refused("write", { nested: loop }, /^states\[8\]\.state\.nested\.self refers back to states\[8\]\.state\.nested/);
});

test("NaN and Infinity are refused, not sent as null (which a merge reads as remove)", async () => {
  await refused("merge", { rsi: 0 / 0 }, /^states\[8\]\.state\.rsi is NaN/);
  await refused("write", { levels: [1, Infinity] }, /^states\[8\]\.state\.levels\[1\] is Infinity/);
  await refused("merge", { "odd key": { deep: -Infinity } }, /^states\[8\]\.state\["odd key"\]\.deep is -Infinity/);

  // And the member NaN would have removed is still there.
  const client = server.client();
  const [pair] = take(1);
  await client.write([{ ...pair!, state: { rsi: 55, keep: 1 } }]);
  await assert.rejects(client.merge([{ ...pair!, state: { rsi: Number.NaN } }]), TypeError);
  assert.deepEqual((await client.get(pair!.accountId, pair!.tickerId))?.state, { rsi: 55, keep: 1 });
});

test("a shared (not circular) object, a Date and a toJSON are sent as JSON.stringify sends them", async () => {
  const client = server.client();
  const [pair] = take(1);
  const shared = { n: 1 };
  const at = new Date("2024-01-02T03:04:05.000Z");
  await client.write([{ ...pair!, state: { a: shared, b: [shared], at, money: { toJSON: () => "1.50" } } }]);
  assert.deepEqual((await client.get(pair!.accountId, pair!.tickerId))?.state, { a: { n: 1 }, b: [{ n: 1 }], at: at.toISOString(), money: "1.50" });
});

test("write([]) and merge([]) answer an empty result without a request", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  const empty = { success: true, summary: { total: 0, succeeded: 0, failed: 0 }, results: [] };
  assert.deepEqual(await client.write([]), empty);
  assert.deepEqual(await client.merge([]), empty);
  assert.deepEqual(sent, []);
});
