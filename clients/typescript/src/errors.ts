/** One error class per answer of the server, all derived from BotStateError. */

import type { ItemFailure, StateRow, WriteResult } from "./types.js";

export interface ErrorDetails {
  status?: number;
  code?: string;
  body?: unknown;
  cause?: unknown;
}

export class BotStateError extends Error {
  /** The HTTP status, when the server answered. */
  readonly status: number | undefined;
  /** The server's `code` (e.g. "BAD_REQUEST"), when it sent one. */
  readonly code: string | undefined;
  /** The parsed answer, when there was one. */
  readonly body: unknown;
  /**
   * For a write split into several requests that failed part way: the merged result of the
   * requests already applied (their items are stored).
   */
  completed: WriteResult | undefined;

  constructor(message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.status = details.status;
    this.code = details.code;
    this.body = details.body;
  }
}

/** 400: the request did not validate; the message is the server's, naming the first problem. */
export class BadRequest extends BotStateError {}
/** 401: no API key was sent (an empty apiKey). */
export class MissingKey extends BotStateError {}
/** 403: the key is not this bot's. */
export class InvalidKey extends BotStateError {}
/** 404 "Bot with slug '…' not found". */
export class BotNotFound extends BotStateError {}
/** Any other 404: "State not found" (delete of an absent row), an unknown route. */
export class NotFound extends BotStateError {}
/** 409: a request with the same Idempotency-Key is still running (retried until the deadline). */
export class RequestInProgress extends BotStateError {}
/** 410: the change feed no longer keeps changes after `seq` (or has none past it): list the states, then poll from `seq`. */
export class Gone extends BotStateError {
  readonly seq: number | undefined;
  constructor(message: string, details: ErrorDetails = {}) {
    super(message, details);
    const found = /seq (?:past )?(\d+)/.exec(message);
    this.seq = found ? Number(found[1]) : undefined;
  }
}
/** 412: delete with ifVersion found another version. */
export class PreconditionFailed extends BotStateError {}
/** 413: the request body is over the server's limit. */
export class PayloadTooLarge extends BotStateError {}
/** 422: the Idempotency-Key was used before with a different body. */
export class IdempotencyConflict extends BotStateError {}

/** Base of the answers that say "retry later", with how long the server asked to wait. */
export class RetryLater extends BotStateError {
  readonly retryAfterMs: number | undefined;
  constructor(message: string, details: ErrorDetails & { retryAfterMs?: number | undefined } = {}) {
    super(message, details);
    this.retryAfterMs = details.retryAfterMs;
  }
}
/** 429: past the bot's rate limit, still after retrying until the deadline. */
export class RateLimited extends RetryLater {}
/** 503: database busy or unavailable, still after retrying until the deadline. */
export class Unavailable extends RetryLater {}
/** 500 or another answer the client does not know. */
export class ServerError extends BotStateError {}
/**
 * A 2xx answer that is not what the server sends (e.g. `{}` or HTML from a proxy in between):
 * `status` and `body` are the answer's. For a write, it may have been applied.
 */
export class UnexpectedAnswer extends ServerError {}

/** No answer: connection refused or cut, or the per-request timeout passed. */
export class NetworkError extends BotStateError {
  /** For a write: the Idempotency-Key it was sent with, to repeat it safely with `idempotencyKey`. */
  readonly idempotencyKey: string | undefined;
  constructor(message: string, details: ErrorDetails & { idempotencyKey?: string | undefined } = {}) {
    super(message, details);
    this.idempotencyKey = details.idempotencyKey;
  }
}

/** An item of a write that state().save() sent failed for a reason other than a version conflict. */
export class ItemFailed extends BotStateError {
  readonly result: ItemFailure;
  constructor(result: ItemFailure) {
    super(result.error, { code: result.code });
    this.result = result;
  }
}

/** state().save() found another version stored than the one it loaded. */
export class VersionConflict extends ItemFailed {
  /** The row as stored now (null: there is none), read after the conflict. */
  readonly current: StateRow | null;
  constructor(result: ItemFailure, current: StateRow | null) {
    super(result);
    this.current = current;
  }
}

const byStatus: Record<number, typeof BotStateError> = {
  400: BadRequest,
  401: MissingKey,
  403: InvalidKey,
  409: RequestInProgress,
  410: Gone,
  412: PreconditionFailed,
  413: PayloadTooLarge,
  422: IdempotencyConflict,
};

/** The error for a non-2xx answer: its class by status, its message the server's `error` or `message`. */
export function errorFromAnswer(status: number, body: unknown, retryAfterMs?: number): BotStateError {
  const fields = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
  const text = fields.error ?? fields.message;
  const message = typeof text === "string" ? text : `HTTP ${status}`;
  const details = { status, body, code: typeof fields.code === "string" ? fields.code : undefined };
  if (status === 404) {
    return message.startsWith("Bot with slug ") ? new BotNotFound(message, details) : new NotFound(message, details);
  }
  if (status === 429) return new RateLimited(message, { ...details, retryAfterMs });
  if (status === 503) return new Unavailable(message, { ...details, retryAfterMs });
  const known = byStatus[status];
  return known ? new known(message, details) : new ServerError(message, details);
}
