/** Wire answers turned into the client's typed results. */

import type { ItemResult, WriteResult } from "./types.js";
import type { WireItemResult, WireWriteResponse } from "./wire.js";

export function toWriteResult(wire: WireWriteResponse): WriteResult {
  return { success: wire.success, summary: { ...wire.summary }, results: wire.results.map(toItemResult) };
}

export function toItemResult(wire: WireItemResult): ItemResult {
  const where = { index: wire.index, accountId: wire.accountId, tickerId: wire.tickerId };
  if (wire.status === "success" && wire.data) return { status: "success", ...where, data: wire.data };
  return {
    status: "error",
    ...where,
    error: wire.error ?? "Failed to update state",
    // Servers before per-item codes sent none; this one always does.
    code: wire.code ?? "INTERNAL_ERROR",
    ...(wire.currentVersion === undefined ? {} : { currentVersion: wire.currentVersion }),
  };
}
