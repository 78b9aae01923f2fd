import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { BotStateClient } from "botstate-client";
import { packageRoot, startServer, type Server } from "./harness.js";

const examples = path.join(packageRoot, "examples");
const built = path.join(packageRoot, "build", "examples");
/** Examples the README does not show whole: the bot (it has its own test) and the indicator stand-ins. */
const notInReadme = new Set(["bot.ts", "indicators.ts"]);

let server: Server;
before(async () => {
  server = await startServer({
    slug: "my-trading-bot",
    // The spec's ids, then the bot's 20 accounts and 30 tickers.
    accountIds: ["550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440001"],
    tickerIds: ["222e4567-e89b-12d3-a456-426614174002", "444e4567-e89b-12d3-a456-426614174004"],
    accounts: 20,
    tickers: 30,
  });
});
after(() => server?.stop());

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a compiled example with `env` added; its exit code and output. */
function runExample(name: string, env: Record<string, string>): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(built, name.replace(/\.ts$/, ".js"))], { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test("the README shows every example verbatim", async () => {
  const readme = await readFile(path.join(packageRoot, "README.md"), "utf8");
  const shown = new Map([...readme.matchAll(/<!-- examples\/([\w.-]+\.ts) -->\n```ts\n([\s\S]*?)```\n/g)].map((m) => [m[1]!, m[2]!]));
  const files = (await readdir(examples)).filter((name) => name.endsWith(".ts") && !notInReadme.has(name));
  assert.deepEqual([...shown.keys()].sort(), files.sort());
  for (const name of files) assert.equal(shown.get(name), await readFile(path.join(examples, name), "utf8"), `README's copy of ${name}`);
});

test("the README's examples run against a live server", async () => {
  const env = { BOTSTATE_URL: server.url, BOTSTATE_SLUG: server.slug, BOTSTATE_API_KEY: server.apiKey };
  const expected: Array<[string, RegExp, "stdout" | "stderr"]> = [
    ["update-bot-state.ts", /^Updated 2 of 2 states\n$/, "stdout"],
    ["errors.ts", /^Failed to update user bot state: Invalid API key for this bot\n$/, "stderr"],
    ["update-position.ts", /^Position stored as version 2\n$/, "stdout"],
    ["update-indicators.ts", /^position long, version 3\n$/, "stdout"],
    ["end-of-day.ts", /^Updated 4 positions\n$/, "stdout"],
    ["read-state.ts", /^version 4, etag "4"\n2 rows for the second account\n(\d+ (upsert|delete) \S+ v\d+\n){8}caught up at seq \d+\n$/, "stdout"],
    ["read-modify-write.ts", /^quantity 200 at version 6\n$/, "stdout"],
  ];
  for (const [name, output, stream] of expected) {
    const ran = await runExample(name, env);
    assert.equal(ran.code, 0, `${name}: ${ran.stderr}`);
    assert.match(ran[stream], output, name);
  }
});

test("the new-user bot: per-tick writes, fills, a crash and a restore, the end-of-day write of 600 pairs", async (t) => {
  const bots = await Promise.all(
    ["crashing-bot", "steady-bot"].map(async (slug) => ({ slug, ...(JSON.parse(await server.cli("bots", "create", slug, "--json")) as { apiKey: string }) })),
  );
  const universe = { BOT_ACCOUNTS: server.accounts.slice(2).join(","), BOT_TICKERS: server.tickers.slice(2).join(",") };
  const envOf = (bot: { slug: string; apiKey: string }) => ({ ...universe, BOTSTATE_URL: server.url, BOTSTATE_SLUG: bot.slug, BOTSTATE_API_KEY: bot.apiKey });
  const [crashing, steady] = bots as [(typeof bots)[0], (typeof bots)[0]];

  const crashed = await runExample("bot.ts", { ...envOf(crashing), BOT_CRASH_AFTER: "20" });
  assert.equal(crashed.code, 1, crashed.stderr);
  assert.match(crashed.stdout, /^restored 0 pairs, resuming at tick 0\ncrashing after tick 20\n$/);
  const restarted = await runExample("bot.ts", envOf(crashing));
  assert.equal(restarted.code, 0, restarted.stderr);
  assert.match(restarted.stdout, /^restored 420 pairs, resuming at tick 21\nend of day: updated 600 of 600 pairs\n/);
  const uninterrupted = await runExample("bot.ts", envOf(steady));
  assert.equal(uninterrupted.code, 0, uninterrupted.stderr);
  const summary = JSON.parse(uninterrupted.stdout.trim().split("\n").at(-1)!) as { trades: number };
  assert.ok(summary.trades > 0, "the bot traded");

  // What the crashed and restored bot stored is what the one that never crashed stored.
  const statesOf = async (bot: { slug: string; apiKey: string }) => {
    const client = new BotStateClient({ baseUrl: server.url, slug: bot.slug, apiKey: bot.apiKey });
    const states = new Map<string, unknown>();
    for await (const row of client.iterStates()) states.set(`${row.userBrokerAccountId}/${row.tickerId}`, row.state);
    return states;
  };
  const [afterCrash, withoutCrash] = await Promise.all([statesOf(crashing), statesOf(steady)]);
  assert.equal(afterCrash.size, 600);
  assert.deepEqual(afterCrash, withoutCrash);

  const lines = (await readFile(path.join(examples, "bot.ts"), "utf8")).split("\n");
  const code = lines.filter((line) => {
    const text = line.trim();
    return text !== "" && !text.startsWith("//") && !text.startsWith("/*") && !text.startsWith("*");
  });
  t.diagnostic(`examples/bot.ts: ${code.length} code lines (the issue's bot without a client: 149)`);
  assert.ok(code.length < 149, `${code.length} code lines`);
});
