import type { StateUpdate } from "botstate-client";
import { client } from "./client.js";

interface Position {
  accountId: string;
  tickerId: string;
  currentPrice: number;
  unrealizedPnl: number;
}

// The bot's open positions: here every pair of the two accounts and two tickers above.
const activePositions: Position[] = ["550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440001"].flatMap(
  (accountId) =>
    ["222e4567-e89b-12d3-a456-426614174002", "444e4567-e89b-12d3-a456-426614174004"].map((tickerId) => ({
      accountId,
      tickerId,
      currentPrice: 151.0,
      unrealizedPnl: 600.0,
    })),
);

// Update state for all active positions at end of day: any number, split to the server's limit
const states: StateUpdate[] = activePositions.map((position) => ({
  accountId: position.accountId,
  tickerId: position.tickerId,
  state: {
    endOfDayPrice: position.currentPrice,
    unrealizedPnl: position.unrealizedPnl,
    lastUpdate: new Date().toISOString(),
  },
}));

const result = await client.merge(states);
console.log(`Updated ${result.summary.succeeded} positions`);
