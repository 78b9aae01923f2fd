import { client } from "./client.js";
import { calculateBollingerBands, calculateMACD, calculateRSI } from "./indicators.js";

const accountId = "550e8400-e29b-41d4-a716-446655440000";
const tickerId = "222e4567-e89b-12d3-a456-426614174002";
const prices = [148.1, 149.3, 148.7, 150.2, 151.0, 150.25];

// Update technical indicator state. merge() (PATCH) changes only these members:
// the position stored before stays as it is.
await client.merge([
  {
    accountId,
    tickerId,
    state: {
      indicators: {
        rsi: calculateRSI(prices),
        macd: calculateMACD(prices),
        bollingerBands: calculateBollingerBands(prices),
      },
      lastCalculation: new Date().toISOString(),
    },
  },
]);

const row = await client.get(accountId, tickerId);
console.log(`position ${String(row?.state.position)}, version ${row?.version}`);
