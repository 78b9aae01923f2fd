import { client } from "./client.js";

// One row (null when there is none), with its version and ETag
const row = await client.get("550e8400-e29b-41d4-a716-446655440000", "222e4567-e89b-12d3-a456-426614174002");
console.log(`version ${row?.version}, etag ${row?.etag}`);

// Every row of an account, page after page
const tickers: string[] = [];
for await (const state of client.iterStates({ accountId: "550e8400-e29b-41d4-a716-446655440001" })) {
  tickers.push(state.tickerId);
}
console.log(`${tickers.length} rows for the second account`);

// The change feed: store nextAfter, and resume from it after a restart
let seq = 0; // e.g. read from a file
const feed = client.changes({ after: seq });
for await (const change of feed) {
  console.log(`${change.seq} ${change.op} ${change.accountId}/${change.tickerId} v${change.version}`);
}
seq = feed.nextAfter; // e.g. written to the file
console.log(`caught up at seq ${seq}`);
