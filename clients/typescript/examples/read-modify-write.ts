import { VersionConflict } from "botstate-client";
import { client } from "./client.js";

interface Position {
  [key: string]: unknown;
  position?: string;
  quantity?: number;
}

const accountId = "550e8400-e29b-41d4-a716-446655440000";
const tickerId = "222e4567-e89b-12d3-a456-426614174002";

// Load once, change, save: the save is a merge with expectedVersion, so it never
// overwrites a change someone else made in between.
const handle = await client.state<Position>(accountId, tickerId);
handle.state.quantity = (handle.state.quantity ?? 0) + 50;
try {
  await handle.save();
} catch (error) {
  if (!(error instanceof VersionConflict)) throw error;
  console.log(`someone else wrote version ${error.current?.version} first`);
}

// Or hand save() the change: on a conflict it reloads the row and applies it again.
const saved = await handle.save((state) => {
  state.quantity = (state.quantity ?? 0) + 50;
});
console.log(`quantity ${String(saved.state.quantity)} at version ${saved.version}`);
