import { BotStateClient } from "botstate-client";

export const client = new BotStateClient({
  baseUrl: process.env.BOTSTATE_URL ?? "https://api.example.com",
  slug: process.env.BOTSTATE_SLUG ?? "my-trading-bot",
  apiKey: process.env.BOTSTATE_API_KEY ?? "your-api-key",
  // Optional: per request, and how long retries may go on (429, 503 and lost answers).
  timeoutMs: 10_000,
  retryDeadlineMs: 30_000,
});
