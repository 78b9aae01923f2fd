// What botstate never sends, from a tiny fake server or fetch: odd Retry-After values, 200s of
// another shape (a proxy's), and a client configured wrongly.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { BotStateClient, BotStateError, NetworkError, ServerError, Unavailable, UnexpectedAnswer } from "botstate-client";
import { recordingFetch, startServer, type Server } from "./harness.js";

interface Fake {
  url: string;
  /** When each request arrived (Date.now()). */
  seen: number[];
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 that answers every request 503 with this Retry-After. */
function busyServer(retryAfter: string): Promise<Fake> {
  const seen: number[] = [];
  const body = JSON.stringify({ error: "Database is busy, retry later", code: "SERVICE_UNAVAILABLE" });
  const server = http.createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      seen.push(Date.now());
      response.writeHead(503, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "retry-after": retryAfter });
      response.end(body);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        seen,
        close: () => new Promise((done) => server.close(() => done())),
      }),
    ),
  );
}

for (const [retryAfter, parsed] of [
  ["0", 0],
  ["1.5", undefined],
  ["-1", undefined],
  ["Wed, 21 Oct 2015 07:28:00 GMT", 0],
  ["Wednesday, 21-Oct-15 07:28:00 GMT", undefined],
  ["2015-10-21T07:28:00Z", undefined],
] as const) {
  test(`Retry-After: ${retryAfter} is no busy loop: each retry waits at least the backoff`, async () => {
    const fake = await busyServer(retryAfter);
    try {
      const client = new BotStateClient({ baseUrl: fake.url, slug: "bot", apiKey: "key", retryDeadlineMs: 1000 });
      const error = await client.get("a", "b").catch((e: unknown) => e);
      assert.ok(error instanceof Unavailable, String(error));
      assert.equal(error.retryAfterMs, parsed);
      // Backoff waits 50-100, 100-200, 200-400, 400-800 ms: at most 5 requests in 1 s.
      assert.ok(fake.seen.length >= 2 && fake.seen.length <= 6, `${fake.seen.length} requests in 1 s`);
      const gaps = fake.seen.slice(1).map((at, n) => at - fake.seen[n]!);
      assert.ok(gaps.every((gap) => gap >= 45), `gaps ${gaps.join(", ")} ms`);
    } finally {
      await fake.close();
    }
  });
}

/** A fetch that answers 200 with `body` to everything but /openapi.json (404). */
function answering(body: string): typeof fetch {
  return async (input) =>
    String(input).endsWith("/openapi.json")
      ? new Response("{}", { status: 404 })
      : new Response(body, { status: 200, headers: { "content-type": "application/json" } });
}

const shapes: Array<[string, string, RegExp]> = [
  ["{}", "{}", /`success` is not a boolean/],
  ["an HTML page", "<html>hello from a proxy</html>", /the body is not JSON/],
  ["too few results", JSON.stringify({ success: true, summary: { total: 2, succeeded: 2, failed: 0 }, results: [] }), /0 results for 1 items/],
  ["a list", "[]", /the body is not a JSON object/],
];

for (const [name, body, message] of shapes) {
  test(`a 200 write answer of another shape (${name}) is an UnexpectedAnswer`, async () => {
    const client = new BotStateClient({ baseUrl: "http://127.0.0.1:9", slug: "bot", apiKey: "key", fetch: answering(body) });
    const error = await client.write([{ accountId: "a", tickerId: "b", state: {} }]).catch((e: unknown) => e);
    assert.ok(error instanceof UnexpectedAnswer, String(error));
    assert.ok(error instanceof ServerError && error instanceof BotStateError);
    assert.equal(error.status, 200);
    assert.match(error.message, message);
  });
}

test("200 answers of another shape to get, delete, iterStates and changes are UnexpectedAnswers", async () => {
  for (const body of ["{}", JSON.stringify({ data: { state: {} } }), JSON.stringify({ data: [{}], nextCursor: null })]) {
    const client = new BotStateClient({ baseUrl: "http://127.0.0.1:9", slug: "bot", apiKey: "key", fetch: answering(body) });
    const calls: Array<[string, () => Promise<unknown>]> = [
      ["get", () => client.get("a", "b")],
      ["delete", () => client.delete("a", "b")],
      ["iterStates", () => client.iterStates().next()],
      ["changes", () => client.changes()[Symbol.asyncIterator]().next()],
    ];
    for (const [name, call] of calls) {
      const error = await call().catch((e: unknown) => e);
      assert.ok(error instanceof UnexpectedAnswer, `${name} of ${body}: ${String(error)}`);
      assert.match(error.message, /^unexpected HTTP 200 answer: /);
    }
  }
});

test("a base URL without http:// or https:// is refused by the constructor", () => {
  for (const baseUrl of ["localhost:8080", "127.0.0.1:1", "botstate.example.com", "ftp://example.com", "", "http://host/?a=1"]) {
    assert.throws(
      () => new BotStateClient({ baseUrl, slug: "bot", apiKey: "key" }),
      (error: unknown) => error instanceof TypeError && /http:\/\/ or https:\/\/ URL/.test(error.message) && error.message.includes(JSON.stringify(baseUrl)),
      baseUrl,
    );
  }
  for (const baseUrl of ["http://localhost:8080", "https://botstate.example.com/", "HTTPS://botstate.example.com/prefix"]) {
    assert.doesNotThrow(() => new BotStateClient({ baseUrl, slug: "bot", apiKey: "key" }), baseUrl);
  }
});

let server: Server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

test("a request fetch could never send (an API key with a newline) fails at once, not retried as a network error", async () => {
  const { fetch, sent } = recordingFetch();
  const client = server.client({ apiKey: "bad\nkey", fetch, retryDeadlineMs: 5000 });
  const started = Date.now();
  const error = await client.write([{ accountId: server.accounts[0]!, tickerId: server.tickers[0]!, state: {} }]).catch((e: unknown) => e);
  assert.ok(error instanceof TypeError && !(error instanceof NetworkError), String(error));
  assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);
  assert.deepEqual(sent.filter((s) => s.method === "POST"), []);
});
