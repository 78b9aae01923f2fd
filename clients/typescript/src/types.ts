/** The client's public types: what callers pass in and get back. */

import type { JsonObject, WireChange, WireItemErrorCode, WireStateRow, WireSummary } from "./wire.js";

export type { JsonObject };

/** One item of a write: the state of one (account, ticker). */
export interface StateUpdate {
  accountId: string;
  tickerId: string;
  state: JsonObject;
  /** Write only if the stored version is this one (0: only if no row exists yet). */
  expectedVersion?: number;
}

/** A stored row. `version` starts at 1 and goes up by one on every write. */
export type StateRow = WireStateRow;

/** A row read with get(), with the ETag the server sent (`"<version>"`). */
export interface FetchedRow extends StateRow {
  etag: string;
}

export type ItemErrorCode = WireItemErrorCode;

export interface ItemSuccess {
  status: "success";
  /** The item's place in the list the caller passed, from 0. */
  index: number;
  accountId: string;
  tickerId: string;
  data: StateRow;
}

export interface ItemFailure {
  status: "error";
  /** The item's place in the list the caller passed, from 0. */
  index: number;
  accountId: string;
  tickerId: string;
  /** The server's message, e.g. "Ticker not found". */
  error: string;
  code: ItemErrorCode;
  /** On VERSION_CONFLICT: the stored version (0: no row), the expectedVersion to retry with. */
  currentVersion?: number;
}

export type ItemResult = ItemSuccess | ItemFailure;

export type Summary = WireSummary;

/** The outcome of a write of any length: one summary, one result per item in the caller's order. */
export interface WriteResult {
  success: boolean;
  summary: Summary;
  results: ItemResult[];
}

/** One entry of the change feed (see the server's docs/history.md). */
export type Change = WireChange;

export interface ClientOptions {
  /** Where the server is, e.g. "https://botstate.example.com" (without /api). */
  baseUrl: string;
  slug: string;
  apiKey: string;
  /** Per request (each retry gets its own). Default 10 s. */
  timeoutMs?: number;
  /**
   * One deadline per call across its retries: no wait for a retry runs past this long after the
   * call began (a split write's requests share it). Default 30 s.
   */
  retryDeadlineMs?: number;
  /** A fetch to use instead of the global one (for instrumenting or proxies). */
  fetch?: typeof fetch;
}

export interface CallOptions {
  /** Aborts the call, its retries and waits included. */
  signal?: AbortSignal;
}

export interface WriteOptions extends CallOptions {
  /**
   * Use this Idempotency-Key instead of a fresh random one, e.g. to repeat a write after a
   * restart. A write split into several requests sends `${key}-${n}` for its n-th (from 0).
   */
  idempotencyKey?: string;
}

export interface StateFilter {
  accountId?: string;
  tickerId?: string;
  /** Only rows updated at or after this moment. */
  updatedSince?: Date | string;
  /** Rows per request, 1-1000 (default: the server's, 100). */
  pageSize?: number;
}

export interface ChangesOptions extends CallOptions {
  /** The seq to resume after: the last one processed (default 0, from the first kept change). */
  after?: number;
  accountId?: string;
  tickerId?: string;
  /** Changes per request, 1-1000 (default: the server's, 100). */
  pageSize?: number;
  /** Keep polling once caught up, until `signal` aborts (default false: stop when caught up). */
  follow?: boolean;
  /** Between polls when following. Default 1 s. */
  pollIntervalMs?: number;
}
