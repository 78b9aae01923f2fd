import type { StateUpdate } from "botstate-client";
import { client } from "./client.js";

// Update state for multiple account-ticker combinations
const states: StateUpdate[] = [
  {
    accountId: "550e8400-e29b-41d4-a716-446655440000",
    tickerId: "222e4567-e89b-12d3-a456-426614174002",
    state: {
      lastPrice: 150.25,
      position: "long",
      entryPrice: 145.0,
      stopLoss: 140.0,
    },
  },
  {
    accountId: "550e8400-e29b-41d4-a716-446655440001",
    tickerId: "444e4567-e89b-12d3-a456-426614174004",
    state: {
      indicators: {
        rsi: 65.5,
        macd: 1.2,
        ema20: 148.5,
      },
      signals: ["buy"],
    },
  },
];

const result = await client.write(states);
console.log(`Updated ${result.summary.succeeded} of ${result.summary.total} states`);

// Check for failures: each carries its index in `states`, a message and a code
const failures = result.results.filter((r) => r.status === "error");
if (failures.length > 0) {
  console.error("Some updates failed:", failures.map((f) => `states[${f.index}]: ${f.code} (${f.error})`));
}
