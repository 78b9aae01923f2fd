/** How long to wait before a retry: the server's Retry-After, or capped exponential backoff with jitter. */

const BASE_MS = 100;
const CAP_MS = 2000;

/** Attempt 0 waits 50-100 ms, doubling up to 1-2 s ("equal jitter"). */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** attempt);
  return ceiling / 2 + random() * (ceiling / 2);
}

/**
 * Retry-After as milliseconds: non-negative integer seconds, or an HTTP-date in the IMF-fixdate form
 * ("Wed, 21 Oct 2015 07:28:00 GMT"; one in the past is 0). Undefined when absent or anything else
 * ("1.5", "-1", other date forms), so that only the backoff counts.
 */
export function retryAfterMs(header: string | null, now: number = Date.now()): number | undefined {
  if (header === null) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  if (!/^[A-Z][a-z]{2}, /.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
