/** One HTTP call with the contract's retries: what is retried, how long to wait, and one deadline. */

import { backoffMs, retryAfterMs, sleep } from "./backoff.js";
import { BotStateError, errorFromAnswer, NetworkError } from "./errors.js";
import type { WireWriteHeaders } from "./wire.js";

export interface Call {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  url: string;
  headers?: Record<string, string>;
  /** Serialized once, so every retry sends the same bytes (the server compares them for a key). */
  body?: string;
  /**
   * Sent as Idempotency-Key. Every call is retried after 429 and 503; one with a key also after a
   * network error and after the 409 of a request with its key still running. Nothing else is.
   */
  idempotencyKey?: string;
  signal?: AbortSignal | undefined;
  /** When retries stop (Date.now() milliseconds); default: retryDeadlineMs after this call starts. */
  deadline?: number;
}

export interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
}

export interface TransportOptions {
  timeoutMs: number;
  retryDeadlineMs: number;
  fetch: typeof fetch;
}

export class Transport {
  constructor(private readonly options: TransportOptions) {}

  /** The 2xx answer of `call`, after the retries it allows (see Call.idempotencyKey); else the error for the last outcome. */
  async send(call: Call): Promise<Answer> {
    const deadline = call.deadline ?? this.deadline();
    checkRequest(call);
    for (let attempt = 0; ; attempt++) {
      let answer: Answer | undefined;
      let failure: unknown;
      try {
        answer = await this.once(call);
      } catch (error) {
        if (call.signal?.aborted) throw call.signal.reason;
        failure = error;
      }
      if (answer && answer.status >= 200 && answer.status < 300) return answer;
      const wait = this.retryWait(call, attempt, answer);
      if (wait === undefined || Date.now() + wait > deadline) {
        throw answer ? this.errorFor(answer) : this.networkError(call, failure);
      }
      await sleep(wait, call.signal);
    }
  }

  /** The deadline of a call that starts now. */
  deadline(): number {
    return Date.now() + this.options.retryDeadlineMs;
  }

  private async once(call: Call): Promise<Answer> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const [signal, release] = call.signal ? anySignal(call.signal, timeout) : [timeout, () => {}];
    const keyHeader: WireWriteHeaders | undefined = call.idempotencyKey === undefined ? undefined : { "Idempotency-Key": call.idempotencyKey };
    try {
      const response = await this.options.fetch(call.url, {
        method: call.method,
        headers: { accept: "application/json", ...call.headers, ...keyHeader },
        body: call.body ?? null,
        signal,
      });
      // The timeout covers the body too: the signal aborts its read.
      const text = await response.text();
      return { status: response.status, headers: response.headers, body: parseBody(text) };
    } finally {
      release();
    }
  }

  /** Milliseconds to wait before retrying, or undefined when this outcome is not retried. */
  private retryWait(call: Call, attempt: number, answer: Answer | undefined): number | undefined {
    const keyed = call.idempotencyKey !== undefined;
    if (answer === undefined) return keyed ? backoffMs(attempt) : undefined;
    if (answer.status === 429 || answer.status === 503) {
      // Never less than the backoff, so "Retry-After: 0" (or an unreadable one) is no busy loop.
      return Math.max(retryAfterMs(answer.headers.get("retry-after")) ?? 0, backoffMs(attempt));
    }
    if (answer.status === 409 && keyed && codeOf(answer.body) === "CONFLICT") return backoffMs(attempt);
    return undefined;
  }

  private errorFor(answer: Answer): BotStateError {
    return errorFromAnswer(answer.status, answer.body, retryAfterMs(answer.headers.get("retry-after")));
  }

  private networkError(call: Call, failure: unknown): NetworkError {
    const timedOut = failure instanceof Error && failure.name === "TimeoutError";
    const reason = timedOut ? `no answer within ${this.options.timeoutMs} ms` : describe(failure);
    return new NetworkError(`${call.method} ${call.url}: ${reason}`, {
      cause: failure,
      idempotencyKey: call.idempotencyKey,
    });
  }
}

/**
 * Throws fetch's own TypeError for a request it could never send (a URL it cannot parse, a header
 * value that is not a byte string, e.g. an API key with a newline): a mistake of the caller's, not
 * a network failure, so it is thrown at once instead of being retried until the deadline.
 */
function checkRequest(call: Call): void {
  new Request(call.url, { method: call.method, headers: { ...call.headers, ...(call.idempotencyKey === undefined ? {} : { "Idempotency-Key": call.idempotencyKey }) } });
}

function parseBody(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function codeOf(body: unknown): unknown {
  return typeof body === "object" && body !== null ? (body as { code?: unknown }).code : undefined;
}

function describe(failure: unknown): string {
  if (!(failure instanceof Error)) return String(failure);
  const cause = failure.cause instanceof Error ? `: ${failure.cause.message}` : "";
  return `${failure.message}${cause}`;
}

/**
 * A signal that aborts when either does (AbortSignal.any is not in Node 18), and a release that
 * drops its listeners, so a long-lived caller's signal does not collect one per request.
 */
function anySignal(a: AbortSignal, b: AbortSignal): [AbortSignal, () => void] {
  const controller = new AbortController();
  const abortA = () => controller.abort(a.reason);
  const abortB = () => controller.abort(b.reason);
  if (a.aborted) abortA();
  else if (b.aborted) abortB();
  a.addEventListener("abort", abortA, { once: true });
  b.addEventListener("abort", abortB, { once: true });
  const release = () => {
    a.removeEventListener("abort", abortA);
    b.removeEventListener("abort", abortB);
  };
  return [controller.signal, release];
}
