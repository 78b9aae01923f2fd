/** BotStateClient: the bot's state on a botstate server, with chunking, paging and safe retries. */

import { changesPage, rowAnswer, statePage, writeAnswer } from "./answers.js";
import { ChangeFeed } from "./changes.js";
import { chunk, mergeResults, remapMessage } from "./chunks.js";
import { BadRequest, BotStateError, NotFound } from "./errors.js";
import { newIdempotencyKey } from "./keys.js";
import { FALLBACK_MAX_ITEMS, maxItemsOf } from "./limits.js";
import { toWriteResult } from "./results.js";
import { serializeItems, writeBody } from "./serialize.js";
import { StateHandle, type RowStore } from "./state-handle.js";
import { Transport, type Answer } from "./transport.js";
import type {
  CallOptions,
  ChangesOptions,
  ClientOptions,
  FetchedRow,
  JsonObject,
  StateFilter,
  StateRow,
  StateUpdate,
  WriteOptions,
  WriteResult,
} from "./types.js";
import type { WireChangesQuery, WireDeleteHeaders, WireStateQuery } from "./wire.js";

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRY_DEADLINE_MS = 30_000;

type Query = WireStateQuery | WireChangesQuery;

export class BotStateClient implements RowStore {
  private readonly transport: Transport;
  private readonly root: string;
  private readonly bot: string;
  private readonly apiKey: string;
  private knownMaxItems: number | undefined;

  /** Throws a TypeError when `baseUrl` is not an absolute http:// or https:// URL. */
  constructor(options: ClientOptions) {
    this.root = checkedBaseUrl(options.baseUrl);
    this.bot = `${this.root}/api/bots/${encodeURIComponent(options.slug)}`;
    this.apiKey = options.apiKey;
    this.transport = new Transport({
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      retryDeadlineMs: options.retryDeadlineMs ?? DEFAULT_RETRY_DEADLINE_MS,
      fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    });
  }

  /**
   * Stores each item's state, replacing what was stored (POST). Any number of items (none: an empty
   * result, with no request). A state JSON cannot carry as it is (a BigInt, a circular reference,
   * NaN or Infinity) throws a TypeError naming `states[i]` before anything is sent.
   */
  write(states: readonly StateUpdate[], options: WriteOptions = {}): Promise<WriteResult> {
    return this.sendWrite("POST", states, options);
  }

  /** Applies each item's state as an RFC 7396 merge patch to what was stored (PATCH). As write() otherwise. */
  merge(states: readonly StateUpdate[], options: WriteOptions = {}): Promise<WriteResult> {
    return this.sendWrite("PATCH", states, options);
  }

  /** The row, with its ETag, or null when there is none. */
  async get(accountId: string, tickerId: string, options: CallOptions = {}): Promise<FetchedRow | null> {
    try {
      const answer = await this.call("GET", this.rowUrl(accountId, tickerId), options);
      const row = rowAnswer(answer).data;
      return { ...row, etag: answer.headers.get("etag") ?? `"${row.version}"` };
    } catch (error) {
      if (error instanceof NotFound && error.message === "State not found") return null;
      throw error;
    }
  }

  /** Every row that matches, page after page, in (accountId, tickerId) order. */
  async *iterStates(filter: StateFilter = {}, options: CallOptions = {}): AsyncGenerator<StateRow, void, undefined> {
    const since = filter.updatedSince instanceof Date ? filter.updatedSince.toISOString() : filter.updatedSince;
    let cursor: string | undefined;
    for (;;) {
      const query: WireStateQuery = { accountId: filter.accountId, tickerId: filter.tickerId, updatedSince: since, limit: filter.pageSize, cursor };
      const page = statePage(await this.call("GET", this.url("/state", query), options));
      yield* page.data;
      if (page.nextCursor === null) return;
      if (page.nextCursor === cursor) throw new BotStateError("the server returned the same cursor twice");
      cursor = page.nextCursor;
    }
  }

  /** Deletes the row and returns it; with ifVersion, only if that is its version (else PreconditionFailed). */
  async delete(accountId: string, tickerId: string, options: CallOptions & { ifVersion?: number } = {}): Promise<StateRow> {
    const headers: WireDeleteHeaders = options.ifVersion === undefined ? {} : { "If-Match": `"${options.ifVersion}"` };
    const answer = await this.call("DELETE", this.rowUrl(accountId, tickerId), options, { ...headers });
    return rowAnswer(answer).data;
  }

