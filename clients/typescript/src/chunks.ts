/** Writes of any length: split to the server's maximum, results merged back into the caller's order. */

import type { WriteResult } from "./types.js";

/** The list in runs of at most `size` (none for an empty list: client.ts answers that itself). */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  const runs: T[][] = [];
  for (let start = 0; start < items.length; start += size) runs.push(items.slice(start, start + size));
  return runs;
}

/** One result for runs that started at `offsets`: summaries added, each index moved to the caller's list. */
export function mergeResults(parts: readonly WriteResult[], offsets: readonly number[]): WriteResult {
  const merged: WriteResult = { success: true, summary: { total: 0, succeeded: 0, failed: 0 }, results: [] };
  parts.forEach((part, n) => {
    const offset = offsets[n] ?? 0;
    merged.success &&= part.success;
    merged.summary.total += part.summary.total;
    merged.summary.succeeded += part.summary.succeeded;
    merged.summary.failed += part.summary.failed;
    for (const result of part.results) merged.results.push({ ...result, index: result.index + offset });
  });
  return merged;
}

/** A validation message of a run ("states[3].accountId …") with the index in the caller's list. */
export function remapMessage(message: string, offset: number): string {
  return offset === 0 ? message : message.replace(/^states\[(\d+)\]/, (_, i: string) => `states[${Number(i) + offset}]`);
}
