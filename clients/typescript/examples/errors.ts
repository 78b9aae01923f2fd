import { BotStateClient, BotStateError, InvalidKey, MissingKey } from "botstate-client";

const client = new BotStateClient({
  baseUrl: process.env.BOTSTATE_URL ?? "https://api.example.com",
  slug: "my-trading-bot",
  apiKey: "not-the-bot's-key",
});

try {
  await client.write([
    { accountId: "550e8400-e29b-41d4-a716-446655440000", tickerId: "222e4567-e89b-12d3-a456-426614174002", state: {} },
  ]);
} catch (error) {
  if (error instanceof InvalidKey || error instanceof MissingKey) {
    // 401 and 403 answer {"message"}, the rest {"error", "code"}: the client reads both.
    console.error(`Failed to update user bot state: ${error.message}`);
  } else if (error instanceof BotStateError) {
    console.error(`Failed to update user bot state: ${error.message} (${error.status} ${error.code})`);
  } else {
    throw error;
  }
}
