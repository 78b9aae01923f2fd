/** A real botstate server for the tests: its own SQLite file in a temp dir, a free port, stopped with SIGTERM. */

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { BotStateClient, type ClientOptions } from "botstate-client";

const run = promisify(execFile);

/** clients/typescript, found from this file wherever tsc put it. */
export const packageRoot = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));
export const repoRoot = path.resolve(packageRoot, "..", "..");

function findPackageRoot(dir: string): string {
  for (let at = dir; at !== path.dirname(at); at = path.dirname(at)) {
    const file = path.join(at, "package.json");
    if (existsSync(file) && JSON.parse(readFileSync(file, "utf8")).name === "botstate-client") return at;
  }
  throw new Error(`no botstate-client package.json above ${dir}`);
}

/** BOTSTATE_COMMAND when set (split on spaces), else the repository's venv. */
function botstateCommand(): string[] {
  const given = process.env.BOTSTATE_COMMAND?.trim();
  return given ? given.split(/\s+/) : [path.join(repoRoot, ".venv", "bin", "botstate")];
}

export interface ServerOptions {
  /** BOTSTATE_* settings beyond the database, host and port. */
  settings?: Record<string, string>;
  /** How many random accounts and tickers to register (3 each by default), after `accountIds` and `tickerIds`. */
  accounts?: number;
  tickers?: number;
  accountIds?: string[];
  tickerIds?: string[];
  slug?: string;
}

export interface Server {
  url: string;
  slug: string;
  apiKey: string;
  database: string;
  /** Registered account and ticker ids. */
  accounts: string[];
  tickers: string[];
  /** Runs `botstate ARGS` on this server's database; its stdout. */
  cli(...args: string[]): Promise<string>;
  /** A client for this server's bot, with `overrides`. */
  client(overrides?: Partial<ClientOptions>): BotStateClient;
  stop(): Promise<void>;
}

export async function startServer(options: ServerOptions = {}): Promise<Server> {
  const dir = await mkdtemp(path.join(tmpdir(), "botstate-ts-"));
  const database = path.join(dir, "botstate.db");
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("BOTSTATE_")) env[name] = value;
  }
  Object.assign(env, { BOTSTATE_DATABASE: database, BOTSTATE_HOST: "127.0.0.1", BOTSTATE_PORT: "0" });
  const [command, ...prefix] = botstateCommand() as [string, ...string[]];
  // The settings are the server's; the commands get the defaults (a short busy timeout would fail them).
  const cli = async (...args: string[]) => (await run(command, [...prefix, ...args], { env, timeout: 30_000 })).stdout;

  await cli("init-db");
  const slug = options.slug ?? "test-bot";
  const accounts = [...(options.accountIds ?? []), ...Array.from({ length: options.accounts ?? 3 }, () => randomUUID())];
  const tickers = [...(options.tickerIds ?? []), ...Array.from({ length: options.tickers ?? 3 }, () => randomUUID())];
  await writeFile(path.join(dir, "accounts.txt"), accounts.join("\n") + "\n");
  await writeFile(path.join(dir, "tickers.csv"), tickers.map((id, i) => `T${i},${id}`).join("\n") + "\n");
  const child = spawn(command, [...prefix, "serve"], { env: { ...env, ...options.settings }, stdio: ["ignore", "pipe", "pipe"] });
  const stopOnExit = () => child.kill("SIGKILL");
  process.once("exit", stopOnExit);
  // Each command is a Python start (about 0.4 s): they run side by side, with the server's.
  const [url, bot] = await Promise.all([
    listeningUrl(child),
    cli("bots", "create", slug, "--json").then((out) => JSON.parse(out) as { apiKey: string }),
    cli("accounts", "import", path.join(dir, "accounts.txt")),
    cli("tickers", "import", path.join(dir, "tickers.csv")),
  ]).catch(async (error: unknown) => {
    await stopChild(child);
    throw error;
  });
  return {
    url,
    slug,
    apiKey: bot.apiKey,
    database,
    accounts,
    tickers,
    cli,
    client: (overrides = {}) => new BotStateClient({ baseUrl: url, slug, apiKey: bot.apiKey, ...overrides }),
    async stop() {
      process.removeListener("exit", stopOnExit);
      await stopChild(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The base URL from the "listening on http://…" line; the output is drained from then on. */
function listeningUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => fail(new Error(`server did not start in 20 s:\n${output}`)), 20_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(error);
    };
    const read = (chunk: Buffer) => {
      if (output.length < 100_000) output += chunk.toString();
      const found = /listening on (http:\/\/[\d.]+:\d+)/.exec(output);
      if (found?.[1]) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    };
    child.stdout?.on("data", read);
    child.stderr?.on("data", read);
    child.once("exit", (code) => fail(new Error(`server exited (${code}):\n${output}`)));
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * Another connection holds BEGIN IMMEDIATE on the SQLite file for `seconds` (Node 20 has no
 * sqlite of its own): resolves once the lock is held, with a promise of its release.
 */
export async function holdDatabaseLock(database: string, seconds: number): Promise<{ released: Promise<void> }> {
  const script = [
    "import sqlite3, sys, time",
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)",
    "db.execute('BEGIN IMMEDIATE')",
    "print('locked', flush=True)",
    "time.sleep(float(sys.argv[2]))",
    "db.execute('COMMIT')",
  ].join("\n");
  const child = spawn("python3", ["-c", script, database, String(seconds)], { stdio: ["ignore", "pipe", "inherit"] });
  const released = new Promise<void>((resolve, reject) =>
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`lock holder exited ${code}`)))),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => chunk.toString().includes("locked") && resolve());
    released.catch(reject);
  });
  return { released };
}

/** One request as the client sent it and how it ended. */
export interface Sent {
  method: string;
  url: string;
  idempotencyKey: string | undefined;
  status?: number;
  replayed?: boolean;
  retryAfter?: string | null;
  failed?: string;
}

/** A fetch that notes every request the client makes (the requests still go to the real server). */
export function recordingFetch(): { fetch: typeof fetch; sent: Sent[] } {
  const sent: Sent[] = [];
  const recording: typeof fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    const entry: Sent = { method: init?.method ?? "GET", url: String(input), idempotencyKey: headers.get("idempotency-key") ?? undefined };
    sent.push(entry);
    try {
      const response = await fetch(input, init);
      entry.status = response.status;
      entry.replayed = response.headers.get("idempotent-replayed") === "true";
      entry.retryAfter = response.headers.get("retry-after");
      return response;
    } catch (error) {
      entry.failed = error instanceof Error ? error.message : String(error);
      throw error;
    }
  };
  return { fetch: recording, sent };
}

/** `count` (account, ticker) pairs of the server's, each once. */
export function pairs(server: Server, count: number): Array<{ accountId: string; tickerId: string }> {
  const all = server.accounts.flatMap((accountId) => server.tickers.map((tickerId) => ({ accountId, tickerId })));
  if (all.length < count) throw new Error(`the server has ${all.length} pairs, not ${count}`);
  return all.slice(0, count);
}
