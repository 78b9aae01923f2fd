import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Change } from "botstate-client";
import { pairs, recordingFetch, startServer, type Server } from "./harness.js";

let server: Server;
before(async () => {
  server = await startServer({ accounts: 50, tickers: 50 });
  await server.client().write(pairs(server, 2500).map((pair, i) => ({ ...pair, state: { i } })));
});
after(() => server?.stop());

test("paging over 2,500 rows returns each once, in order, following the cursors", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ fetch });
  const seen: string[] = [];
  for await (const row of client.iterStates({ pageSize: 1000 })) seen.push(`${row.userBrokerAccountId}/${row.tickerId}`);
  assert.equal(seen.length, 2500);
  assert.equal(new Set(seen).size, 2500);
  assert.deepEqual(seen, [...seen].sort());
  assert.equal(sent.length, 3, "pages of 1000, 1000 and 500");

  let pages = 0;
  for await (const row of server.client({ fetch: counting(() => pages++) }).iterStates()) void row;
  assert.equal(pages, 25, "the server's default page of 100");
});

test("iterStates filters by account, ticker and updatedSince", async () => {
  const client = server.client();
  const account = server.accounts[7]!;
  const ticker = server.tickers[3]!;
  const byAccount = await collect(client.iterStates({ accountId: account, pageSize: 7 }));
  assert.equal(byAccount.length, 50);
  assert.ok(byAccount.every((row) => row.userBrokerAccountId === account));
  const one = await collect(client.iterStates({ accountId: account, tickerId: ticker }));
  assert.equal(one.length, 1);

  const since = new Date(Date.now() + 1000);
  assert.deepEqual(await collect(client.iterStates({ updatedSince: since })), []);
  await new Promise((resolve) => setTimeout(resolve, 1100));
  await client.write([{ accountId: account, tickerId: ticker, state: { fresh: true } }]);
  const fresh = await collect(client.iterStates({ updatedSince: since }));
  assert.deepEqual(fresh.map((row) => row.state), [{ fresh: true }]);
});

test("get returns the row with its version and ETag, or null", async () => {
  const client = server.client();
  const { accountId, tickerId } = pairs(server, 1)[0]!;
  const row = await client.get(accountId, tickerId);
  assert.ok(row);
  assert.equal(row.etag, `"${row.version}"`);
  assert.equal(row.userBrokerAccountId, accountId);
  assert.equal(await client.get(accountId, "00000000-0000-4000-8000-000000000000"), null);
});

test("delete returns the row; with ifVersion only at that version", async () => {
  const client = server.client();
  const { accountId, tickerId } = pairs(server, 2500)[2000]!;
  const row = await client.get(accountId, tickerId);
  assert.ok(row);
  await assert.rejects(client.delete(accountId, tickerId, { ifVersion: row.version + 1 }), { name: "PreconditionFailed" });
  const deleted = await client.delete(accountId, tickerId, { ifVersion: row.version });
  assert.equal(deleted.id, row.id);
  assert.equal(await client.get(accountId, tickerId), null);
});

test("changes() follows the pages and resumes from a stored seq", async () => {
  const client = server.client();
  const [a, b] = pairs(server, 2500).slice(2400, 2402);
  const start = client.changes({ after: 0, pageSize: 1000 });
  let count = 0;
  for await (const _ of start) count++;
  assert.ok(count >= 2500, `${count} changes from the start`);
  const stored = start.nextAfter;

  await client.write([{ ...a!, state: { n: 1 } }]);
  await client.merge([{ ...b!, state: { n: 2 } }]);
  await client.delete(a!.accountId, a!.tickerId);
  const resumed: Change[] = [];
  const feed = client.changes({ after: stored, pageSize: 2 });
  for await (const change of feed) resumed.push(change);
  assert.deepEqual(
    resumed.map((c) => [c.op, c.accountId, c.tickerId]),
    [["upsert", a!.accountId, a!.tickerId], ["upsert", b!.accountId, b!.tickerId], ["delete", a!.accountId, a!.tickerId]],
  );
  assert.deepEqual(resumed[1]?.state, { i: 2401, n: 2 });
  assert.ok(resumed.every((c, i) => i === 0 || c.seq > resumed[i - 1]!.seq));
  assert.equal(feed.nextAfter, resumed[2]!.seq);

  // Caught up: a feed from there stops after one empty poll.
  assert.deepEqual(await collect(client.changes({ after: feed.nextAfter })), []);
});

test("changes({ follow: true }) polls until its signal aborts", async () => {
  const client = server.client();
  const controller = new AbortController();
  const start = (await collect(client.changes({ after: 0, pageSize: 1000 }))).at(-1)!.seq;
  const pair = pairs(server, 1)[0]!;
  setTimeout(() => void client.write([{ ...pair, state: { followed: true } }]), 200);
  const got: Change[] = [];
  for await (const change of client.changes({ after: start, follow: true, pollIntervalMs: 50, signal: controller.signal })) {
    got.push(change);
    controller.abort();
  }
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.state, { followed: true });
});

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

function counting(onRequest: () => void): typeof fetch {
  return (input, init) => {
    onRequest();
    return fetch(input, init);
  };
}
