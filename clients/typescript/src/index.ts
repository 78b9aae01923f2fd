export { BotStateClient } from "./client.js";
export { ChangeFeed } from "./changes.js";
export { StateHandle, type Mutation, type SaveOptions } from "./state-handle.js";
export * from "./errors.js";
export type * from "./types.js";