  /** The bot's changes after `after`, oldest first, as `for await` reads them (see ChangeFeed). */
  changes(options: ChangesOptions = {}): ChangeFeed {
    return new ChangeFeed(async (after, signal) => {
      const query: WireChangesQuery = { after, limit: options.pageSize, accountId: options.accountId, tickerId: options.tickerId };
      return changesPage(await this.call("GET", this.url("/changes", query), { signal }));
    }, options);
  }

  /** The row loaded once, for a read-modify-write: change `.state`, then `.save()`. */
  async state<S extends JsonObject = JsonObject>(accountId: string, tickerId: string, options: CallOptions = {}): Promise<StateHandle<S>> {
    return new StateHandle<S>(this, accountId, tickerId, await this.get(accountId, tickerId, options));
  }

  /** The server's maximum items per request, from its /openapi.json (1000 when it cannot be read). */
  async maxItems(options: CallOptions = {}): Promise<number> {
    if (this.knownMaxItems !== undefined) return this.knownMaxItems;
    try {
      const answer = await this.transport.send({ method: "GET", url: `${this.root}/openapi.json`, signal: options.signal });
      this.knownMaxItems = maxItemsOf(answer.body);
    } catch (error) {
      if (options.signal?.aborted) throw error;
    }
    return this.knownMaxItems ?? FALLBACK_MAX_ITEMS;
  }

  private async sendWrite(method: "POST" | "PATCH", states: readonly StateUpdate[], options: WriteOptions): Promise<WriteResult> {
    const deadline = this.transport.deadline(); // one for the whole write, however many requests it takes
    // Every item serialized before the first request, so a bad one leaves nothing stored.
    const items = serializeItems(states);
    if (items.length === 0) return { success: true, summary: { total: 0, succeeded: 0, failed: 0 }, results: [] };
    const runs = chunk(items, await this.maxItems(options));
    const parts: WriteResult[] = [];
    const offsets: number[] = [];
    let offset = 0;
    for (const [n, run] of runs.entries()) {
      const given = options.idempotencyKey;
      const key = given === undefined ? newIdempotencyKey() : runs.length === 1 ? given : `${given}-${n}`;
      const body = writeBody(run);
      try {
        const answer = await this.transport.send({
          method,
          url: `${this.bot}/state`,
          headers: { ...this.auth(), "content-type": "application/json" },
          body,
          idempotencyKey: key,
          signal: options.signal,
          deadline,
        });
        parts.push(toWriteResult(writeAnswer(answer, run.length)));
        offsets.push(offset);
      } catch (error) {
        if (error instanceof BadRequest) error.message = remapMessage(error.message, offset);
        if (error instanceof BotStateError && parts.length > 0) error.completed = mergeResults(parts, offsets);
        throw error;
      }
      offset += run.length;
    }
    return mergeResults(parts, offsets);
  }

  private call(method: "GET" | "DELETE", url: string, options: CallOptions, headers: Record<string, string> = {}): Promise<Answer> {
    return this.transport.send({ method, url, headers: { ...this.auth(), ...headers }, signal: options.signal });
  }

  private auth(): Record<string, string> {
    return { "x-api-key": this.apiKey };
  }

  private rowUrl(accountId: string, tickerId: string): string {
    return this.url(`/state/${encodeURIComponent(accountId)}/${encodeURIComponent(tickerId)}`);
  }

  private url(path: string, query: Query = {}): string {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) params.set(name, String(value));
    }
    const search = params.toString();
    return `${this.bot}${path}${search ? `?${search}` : ""}`;
  }
}

/** The base URL without trailing slashes; a TypeError unless it is an absolute http(s) URL. */
function checkedBaseUrl(baseUrl: string): string {
  let url: URL | undefined;
  try {
    url = new URL(baseUrl);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.host === "" || url.search !== "" || url.hash !== "") {
    throw new TypeError(
      `baseUrl must be an absolute http:// or https:// URL without a query, such as "https://botstate.example.com" or "http://localhost:8080", not ${JSON.stringify(baseUrl)}`,
    );
  }
  return baseUrl.replace(/\/+$/, "");
}
