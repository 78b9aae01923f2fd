import { client } from "./client.js";

const accountId = "550e8400-e29b-41d4-a716-446655440000";
const tickerId = "222e4567-e89b-12d3-a456-426614174002";

// Update state after opening a position
const result = await client.write([
  {
    accountId,
    tickerId,
    state: {
      position: "long",
      entryPrice: 150.25,
      quantity: 100,
      stopLoss: 145.0,
      takeProfit: 160.0,
      openedAt: new Date().toISOString(),
    },
  },
]);
const [saved] = result.results;
if (saved?.status === "success") console.log(`Position stored as version ${saved.data.version}`);
