/**
 * The JSON the server sends and accepts, field for field as in its /openapi.json.
 *
 * typecheck/openapi.ts checks these against types generated from a live server's document,
 * both ways, so a change to the document that the client does not follow fails the build.
 */

export type JsonObject = { [key: string]: unknown };

export interface WireStateUpdate {
  accountId: string;
  tickerId: string;
  state: JsonObject;
  expectedVersion?: number | null;
}

export interface WireStateUpdates {
  states: WireStateUpdate[];
}

export interface WireStateRow {
  id: string;
  botId: string;
  userBrokerAccountId: string;
  tickerId: string;
  state: JsonObject;
  version: number;
  createdAt: string;
  updatedAt: string;
}

export interface WireSummary {
  total: number;
  succeeded: number;
  failed: number;
}

export type WireItemErrorCode =
  | "TICKER_NOT_FOUND"
  | "ACCOUNT_NOT_FOUND"
  | "STATE_TOO_LARGE"
  | "INTERNAL_ERROR"
  | "VERSION_CONFLICT";

/** One item's outcome, flat as the document has it; client.ts turns it into an ItemResult. */
export interface WireItemResult {
  status: "success" | "error";
  data?: WireStateRow;
  error?: string;
  accountId: string;
  tickerId: string;
  index: number;
  code?: WireItemErrorCode;
  currentVersion?: number;
}

export interface WireWriteResponse {
  success: boolean;
  summary: WireSummary;
  results: WireItemResult[];
}

export interface WireStateResponse {
  data: WireStateRow;
}

export interface WireStatePage {
  data: WireStateRow[];
  nextCursor: string | null;
}

export interface WireStateQuery {
  accountId?: string;
  tickerId?: string;
  updatedSince?: string;
  limit?: number;
  cursor?: string;
}

export interface WireChange {
  seq: number;
  op: "upsert" | "delete";
  accountId: string;
  tickerId: string;
  version: number;
  state?: JsonObject;
  at: string;
}

export interface WireChangesPage {
  data: WireChange[];
  nextAfter: number;
}

export interface WireChangesQuery {
  after?: number;
  limit?: number;
  accountId?: string;
  tickerId?: string;
}

/** Every error answer but 401/403. */
export interface WireError {
  error: string;
  code: string;
}

/** 401 and 403 answer this shape instead. */
export interface WireAuthError {
  message: string;
}

/** Request headers, by the names the document gives them. */
export interface WireWriteHeaders {
  "Idempotency-Key": string;
}

export interface WireDeleteHeaders {
  "If-Match"?: string;
}

/** Response headers the client reads. */
export interface WireWriteAnswerHeaders {
  "Idempotent-Replayed"?: "true";
}

export interface WireBotPath {
  slug: string;
}

export interface WireRowPath extends WireBotPath {
  accountId: string;
  tickerId: string;
}
